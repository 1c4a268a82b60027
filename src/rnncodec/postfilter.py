"""Per-image adaptive filter: a 5×5 colour filter fitted by the encoder and sent in the file.

The networks' reconstruction is a little soft; a linear filter that mixes each output channel
from a 5×5 window of all three input channels, fitted to this one image (as video codecs fit
their adaptive loop filters), sharpens it back. The encoder knows the original, so it fits the
filter for the metric the model is tuned for (for MS-SSIM, least squares first, then L-BFGS on
1 − MS-SSIM; for PSNR, least squares alone), rounds it to 225 one-byte weights and 3 one-byte
offsets where the squared error grows least, and keeps it only when it is worth its bytes
(``worth``).
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
from .metrics import MS_SSIM_MIN_SIDE, ms_ssim, ms_ssim_db, ms_ssim_tensor, psnr

KERNEL = 5
MAX_SHIFT = 12  # weights in steps of 2⁻ˢ, s the largest ≤ 12 that keeps them in int8: the
# finest step the weights allow, since coarser steps lose part of the gain
BIAS_STEP = 1 / 8  # offsets in eighths of a level (int8: up to ±15.9)
# The fit, and the judgement whether the filter pays, see at most a centred 768×768 crop (the
# L-BFGS steps' autograd grows with the pixels), and one filter serves a whole photo
FIT_SIDE = 768
# How the filter is fitted, per metric, in the evaluation's cache key (a new fit re-runs it)
FITS = {"ms-ssim": "5×5, least squares then L-BFGS 25 on MS-SSIM, rounded by nearest plane "
                   "and coordinate descent",
        "psnr": "5×5, least squares, rounded by nearest plane and coordinate descent"}
ROUNDING_PASSES = 8  # coordinate-descent sweeps over the weights; it settles in a few
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


def _normal_equations(decoded: Tensor, original: Tensor) -> tuple[Tensor, Tensor]:
    """(Gram matrix, cross products) of the least-squares filter, float64, an offset last:
    summed over strips of rows, so memory stays small. A whisker of ridge keeps flat images
    solvable."""
    pad = KERNEL // 2
    padded = F.pad(decoded, (pad,) * 4, mode="replicate").double()
    n = 3 * KERNEL * KERNEL + 1  # unknowns per output channel: 3 input windows and an offset
    gram = torch.zeros(n, n, dtype=torch.float64)
    cross = torch.zeros(n, 3, dtype=torch.float64)
    for top in range(0, decoded.shape[2], STRIP):
        rows = min(STRIP, decoded.shape[2] - top)
        cols = F.unfold(padded[:, :, top:top + rows + 2 * pad], KERNEL)[0]  # windows × pixels
        y = original[0, :, top:top + rows].reshape(3, -1).double()
        sums = cols.sum(1)  # the offset's row and column, without a column of ones to copy
        gram[:-1, :-1] += cols @ cols.T
        gram[:-1, -1] += sums
        gram[-1, :-1] += sums
        gram[-1, -1] += cols.shape[1]
        cross[:-1] += cols @ y.T
        cross[-1] += y.sum(1)
    return gram + 1e-9 * gram.diagonal().mean() * torch.eye(n, dtype=torch.float64), cross


def _unpack(solution: Tensor) -> tuple[Tensor, Tensor]:
    """(3×3×k×k weights, 3 offsets) from the normal equations' (76 × 3) unknowns."""
    return solution[:-1].T.reshape(3, 3, KERNEL, KERNEL).float(), solution[-1].float()


def _round(gram: Tensor, solution: Tensor) -> Filter:
    """The filter of the unknowns ``solution`` in int8, rounded where the squared error over the
    fitted pixels grows least rather than each unknown to its nearest step: Babai's nearest
    plane (each unknown rounded in turn, the error it leaves carried into those not yet rounded
    along the Cholesky factor of the Gram matrix, as GPTQ rounds network weights), then
    coordinate descent, which only lowers the error. The neighbouring pixels a filter reads
    are nearly alike, so rounding each weight alone can lose all the filter gains."""
    shift = _shift(_unpack(solution)[0])
    steps = torch.full((len(gram), 1), 2.0 ** -shift, dtype=torch.float64)
    steps[-1] = BIAS_STEP
    # the error is ‖U (x − solution)‖², G = UᵀU; in units of steps: U·diag(steps)
    u = torch.linalg.cholesky(gram).T * steps.T
    target = solution / steps
    q = torch.empty_like(target)
    for i in reversed(range(len(gram))):
        carried = (u[i, i + 1:, None] * (q[i + 1:] - target[i + 1:])).sum(0) / u[i, i]
        q[i] = torch.round(target[i] - carried).clamp(-127, 127)
    g = u.T @ u  # the Gram matrix in steps
    c = g @ target
    for _ in range(ROUNDING_PASSES):
        before = q.clone()
        for i in range(len(g)):
            q[i] = torch.round((c[i] - g[i] @ q + g[i, i] * q[i]) / g[i, i]).clamp(-127, 127)
        if torch.equal(q, before):
            break
    qi = q.to(torch.int8).numpy()
    return Filter(qi[:-1].T.reshape(3, 3, KERNEL, KERNEL).copy(), qi[-1].copy(), shift)


