"""Defaults and limits shared by the command line, the file format and the codec, in a module
that imports nothing: ``rnncodec --help`` shows them without loading the networks, and
format.py checks a header against them without importing the tiling code."""

from __future__ import annotations

DEFAULT_ITERATIONS = 16  # iterations compress stores unless told (2 bpp before entropy coding)
MAX_ITERATIONS = 64  # the most a file may hold (format.py) and compress may be asked for
MAX_PIXELS = 64_000_000  # larger images and files are refused, like Pillow's bomb guard

# Tiles (tiling.py): their sides in pixels, whole blocks of the networks' 16×16
BLOCK = 16
MIN_TILE = 64
MAX_TILE = 0xFFF0  # the largest multiple of 16 in the header's 16-bit field
DEFAULT_TILE = 512
# The most pixels, in whole blocks, the networks run over in one region: an untiled image, or
# one tile with its context. Their memory grows with it, so the encoder never writes a file
# that needs more and the decoder refuses one that does.
MAX_REGION_PIXELS = 1 << 21
AUTO_TILE_PIXELS = MAX_REGION_PIXELS  # tile=None tiles every image that could not run whole
SEARCH_TILE_PIXELS = 1 << 19  # ... and with the bit search, which needs far more (refine.py)

# A block's value in a code map once adaptive coding stopped it (format version 4): it has no
# code in that iteration, and the decoder reads 0 for its bits, halfway between −1 and +1.
STOPPED = 2
