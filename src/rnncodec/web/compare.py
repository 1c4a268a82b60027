"""Everything the viewer shows for one image, computed once per upload.

The image is encoded once (at most ``MAX_STEPS`` iterations) and the file decoded once with
``decode_iterations``; each step's reconstruction is kept as PNG beside a JPEG and a WebP file no
larger than the .rnnc file cut after that step, so that moving the slider only fetches bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..codec import Target, compress, decode_iterations, truncate
from ..format import parse
from ..images import load_image, to_image
from ..metrics import ms_ssim, psnr

MAX_STEPS = 16
PEERS = {"jpeg": "JPEG", "webp": "WEBP"}  # the codecs compared at equal size, as Pillow names them


@dataclass(frozen=True)
class Coded:
    """One picture as one codec delivers it at one step."""

    data: bytes  # what the page shows: PNG of the decoded .rnnc step, or the JPEG or WebP file
    size: int  # what a receiver downloads: the .rnnc file cut here, or the JPEG or WebP file
    psnr: float
    ms_ssim: float
    quality: int | None = None  # the JPEG or WebP quality setting

    def summary(self, pixels: int) -> dict[str, float | int | None]:
        return {"bytes": self.size, "bpp": self.size * 8 / pixels,
                "psnr": self.psnr if math.isfinite(self.psnr) else None,  # JSON has no infinity
                "ms_ssim": self.ms_ssim, "quality": self.quality}


@dataclass(frozen=True)
class Step:
    rnnc: Coded
    jpeg: Coded | None  # None where even quality 1 is larger than the .rnnc file
    webp: Coded | None


@dataclass(frozen=True)
class Result:
    width: int
    height: int
    gray: bool
    model: str
    original: bytes  # PNG of the image as the codec saw it (upright, 8-bit)
    rnnc: bytes  # the whole file, cut at the target
    steps: list[Step]

    @property
    def nbytes(self) -> int:
        coded = [c for s in self.steps for c in (s.rnnc, s.jpeg, s.webp) if c is not None]
        return len(self.original) + len(self.rnnc) + sum(len(c.data) for c in coded)

    def file_at(self, step: int) -> bytes:
        return truncate(self.rnnc, iterations=step)

    def summary(self) -> dict[str, object]:
        pixels = self.width * self.height
        steps = [{"iteration": i + 1} | {name: c.summary(pixels) if c else None
                                         for name, c in vars(s).items()}
                 for i, s in enumerate(self.steps)]
        return {"width": self.width, "height": self.height, "mode": "L" if self.gray else "RGB",
                "model": self.model, "steps": steps}


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _measure(reference: np.ndarray, picture: Image.Image) -> tuple[float, float]:
    """(PSNR, MS-SSIM) against the reference, in the reference's mode (WebP decodes L as RGB)."""
    decoded = np.array(picture.convert("L" if reference.ndim == 2 else "RGB"))
    return psnr(reference, decoded), ms_ssim(reference, decoded)


class SizeMatcher:
    """One image in one Pillow format at the quality whose file is closest to, but not above, a
    byte budget. Files are memoised, so fitting 16 budgets costs a few dozen encodes, not 1600."""

    def __init__(self, image: Image.Image, fmt: str, reference: np.ndarray) -> None:
        self._image, self._fmt, self._reference = image, fmt, reference
        self._files: dict[int, bytes] = {}

    def _file(self, quality: int) -> bytes:
        if quality not in self._files:
            buf = io.BytesIO()
            extra = {"optimize": True} if self._fmt == "JPEG" else {}
            self._image.save(buf, format=self._fmt, quality=quality, **extra)
            self._files[quality] = buf.getvalue()
        return self._files[quality]

    def fit(self, budget: int) -> Coded | None:
        lo, hi = 1, 100  # binary search for the highest quality that fits
        if len(self._file(lo)) > budget:
            return None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if len(self._file(mid)) <= budget else (lo, mid - 1)
        # sizes are not strictly monotone in quality: take the largest fitting file of all tried
        size, best = max((len(f), q) for q, f in self._files.items() if len(f) <= budget)
        data = self._file(best)
        return Coded(data, size, *_measure(self._reference, Image.open(io.BytesIO(data))),
                     quality=best)


def _reached(target: Target, coded: Coded) -> bool:
    return ((target.ms_ssim is not None and coded.ms_ssim >= target.ms_ssim)
            or (target.psnr is not None and coded.psnr >= target.psnr))


def _decode(data: bytes, model: str, target: Target, reference: np.ndarray) -> list[Coded]:
    """Each step of the file, stopping at the first that reaches a quality target."""
    sizes = parse(data).size_after
    steps: list[Coded] = []
    for i, frame in enumerate(decode_iterations(data, model=model)):
        steps.append(Coded(_png(frame), sizes(i + 1), *_measure(reference, frame)))
        if _reached(target, steps[-1]):
            break
    return steps


def analyse(image: bytes, target: Target, model: str, max_pixels: int) -> Result:
    """Encode to the target (at most MAX_STEPS iterations), decode every step, and match each
    step's size with JPEG and WebP."""
    rgb, gray = load_image(image, max_pixels)
    original = to_image(rgb, gray)
    reference = np.array(original)
    data = compress(original, iterations=min(target.iterations or MAX_STEPS, MAX_STEPS),
                    model=model)
    if target.bpp is not None:
        data = truncate(data, bpp=target.bpp)
    rnnc = _decode(data, model, target, reference)
    data = truncate(data, iterations=len(rnnc))
    peers = {name: SizeMatcher(original, fmt, reference) for name, fmt in PEERS.items()}
    steps = [Step(r, **{name: m.fit(r.size) for name, m in peers.items()}) for r in rnnc]
    return Result(original.width, original.height, gray, parse(data).header.model,
                  _png(original), data, steps)
