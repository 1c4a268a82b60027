"""Image quality metrics on 8-bit arrays, as used for rate control and evaluation."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim

MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window need more than (11 - 1) · 2⁴ pixels
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601 Y' in full range, as JPEG/JFIF computes it
HVS_BLOCK = 8  # PSNR-HVS works on 8×8 DCT blocks


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all channels (peak 255); identical images give +inf."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _nchw(a: np.ndarray) -> torch.Tensor:
    """1×C×H×W float32, contiguous: the grouped convolutions run much faster than on a float64
    view, and float32 is ample precision for a score in [0, 1]."""
    t = torch.from_numpy(np.array(a, dtype=np.float32))  # a copy: PIL arrays are read-only
    return (t.unsqueeze(-1) if t.ndim == 2 else t).permute(2, 0, 1).unsqueeze(0).contiguous()


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (data range 255) of H×W or H×W×C uint8 images, channels averaged.

    Images too small for five scales fall back to single-scale SSIM with the largest odd
    window (≤ 11) that fits, so every image size gets a score in [0, 1]; identical images give 1.
    """
    if min(a.shape[0], a.shape[1]) < 3:
        return 1.0 if np.array_equal(a, b) else max(0.0, 1 - float(np.mean(
            np.abs(a.astype(np.float64) - b.astype(np.float64)))) / 255)
    return float(ms_ssim_tensor(_nchw(a), _nchw(b), 255).mean())


def ms_ssim_tensor(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """MS-SSIM of each image in two N×C×H×W batches (sides ≥ 3), with ``ms_ssim``'s fallback
    to single-scale SSIM for images under 161 px; training validation uses it on the device."""
    side = min(x.shape[-2:])
    if side >= MS_SSIM_MIN_SIDE:
        return _ms_ssim(x, y, data_range=data_range, size_average=False)
    win = min(11, side if side % 2 else side - 1)
    return _ssim(x, y, data_range=data_range, size_average=False, win_size=win)


def luma(a: np.ndarray) -> np.ndarray:
    """BT.601 luma Y' (full range, rounded to uint8) of an H×W×3 image; H×W images pass through.

    The paper reports PSNR-HVS on luma; one fixed rule here keeps every codec scored alike.
    """
    if a.ndim == 2:
        return a
    y = a[..., :3].astype(np.float64) @ np.array(LUMA_WEIGHTS)
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def psnr_hvs(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR-HVS (Egiazarian et al. 2006) in dB of the luma, peak 1; identical images give +inf.

    Computed with the ``psnr-hvsm`` package on 8×8 blocks; rows and columns past the last whole
    block are left out, as in the authors' reference code. NaN for images smaller than a block.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # its import prints a note about torch
        from psnr_hvsm.numpy import hvs_hvsm_mse

    h, w = (side // HVS_BLOCK * HVS_BLOCK for side in a.shape[:2])
    if h == 0 or w == 0:
        return math.nan
    x, y = (luma(v)[:h, :w].astype(np.float64) / 255 for v in (a, b))
    with np.errstate(invalid="ignore", divide="ignore"):  # flat blocks: it divides by 0, then
        mse = float(hvs_hvsm_mse(x, y)[0])                # discards those values itself
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a decibel scale, −10·log10(1 − MS-SSIM), which spreads out the high end."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)
