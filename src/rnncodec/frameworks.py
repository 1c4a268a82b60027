"""Reconstruction frameworks and the model that ties encoder, binarizer and decoder together.

Iteration t encodes the residual r[t-1] = x - x̂[t-1] (r[0] = x) into 32 bits per 16×16 block,
and the decoder turns those bits into the next reconstruction x̂[t]:

- ``one-shot``:         x̂[t] = D(b[t])                     (the decoder predicts the image)
- ``additive``:         x̂[t] = x̂[t-1] + D(b[t])            (the decoder predicts the residual)
- ``residual-scaling``: x̂[t] = x̂[t-1] + D(b[t]) / g[t],    the encoder sees r[t-1] · g[t], with
  the gain g[t] = G(x̂[t-1]) estimated from the reconstruction so far (Toderici et al. 2017, §3.2).

Images live in [-0.5, 0.5] (pixel / 255 - 0.5); x̂[0] = 0 is mid grey.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

import torch
from pytorch_msssim import ms_ssim as pytorch_ms_ssim
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (the usual name)

from .adaptive import mask_bits
from .cells import CELLS, State
from .metrics import LUMA_WEIGHTS
from .networks import Binarizer, Decoder, Encoder, GainEstimator
from .registry import FRAMEWORKS, ModelConfig  # noqa: F401 (defined torch-free, used from here)

# (image, reconstruction, blocks active so far or None) → blocks active from the next iteration
Stops = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


@dataclass(frozen=True)
class CodingState:
    """What both sides carry from one iteration to the next."""

    recon: Tensor
    enc: list[State | None] = field(default_factory=lambda: [None] * 3)
    dec: list[State | None] = field(default_factory=lambda: [None] * 4)
    iteration: int = 0  # iterations decoded so far


class RNNCompressor(nn.Module):
    """Encoder + binarizer + decoder (+ gain estimator) under one reconstruction framework."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.cell, config.width, config.coarse)
        self.binarizer = Binarizer(self.encoder.out_channels)
        self.decoder = Decoder(config.cell, config.width, config.coarse)
        # the late iterations' own networks (ModelConfig.late_from)
        self.late = nn.ModuleDict({
            "encoder": Encoder(config.cell, config.width, config.coarse),
            "binarizer": Binarizer(self.encoder.out_channels),
            "decoder": Decoder(config.cell, config.width, config.coarse),
        }) if config.late_from else None
        # a primed model scales the decoder's state after its priming steps by these per-channel
        # gates, zero at first: priming added to trained weights starts from what they do
        hidden = [int(rnn.hidden) for rnn in self.decoder.rnns]  # type: ignore[arg-type]
        self.prime_gates = nn.ParameterList(
            nn.Parameter(torch.zeros(1, h, 1, 1)) for h in hidden) if config.prime else None
        self.gain = GainEstimator() if config.framework == "residual-scaling" else None

    @staticmethod
    def initial_state(image: Tensor) -> CodingState:
        """Contiguous whatever the image's layout (the encoder's is a permuted view): a
        reconstruction in another layout is summed in another order, and the encoder's pixels
        came out one level off the decoder's at a few places."""
        return CodingState(recon=torch.zeros(image.shape, dtype=image.dtype, device=image.device))

    def _gain(self, state: CodingState) -> Tensor | None:
        return self.gain(state.recon) if self.gain is not None else None

    def networks(self, state: CodingState) -> tuple[Encoder, Binarizer, Decoder]:
        """The encoder, binarizer and decoder that code the iteration after ``state``."""
        if self.late is not None and state.iteration + 1 >= self.config.late_from:
            late = self.late
            return (cast(Encoder, late["encoder"]), cast(Binarizer, late["binarizer"]),
                    cast(Decoder, late["decoder"]))
        return self.encoder, self.binarizer, self.decoder

    def _encode(self, image: Tensor, state: CodingState) -> tuple[Tensor, CodingState]:
        residual = image - state.recon
        g = self._gain(state)
        if g is not None:
            residual = residual * g
        features, enc = self.networks(state)[0](residual, state.enc)
        return features, replace(state, enc=enc)

    def encode_step(self, image: Tensor, state: CodingState,
                    stochastic: bool | None = None) -> tuple[Tensor, CodingState]:
        """Bits for the current residual; ``image`` is N×3×H×W in [-0.5, 0.5], H, W % 16 == 0."""
        features, state = self._encode(image, state)
        return self.networks(state)[1](features, stochastic), state

    def encode_soft(self, image: Tensor, state: CodingState) -> tuple[Tensor, CodingState]:
        """``encode_step``'s binarizer input in [-1, 1]: its signs are the inference bits."""
        features, state = self._encode(image, state)
        return self.networks(state)[1].soft(features), state

    def decode_step(self, bits: Tensor, state: CodingState) -> CodingState:
        """The next reconstruction from this iteration's bits (N×32×H/16×W/16 in {-1, +1}).
        A primed model first runs ``config.prime`` decoder steps on the first iteration's bits,
        keeping only their hidden state, scaled per channel by ``prime_gates``."""
        dec = state.dec
        if self.prime_gates is not None and dec[0] is None:  # the first iteration
            for _ in range(self.config.prime):
                _, dec = self.decoder(bits, dec)
            dec = [None if s is None else tuple(t * g for t in s)
                   for s, g in zip(dec, self.prime_gates, strict=True)]
        out, dec = self.networks(state)[2](bits, dec)
        if self.config.framework == "one-shot":
            recon = out * 0.5
        else:
            g = self._gain(state)
            recon = state.recon + (out if g is None else out / g)
        return replace(state, recon=recon, dec=dec, iteration=state.iteration + 1)

    def forward(self, image: Tensor, iterations: int, stochastic: bool | None = None,
                stops: Stops | None = None, codes: list[Tensor] | None = None) -> list[Tensor]:
        """Reconstructions after each iteration (training path; stochastic bits in train mode
        unless ``stochastic`` says otherwise). With ``stops``, blocks stop as an adaptive
        encoder stops them: after each iteration ``stops(image, recon, active)`` gives the
        blocks still active (N×1×H/16×W/16 bool, None: all), and the decoder reads zeros for
        the others' bits (adaptive.py). Each iteration's bits as the decoder reads them are
        appended to ``codes`` when it is given (training's rate term reads them)."""
        state = self.initial_state(image)
        recons = []
        active = None
        for _ in range(iterations):
            bits, state = self.encode_step(image, state, stochastic)
            bits = mask_bits(bits, active)
            if codes is not None:
                codes.append(bits)
            state = self.decode_step(bits, state)
            recons.append(state.recon)
            if stops is not None:
                active = stops(image, state.recon.detach(), active)
        return recons


