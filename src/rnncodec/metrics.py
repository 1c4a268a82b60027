"""Image quality metrics on 8-bit arrays, as used for rate control and evaluation."""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim

MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window need more than (11 - 1) · 2⁴ pixels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all channels (peak 255); identical images give +inf."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _nchw(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).double()
    return (t.unsqueeze(-1) if t.ndim == 2 else t).permute(2, 0, 1).unsqueeze(0)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (data range 255) of H×W or H×W×C uint8 images, channels averaged.

    Images too small for five scales fall back to single-scale SSIM with the largest odd
    window (≤ 11) that fits, so every image size gets a score in [0, 1]; identical images give 1.
    """
    x, y = _nchw(a), _nchw(b)
    side = min(a.shape[0], a.shape[1])
    if side >= MS_SSIM_MIN_SIDE:
        return float(_ms_ssim(x, y, data_range=255, size_average=True))
    win = min(11, side if side % 2 else side - 1)
    if win < 3:
        return 1.0 if np.array_equal(a, b) else max(0.0, 1 - float(np.mean(
            np.abs(a.astype(np.float64) - b.astype(np.float64)))) / 255)
    return float(_ssim(x, y, data_range=255, size_average=True, win_size=win))
