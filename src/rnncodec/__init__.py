"""rnncodec: learned progressive image compression with recurrent networks (Toderici et al. 2017).

>>> import rnncodec
>>> data = rnncodec.compress("photo.png", bpp=0.5)      # doctest: +SKIP
>>> image = rnncodec.decompress(data)                     # doctest: +SKIP
"""

from .codec import compress, decode_iterations, decompress, info, truncate
from .errors import FormatError, ImageError, InputMissingError, ModelError, OutputError, RnncError
from .zoo import DEFAULT_MODEL, MODELS, load_model

__all__ = [
    "compress", "decompress", "decode_iterations", "truncate", "info", "load_model",
    "MODELS", "DEFAULT_MODEL", "RnncError", "FormatError", "ImageError", "ModelError",
    "InputMissingError", "OutputError",
]
__version__ = "0.1.0"