@torch.no_grad()
def grow(src: RNNCompressor, dst: RNNCompressor) -> None:
    """Copy a model into a wider one (``width`` or ``coarse`` larger) of the same cell and
    framework so that ``dst`` computes what ``src`` does (Net2Net's idea, Chen et al. 2016): a
    wide run then starts from trained weights instead of from scratch, which a short GPU lease
    cannot make up for.

    Every old channel keeps its place (each gate block of a cell's convolutions in turn; the
    depth-to-space groups of 4 channels stay in front), old outputs read nothing from new
    inputs, and new channels keep ``dst``'s fresh initialisation; they start to matter once
    training moves their zero outgoing weights; new late networks start as copies of the
    others. Only cells whose gates are whole blocks of the hidden size can grow (not the
    associative LSTM, whose memory is in complex halves).
    """
    a, b = src.config, dst.config
    if (replace(a, width=b.width, prime=b.prime, coarse=b.coarse, late_from=b.late_from) != b
            or a.width > b.width or a.width * a.coarse > b.width * b.coarse
            or a.late_from not in (0, b.late_from)):
        raise ValueError(f"cannot grow a {a} into a {b}: only the widths may grow (and the "
                         "priming change, or late networks be added)")
    gates = CELLS[a.cell].gate_factor
    if gates != int(gates):
        raise ValueError(f"a {a.cell} cell cannot grow (its gates are not whole channel blocks)")
    new = dst.state_dict()
    for key, old in src.state_dict().items():
        out = new[key].clone()
        old = old.to(out.device)  # the source may sit on another device
        blocks = int(gates) if ".conv_x." in key or ".conv_h." in key else 1
        h_old, h_new = old.shape[0] // blocks, out.shape[0] // blocks
        rows = torch.tensor([q * h_new + j for q in range(blocks) for j in range(h_old)])
        if old.dim() > 1:  # a convolution's weight: old rows read the old inputs alone
            part = torch.zeros_like(out[rows])
            part[:, : old.shape[1]] = old
            out[rows] = part
        else:
            out[rows] = old
        new[key] = out
        if dst.late is not None and src.late is None and key.split(".")[0] in dst.late:
            new[f"late.{key}"] = out.clone()  # new late networks start as the early ones
    dst.load_state_dict(new)


