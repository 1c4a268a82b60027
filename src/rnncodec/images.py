"""Image input and output: every source becomes 8-bit RGB by one stated rule, and back.

The rule (also in docs/format.md):
- EXIF orientation is applied first, so the pixels are stored upright.
- Colour modes (RGB, RGBA, P, CMYK, YCbCr, LAB, HSV, ...) are converted to RGB by Pillow; alpha is
  dropped (the codec stores no transparency; an RnncWarning says so when some pixel was not
  opaque). Such images decode to RGB.
- Grayscale modes (1, L, LA, I, I;16, F) become L — 16-bit and 32-bit values are scaled to
  8 bits by their nominal range — and are coded as RGB with three equal channels; they decode to L.
- ICC profiles and other metadata are not kept.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .defaults import MAX_PIXELS
from .errors import ImageError, InputMissingError, RnncWarning
from .files import check_readable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}  # (LAB's A is a colour, not alpha)

ImageSource = Image.Image | np.ndarray | str | Path | bytes


def _check_size(img: Image.Image, max_pixels: int, name: str | None = None) -> None:
    if img.width * img.height > max_pixels:
        where = f" in {name}" if name else ""
        raise ImageError(f"image of {img.width}×{img.height} pixels{where} exceeds the limit of "
                         f"{max_pixels} pixels")


def _bomb_message(name: str, error: Exception, max_pixels: int) -> str:
    """Pillow's decompression-bomb refusal in the codec's words (it checks the declared size
    before ours can, so the image object is never seen)."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow opens"
    limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0)) or max_pixels
    return (f"image of {size} in {name} exceeds the limit of {limit} pixels (refused from its "
            "declared size, as a possible decompression bomb)")


def list_images(root: str | Path) -> list[Path]:
    """Image files anywhere under ``root`` (by suffix), sorted by path."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _open(src: str | Path | bytes, max_pixels: int) -> Image.Image:
    """Open and decode an image file, checking its declared size before decoding any pixels."""
    try:
        if isinstance(src, bytes):
            img = Image.open(io.BytesIO(src))
        else:
            path = Path(src)
            check_readable(path)
            img = Image.open(path)
        try:
            # Image.open reads only the header: nothing allocated yet
            _check_size(img, max_pixels, None if isinstance(src, bytes) else str(src))
        except ImageError:
            img.close()
            raise
        img.load()
        return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, OSError) and not isinstance(src, bytes) and not Path(src).is_file():
            raise InputMissingError(f"cannot read {src}: {e}") from None
        name = "image bytes" if isinstance(src, bytes) else str(src)
        detail = str(e)
        if isinstance(e, UnidentifiedImageError) and isinstance(src, bytes):
            detail = "not an image format Pillow reads"  # Pillow's names a BytesIO object
        raise ImageError(f"cannot decode {name} as an image: {detail}") from None
    except Image.DecompressionBombError as e:
        name = "image bytes" if isinstance(src, bytes) else str(src)
        raise ImageError(_bomb_message(name, e, max_pixels)) from None


def _from_array(a: np.ndarray) -> Image.Image:
    """uint8/uint16/bool/float arrays of shape H×W, H×W×1, H×W×3 or H×W×4."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise ImageError(f"cannot use an array of shape {a.shape} as an image "
                         "(expected H×W, H×W×1, H×W×3 or H×W×4)")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.round(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageError(f"unsupported array dtype {a.dtype} (use uint8, uint16, bool or float)")
    return Image.fromarray(np.ascontiguousarray(a))


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float64)
        scale = 1 / 257 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0
        if img.mode == "I" and a.max(initial=0) > 65535:
            scale = 255 / a.max()
        return Image.fromarray(np.clip(np.round(a * scale), 0, 255).astype(np.uint8), "L")
    if img.mode == "La":  # premultiplied alpha: Pillow converts it to L only through LA
        img = img.convert("LA")
    return img.convert("L")


def load_image(src: ImageSource, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, bool]:
    """Any supported source → (H×W×3 uint8 array, whether the source is grayscale)."""
    img = src if isinstance(src, Image.Image) else (
        _from_array(src) if isinstance(src, np.ndarray) else _open(src, max_pixels))
    _check_size(img, max_pixels)
    with contextlib.suppress(OSError, ValueError, SyntaxError):  # damaged EXIF: pixels as stored
        img = ImageOps.exif_transpose(img)
    gray = img.mode in GRAY_MODES
    if _transparent(img):
        warnings.warn("the image's transparency is dropped: .rnnc stores none, so transparent "
                      "pixels keep their hidden colours", RnncWarning, stacklevel=3)
    try:
        img = _to_8bit_gray(img).convert("RGB") if gray else img.convert("RGB")
    except (ValueError, OSError) as e:  # a mode Pillow cannot convert
        raise ImageError(f"cannot convert an image of mode {img.mode} to RGB: {e}") from None
    return np.asarray(img, dtype=np.uint8), gray


def _below_opaque(alpha: Image.Image) -> bool:
    """Whether a single-band alpha image has any value under 255 (its extrema: min, max)."""
    lowest = alpha.getextrema()[0]
    return isinstance(lowest, int | float) and lowest < 255


def _transparent(img: Image.Image) -> bool:
    """Whether any pixel is less than opaque (an alpha band, or a palette's or colour key's
    transparency)."""
    try:
        if img.mode in ALPHA_MODES:  # the alpha band is the last
            return _below_opaque(img.getchannel(len(img.getbands()) - 1))
        if "transparency" in img.info:
            return _below_opaque(img.convert("RGBA").getchannel("A"))
    except (ValueError, OSError):  # a mode Pillow cannot split: conversion reports it below
        pass
    return False


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → 1×3×H×W float in [-0.5, 0.5], padded by edge replication to multiples of 16."""
    t = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255 - 0.5
    h, w = rgb.shape[:2]
    ph, pw = -h % 16, -w % 16
    return torch.nn.functional.pad(t, (0, pw, 0, ph), mode="replicate") if ph or pw else t


def to_array(t: torch.Tensor, height: int, width: int) -> np.ndarray:
    """1×3×H'×W' in [-0.5, 0.5] → H×W×3 uint8, cropped to the original size."""
    a = ((t[0, :, :height, :width] + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()


def to_image(rgb: np.ndarray, gray: bool) -> Image.Image:
    img = Image.fromarray(rgb, "RGB")
    return img.convert("L") if gray else img
