"""Defaults and limits that the command line shows in its help, in a module that imports
nothing, so that ``rnncodec --help`` does not load the networks."""

from __future__ import annotations

DEFAULT_ITERATIONS = 16  # iterations compress stores unless told (2 bpp before entropy coding)
MAX_PIXELS = 64_000_000  # larger images and files are refused, like Pillow's bomb guard
