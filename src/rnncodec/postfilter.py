"""Per-image adaptive filter: a 5×5 colour filter fitted by the encoder and sent in the file.

The networks' reconstruction is a little soft; a linear filter that mixes each output channel
from a 5×5 window of all three input channels, fitted to this one image (as video codecs fit
their adaptive loop filters), sharpens it back. The encoder knows the original, so it fits the
filter for MS-SSIM (least squares first, then L-BFGS on 1 − MS-SSIM), quantizes it to 225
one-byte weights and 3 one-byte offsets, and keeps it only when it is worth its bytes (``worth``).
The filter applies to the image after the file's last iteration only: a file cut shorter, or
decoded with fewer iterations, shows the networks' image unfiltered.

The window, the fit and the weights' step were chosen on held-out training photos, never on
the evaluation images (docs/training-log.md, "Per-image filter").
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import FormatError
from .metrics import MS_SSIM_MIN_SIDE, ms_ssim, ms_ssim_db, ms_ssim_tensor

KERNEL = 5
MAX_SHIFT = 12  # weights in steps of 2⁻ˢ, s the largest ≤ 12 that keeps them in int8: the
# finest step the weights allow, since coarser steps lose part of the gain
BIAS_STEP = 1 / 8  # offsets in eighths of a level (int8: up to ±15.9)
# The fit, and the judgement whether the filter pays, see at most a centred 768×768 crop (the
# L-BFGS steps' autograd grows with the pixels), and one filter serves a whole photo
FIT_SIDE = 768
# How the filter is fitted, in the evaluation's cache key (a new fit re-runs it)
FIT = "5×5, least squares then L-BFGS 25 on MS-SSIM"
FIT_ITERATIONS = 25  # L-BFGS iterations: as close a fit as many more Adam steps, in less time
STRIP = 256  # rows filtered at once when decoding, so memory stays a few bytes per pixel
_HEAD = struct.Struct(">BB")  # kernel side, weight shift
# Smaller images get no filter: MS-SSIM falls back to one scale there, and a fit for that alone
# sharpens too much (SSIM up, PSNR well down)
MIN_SIDE = MS_SSIM_MIN_SIDE


def applies(width: int, height: int) -> bool:
    """Whether an image of this size is ever filtered (see ``MIN_SIDE``)."""
    return min(width, height) >= MIN_SIDE


@dataclass(frozen=True)
class Filter:
    """Quantized filter: ``weights`` int8 of 3 (out) × 3 (in) × k × k, ``bias`` int8 of 3."""

    weights: np.ndarray
    bias: np.ndarray
    shift: int

    def pack(self) -> bytes:
        return (_HEAD.pack(self.weights.shape[-1], self.shift)
                + self.weights.astype(np.int8).tobytes() + self.bias.astype(np.int8).tobytes())

    @classmethod
    def unpack(cls, payload: bytes) -> Filter:
        if len(payload) < _HEAD.size:
            raise FormatError("filter chunk too short")
        k, shift = _HEAD.unpack_from(payload)
        if k % 2 == 0 or not 1 <= k <= 15 or shift > 15:
            raise FormatError(f"bad filter: kernel {k}, weight shift {shift}")
        n = 9 * k * k
        if len(payload) != _HEAD.size + n + 3:
            raise FormatError(f"filter chunk holds {len(payload)} bytes, not {_HEAD.size + n + 3}")
        values = np.frombuffer(payload, np.int8, offset=_HEAD.size)
        return cls(values[:n].reshape(3, 3, k, k), values[n:], shift)

    def tensors(self) -> tuple[Tensor, Tensor]:
        w = torch.from_numpy(self.weights.astype(np.float32)) * 2.0 ** -self.shift
        return w, torch.from_numpy(self.bias.astype(np.float32)) * BIAS_STEP


def _conv(image: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """1×3×H×W float levels through the filter, borders replicated."""
    pad = w.shape[-1] // 2
    return F.conv2d(F.pad(image, (pad,) * 4, mode="replicate"), w) + b.view(1, 3, 1, 1)


def _levels(rgb: np.ndarray) -> Tensor:
    return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)


def apply(f: Filter, rgb: np.ndarray) -> np.ndarray:
    """The filtered H×W×3 uint8 image: the filter on float levels, rounded and clamped, in strips
    of rows (each with the rows its window reaches), so memory does not grow with the image."""
    w, b = f.tensors()
    pad = w.shape[-1] // 2
    out = np.empty_like(rgb)
    height = rgb.shape[0]
    with torch.inference_mode():
        for top in range(0, height, STRIP):
            lo, hi = max(0, top - pad), min(height, top + STRIP + pad)
            y = _conv(_levels(rgb[lo:hi]), w, b)[0, :, top - lo:top - lo + min(STRIP, height - top)]
            out[top:top + STRIP] = y.round().clamp(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    return out


def _least_squares(decoded: Tensor, original: Tensor) -> tuple[Tensor, Tensor]:
    """The filter of least squared error, the starting point of the MS-SSIM fit: normal
    equations summed over strips of rows in float64, so memory stays small."""
    pad = KERNEL // 2
    padded = F.pad(decoded, (pad,) * 4, mode="replicate")
    n = 3 * KERNEL * KERNEL + 1  # unknowns per output channel: 3 input windows and an offset
    gram = torch.zeros(n, n, dtype=torch.float64)
    cross = torch.zeros(n, 3, dtype=torch.float64)
    for top in range(0, decoded.shape[2], STRIP):
        rows = min(STRIP, decoded.shape[2] - top)
        cols = F.unfold(padded[:, :, top:top + rows + 2 * pad], KERNEL)[0].T.double()
        a = torch.cat([cols, torch.ones(cols.shape[0], 1, dtype=torch.float64)], 1)
        gram += a.T @ a
        cross += a.T @ original[0, :, top:top + rows].reshape(3, -1).T.double()
    # a whisker of ridge keeps flat images solvable; solve, unlike lstsq here, is deterministic
    ridge = 1e-9 * gram.diagonal().mean() * torch.eye(n, dtype=torch.float64)
    sol = torch.linalg.solve(gram + ridge, cross)
    return sol[:-1].T.reshape(3, 3, KERNEL, KERNEL).float(), sol[-1].float()


def _crop(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = max(0, (h - FIT_SIDE) // 2), max(0, (w - FIT_SIDE) // 2)
    return rgb[top:top + FIT_SIDE, left:left + FIT_SIDE]


def quantize(w: Tensor, b: Tensor) -> Filter:
    """The filter in int8: weights in the finest steps that hold the largest, offsets in
    eighths."""
    top = float(w.abs().max())
    shift = MAX_SHIFT if top == 0 else max(0, min(MAX_SHIFT, math.floor(math.log2(127 / top))))
    qw = torch.round(w * 2.0 ** shift).clamp(-127, 127).to(torch.int8).numpy()
    qb = torch.round(b / BIAS_STEP).clamp(-127, 127).to(torch.int8).numpy()
    return Filter(qw, qb, shift)


def fit(original: np.ndarray, decoded: np.ndarray) -> Filter:
    """The filter that brings ``decoded`` closest to ``original`` in MS-SSIM (H×W×3 uint8)."""
    o, d = _levels(_crop(original)), _levels(_crop(decoded))
    with torch.enable_grad():
        w, b = (t.requires_grad_(True) for t in _least_squares(d, o))
        opt = torch.optim.LBFGS([w, b], max_iter=FIT_ITERATIONS, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            # scaled: L-BFGS's tolerances suit a loss of order 1, not 1 − MS-SSIM's 0.01
            loss = 1000 * (1 - ms_ssim_tensor(_conv(d, w, b).clamp(0, 255), o, 255).mean())
            loss.backward()
            return loss

        opt.step(closure)
    f = quantize(w.detach(), b.detach())
    # the offsets again, for the quantized weights: rounding them shifts each channel's mean
    qw, _ = f.tensors()
    return quantize(qw, (o - _conv(d, qw, torch.zeros(3))).mean(dim=(0, 2, 3)))


def gain_db(f: Filter, original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(the filter's MS-SSIM gain in dB, MS-SSIM in dB before it) on the crop ``fit`` sees:
    the whole image up to ``FIT_SIDE`` on each side, so judging a filter costs no more
    memory or time on a large photo than on a small one."""
    original, decoded = _crop(original), _crop(decoded)
    before = ms_ssim_db(ms_ssim(original, decoded))
    return ms_ssim_db(ms_ssim(original, apply(f, decoded))) - before, before


def worth(gain: float, cost_bpp: float, quality_db: float, bpp: float) -> bool:
    """Whether a filter pays: its MS-SSIM gain per bit at least the codes' own so far (the
    image's MS-SSIM in dB over its bpp). A rate–distortion curve that flattens gains less per
    bit at the margin than on average, so a filter that passes lifts the curve."""
    return gain > 0 and math.isfinite(quality_db) and gain / cost_bpp >= quality_db / bpp