def residual_loss(image: Tensor, recons: list[Tensor]) -> Tensor:
    """The paper's objective: the mean L1 norm of every iteration's residual."""
    return torch.stack([(image - r).abs().mean() for r in recons]).mean()


def _ms_ssim(image: Tensor, recons: list[Tensor], each: bool = False) -> Tensor:
    """MS-SSIM of the reconstructions (images in [-0.5, 0.5]): their mean, or with ``each``
    every one's (T·N values, iteration-major). Patches under 161 px get the largest odd window
    (≤ 11) that four halvings allow."""
    side = min(image.shape[-2:])
    win = min(11, (side - 1) // 16 + 1)
    win -= 1 - win % 2
    t = len(recons)
    x = torch.cat(recons) + 0.5
    y = (image + 0.5).repeat(t, 1, 1, 1)
    return pytorch_ms_ssim(x, y, data_range=1.0, win_size=win, size_average=not each)


def ms_ssim_loss(image: Tensor, recons: list[Tensor]) -> Tensor:
    """Mean over iterations of 1 − MS-SSIM, the metric the codec is judged by."""
    return 1 - _ms_ssim(image, recons)


def psnr_db_loss(image: Tensor, recons: list[Tensor]) -> Tensor:
    """Mean over images and iterations of −PSNR in dB (peak 1).

    In dB every iteration counts alike: an L1 or L2 mean is dominated by the first iterations'
    large residuals, so the late ones, whose residuals are small, learn little.
    """
    mse = torch.stack([((image - r) ** 2).flatten(1).mean(1) for r in recons])
    return 10 * torch.log10(mse.clamp_min(1e-10)).mean()


@functools.cache
def _hvs_filters() -> Tensor:
    """The 8×8 orthonormal DCT basis as 64 convolution filters (float64), each scaled by its
    weight in PSNR-HVS's contrast sensitivity table (taken from ``psnr_hvsm``, which scores
    it); built once, not on every training step."""
    with contextlib.redirect_stdout(io.StringIO()):  # its import prints a note about torch
        from psnr_hvsm.numpy.psnr_hvsm import CSF_COEFF

    k = torch.arange(8, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * k[None] + 1) * k[:, None] / 16)  # [frequency, position]
    basis[0] /= math.sqrt(2)
    basis *= math.sqrt(2 / 8)
    filters = basis[:, None, :, None] * basis[None, :, None, :]  # [u, v, y, x]
    csf = torch.as_tensor(CSF_COEFF, dtype=torch.float64).reshape(8, 8, 1, 1)
    return (filters * csf).reshape(64, 1, 8, 8)


def psnr_hvs_db_loss(image: Tensor, recons: list[Tensor]) -> Tensor:
    """Mean over images and iterations of −PSNR-HVS in dB (peak 1), as ``metrics.psnr_hvs``
    scores it: the luma error's 8×8 DCT coefficients weighted by contrast sensitivity, which
    counts low-frequency luma errors most; PSNR counts every pixel and channel alike."""
    weights = torch.tensor(LUMA_WEIGHTS).to(image).view(1, 3, 1, 1)
    h, w = (side // 8 * 8 for side in image.shape[-2:])
    errors = torch.cat([((image - r) * weights).sum(1, keepdim=True) for r in recons])
    coefficients = F.conv2d(errors[..., :h, :w], _hvs_filters().to(image), stride=8)
    mse = coefficients.square().flatten(1).mean(1)  # per image and iteration
    return 10 * torch.log10(mse.clamp_min(1e-10)).mean()


def ms_ssim_db_loss(image: Tensor, recons: list[Tensor]) -> Tensor:
    """Mean over images and iterations of −MS-SSIM in dB, i.e. 10·log10(1 − MS-SSIM)."""
    return 10 * torch.log10((1 - _ms_ssim(image, recons, each=True)).clamp_min(1e-10)).mean()
