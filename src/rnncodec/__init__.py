"""rnncodec: learned progressive image compression with recurrent networks (Toderici et al. 2017).

>>> import rnncodec
>>> data = rnncodec.compress("photo.png", bpp=0.5)      # doctest: +SKIP
>>> image = rnncodec.decompress(data)                     # doctest: +SKIP
"""

from .codec import add_filter, compress, decode_iterations, decompress, encode, info, truncate
from .errors import (
    ArgumentError,
    FormatError,
    ImageError,
    InputMissingError,
    ModelError,
    OutputError,
    RnncError,
    RnncWarning,
)
from .zoo import DEFAULT_MODEL, MODELS, load_model

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ArgumentError",
    "FormatError",
    "ImageError",
    "InputMissingError",
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