def _crop(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = max(0, (h - FIT_SIDE) // 2), max(0, (w - FIT_SIDE) // 2)
    return rgb[top:top + FIT_SIDE, left:left + FIT_SIDE]


def _shift(w: Tensor) -> int:
    """The finest weight step 2⁻ˢ that holds the largest of ``w`` in int8."""
    top = float(w.abs().max())
    return MAX_SHIFT if top == 0 else max(0, min(MAX_SHIFT, math.floor(math.log2(127 / top))))


def quantize(w: Tensor, b: Tensor) -> Filter:
    """The filter in int8, each value rounded to its nearest step: weights in the finest steps
    that hold the largest, offsets in eighths (``fit`` rounds its filters with ``_round``)."""
    shift = _shift(w)
    qw = torch.round(w * 2.0 ** shift).clamp(-127, 127).to(torch.int8).numpy()
    qb = torch.round(b / BIAS_STEP).clamp(-127, 127).to(torch.int8).numpy()
    return Filter(qw, qb, shift)


def fit(original: np.ndarray, decoded: np.ndarray, metric: str = "ms-ssim") -> Filter:
    """The filter that brings ``decoded`` closest to ``original`` (H×W×3 uint8) in ``metric``
    (``FITS``)."""
    if metric not in FITS:
        raise ValueError(f"no filter fit for {metric!r}; choose one of {', '.join(FITS)}")
    o, d = _levels(_crop(original)), _levels(_crop(decoded))
    gram, cross = _normal_equations(d, o)
    solution = torch.linalg.solve(gram, cross)  # unlike lstsq here, deterministic
    if metric == "ms-ssim":
        solution = _towards_ms_ssim(d, o, solution)
    return _round(gram, solution)


def _towards_ms_ssim(decoded: Tensor, original: Tensor, solution: Tensor) -> Tensor:
    """The normal equations' unknowns moved by L-BFGS to where 1 − MS-SSIM is least."""
    with torch.enable_grad():
        w, b = (t.requires_grad_(True) for t in _unpack(solution))
        opt = torch.optim.LBFGS([w, b], max_iter=FIT_ITERATIONS, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            # scaled: L-BFGS's tolerances suit a loss of order 1, not 1 − MS-SSIM's 0.01
            out = _conv(decoded, w, b).clamp(0, 255)
            loss = 1000 * (1 - ms_ssim_tensor(out, original, 255).mean())
            loss.backward()
            return loss

        opt.step(closure)
    return torch.cat([w.detach().reshape(3, -1).T, b.detach()[None]]).double()


def quality_db(original: np.ndarray, decoded: np.ndarray, metric: str) -> float:
    """The decoded image's quality in dB (MS-SSIM in dB, or PSNR) on the crop ``fit`` sees:
    the whole image up to ``FIT_SIDE`` on each side, so judging a filter costs no more memory
    or time on a large photo than on a small one."""
    original, decoded = _crop(original), _crop(decoded)
    return psnr(original, decoded) if metric == "psnr" else ms_ssim_db(ms_ssim(original, decoded))


def gain_db(f: Filter, original: np.ndarray, decoded: np.ndarray,
            metric: str = "ms-ssim") -> tuple[float, float]:
    """(the filter's gain in dB, the quality in dB before it), as ``quality_db`` measures."""
    original, decoded = _crop(original), _crop(decoded)
    before = quality_db(original, decoded, metric)
    return quality_db(original, apply(f, decoded), metric) - before, before


def worth(gain: float, cost_bpp: float, bar: float) -> bool:
    """Whether a filter pays: its gain per bit (dB per bpp) at least ``bar``, what the codes
    give per bit (``bar_for``)."""
    return gain > 0 and math.isfinite(bar) and gain / cost_bpp >= bar


def bar_for(metric: str, quality: float, bpp: float, previous: float | None,
            last_bpp: float) -> float:
    """The gain per bit a filter must match (dB per bpp): for MS-SSIM, the image's MS-SSIM in dB
    over its bpp, the codes' average so far (a curve that flattens gains less at the margin, so
    a filter that passes lifts it); for PSNR, whose zero-rate level is far from 0 dB, what the
    last iteration gave: the PSNR it added (``previous`` the PSNR before it, the decoder's grey
    before the first) over its ``last_bpp``."""
    if metric == "psnr":
        if previous is None:
            raise ValueError("a PSNR filter's bar needs the PSNR before the last iteration")
        return (quality - previous) / last_bpp
    return quality / bpp
