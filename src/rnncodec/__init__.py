"""rnncodec: learned progressive image compression with recurrent networks (Toderici et al. 2017).

>>> import rnncodec
>>> data = rnncodec.compress("photo.png", bpp=0.5)      # doctest: +SKIP
>>> image = rnncodec.decompress(data)                     # doctest: +SKIP

The functions that run the networks are imported on first use, so that importing the package
(and the ``rnncodec`` command) does not load torch until an image is coded.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import (
    ArgumentError,
    FormatError,
    ImageError,
    InputMissingError,
    MissingExtraError,
    ModelError,
    OutputError,
    RnncError,
    RnncWarning,
)
from .files import info, truncate
from .registry import DEFAULT_MODEL, MODELS

if TYPE_CHECKING:
    from .codec import add_filter, compress, decode_iterations, decompress, encode
    from .zoo import load_model

_ON_FIRST_USE = {"add_filter": "codec", "compress": "codec", "decode_iterations": "codec",
                 "decompress": "codec", "encode": "codec", "load_model": "zoo"}

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ArgumentError",
    "FormatError",
    "ImageError",
    "InputMissingError",
    "MissingExtraError",
    "ModelError",
    "OutputError",
    "RnncError",
    "RnncWarning",
    "add_filter",
    "compress",
    "decode_iterations",
    "decompress",
    "encode",
    "info",
    "load_model",
    "truncate",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """The names that need torch, from their modules when first asked for (PEP 562)."""
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_ON_FIRST_USE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
