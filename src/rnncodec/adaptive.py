"""Spatially adaptive bit rates: which 16×16 blocks stop receiving codes.

Every iteration spends 32 bits on every block, flat sky as much as foliage. With adaptive
rates (Johnston et al., CVPR 2018) a block stops once its reconstruction reaches a target
quality; the decoder then gets zeros for its bits, a value halfway between the two codes
(−1, +1) that carries no information. The quality of a block is measured in dB so that one
threshold means the same at every iteration:

- ``ssim``: −10·log10(1 − SSIM), SSIM's map (Gaussian window, σ 1.5, as in MS-SSIM's first
  scale) averaged over the block: MS-SSIM forgives errors in busy texture, and so does this;
- ``psnr``: the block's PSNR (peak 1), for PSNR targets; ``block_psnr`` counts only the
  image's own pixels of blocks that the padding to whole blocks reaches into, as the encoder's
  stopping rule does (a block that stops at T dB then holds T dB of the image itself, so an
  image whose blocks have all stopped has a PSNR of at least T).

Training (``train.py``'s ``stops``) stops blocks by the encoder's rule, a threshold drawn per
image, so that the decoder learns to read zeros wherever an encoder would stop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 16  # pixels per side of the blocks that one position of the code map describes
MEASURES = ("ssim", "psnr")
_C1, _C2 = 0.01**2, 0.03**2  # SSIM's stabilisers for a dynamic range of 1
_WINDOW, _SIGMA = 11, 1.5
# The encoder's block PSNR thresholds (codec.encode, adaptive=True), in dB: without a quality
# or rate target, blocks stop at DEFAULT_STOP_DB, near where the eye stops seeing errors;
# rate and MS-SSIM targets bisect for theirs within SEARCH_STOP_DB in SEARCH_TRIALS encodes,
# and training (train.block_stops) draws its thresholds from it.
DEFAULT_STOP_DB = 40.0
SEARCH_STOP_DB = (20.0, 50.0)
SEARCH_TRIALS = 5


def _gaussian(x: Tensor) -> Tensor:
    """Separable Gaussian blur per channel, edges replicated (the map keeps the image's size)."""
    half = _WINDOW // 2
    g = torch.exp(-((torch.arange(_WINDOW, dtype=x.dtype, device=x.device) - half) ** 2)
                  / (2 * _SIGMA**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (half, half, half, half), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_map(x: Tensor, y: Tensor) -> Tensor:
    """SSIM at each pixel of two N×C×H×W batches with values in [-0.5, 0.5], averaged over
    channels: N×1×H×W."""
    mx, my = _gaussian(x), _gaussian(y)
    sxx = _gaussian(x * x) - mx * mx
    syy = _gaussian(y * y) - my * my
    sxy = _gaussian(x * y) - mx * my
    # the means are shifted by the −0.5 offset of the images: luminance is compared in [0, 1]
    lx, ly = mx + 0.5, my + 0.5
    luminance = (2 * lx * ly + _C1) / (lx * lx + ly * ly + _C1)
    structure = (2 * sxy + _C2) / (sxx + syy + _C2)
    return (luminance * structure).mean(1, keepdim=True)


def block_ssim(image: Tensor, recon: Tensor) -> Tensor:
    """Each block's mean SSIM: N×1×H/16×W/16 for N×3×H×W images whose sides are multiples
    of 16."""
    return F.avg_pool2d(ssim_map(image, recon), BLOCK)


def block_quality(image: Tensor, recon: Tensor, measure: str = "ssim") -> Tensor:
    """Each block's quality in dB (higher is better): N×1×H/16×W/16 for N×3×H×W images in
    [-0.5, 0.5] whose sides are multiples of 16."""
    if measure == "psnr":
        return block_psnr(image, recon, *image.shape[-2:])
    if measure != "ssim":
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}")
    return -10 * torch.log10((1 - block_ssim(image, recon)).clamp_min(1e-10))


def block_psnr(image: Tensor, recon: Tensor, height: int, width: int) -> Tensor:
    """Each block's PSNR in dB (peak 1) over the top-left ``height`` × ``width`` pixels of
    N×3×H×W images padded to whole blocks (the rest is padding), the reconstruction clamped
    to [-0.5, 0.5] as the decoded pixels are: N×1×H/16×W/16."""
    real = torch.zeros_like(image[:, :1])
    real[..., :height, :width] = 1
    error = ((image - recon.clamp(-0.5, 0.5)) ** 2).mean(1, keepdim=True) * real
    mse = F.avg_pool2d(error, BLOCK) / F.avg_pool2d(real, BLOCK)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def still_active(active: Tensor | None, quality: Tensor, threshold: Tensor | float) -> Tensor:
    """Blocks that go on after this iteration: active ones (all, for None) whose quality is
    below ``threshold`` (a number, or one per image: N×1×1×1). A stopped block never restarts:
    the file sends a map of the active blocks only."""
    go_on = quality < threshold
    return go_on if active is None else active & go_on


def mask_bits(bits: Tensor, active: Tensor | None) -> Tensor:
    """This iteration's bits with the stopped blocks' set to 0, as the decoder reads them."""
    return bits if active is None else bits * active.to(bits.dtype)
