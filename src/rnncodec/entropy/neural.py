"""Coder 2: a learned context model over the binary codes (after Toderici et al. 2017, §4 and
Johnston et al. 2018) driving constriction's range coder, with integer-exact inference.

Where this departs from the published BinaryRNN and why:
- Order. The published model is raster-causal per bit (a 7×7 masked convolution and a row LSTM),
  which is one network step per row or per bit: too slow on a CPU. Here each iteration's
  32 × h × w codes are sent in 8 steps: 4 groups of 8 channels, each in two checkerboard phases.
  Every step sees all bits of earlier groups and, in its second phase, the four spatial
  neighbours of every bit of its own group; one network evaluation serves a whole step.
- Memory of earlier iterations. Instead of a conv-LSTM state, the network sees the previous
  iteration's codes, the running sum of all earlier codes and the iteration index: exact
  integers that both sides compute without floating point.
- Exactness. A floating-point network can round differently on another thread count or device,
  and one flipped probability desyncs the arithmetic decoder. This network is quantized after
  training: int8 weights, 8-bit activations, integer biases and fixed-point rescaling; every
  product and sum is an integer far below 2⁵³, so computing it with float64 matrix products is
  exact in any reduction order. Probabilities come from a 12-bit lookup table shipped with it.
A CRC-32 of the decoded codes ends each payload, so any desync is reported, never hidden.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..defaults import STOPPED
from . import NEURAL_PREFIX as PREFIX
from .rangecoding import ONE, BitReader, encode_bits

CHANNELS, GROUPS, PHASES = 32, 4, 2
STEPS = GROUPS * PHASES
IN_CHANNELS = 3 * CHANNELS + 2  # previous codes, running sum, known current codes, t, parity
HIDDEN = 48
MAX_T = 15
LOGIT_STEPS = 8  # output logits are quantized to 1/8
LOGIT_MAX = 12 * LOGIT_STEPS
SHIFT = 16  # fixed-point bits of the rescaling multipliers


def parity(h: int, w: int) -> Tensor:
    return ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2).float()


def step_mask(step: int, h: int, w: int) -> tuple[Tensor, Tensor]:
    """(known, coded) boolean masks of shape 32×h×w for one of the 8 steps of an iteration."""
    group, phase = divmod(step, PHASES)
    ch = torch.arange(CHANNELS)[:, None, None] // (CHANNELS // GROUPS)
    par = parity(h, w).bool()[None]
    own = ch == group
    known = (ch < group) | (own & ~par & (phase == 1))
    coded = own & (~par if phase == 0 else par)
    return known.expand(CHANNELS, h, w), coded.expand(CHANNELS, h, w)


def history_inputs(previous: list[Tensor], h: int, w: int,
                   device: torch.device | None = None) -> Tensor:
    """The 66 input planes known before an iteration: previous codes, running sum, t, parity.

    Codes are ±1 tensors; an empty history gives zeros (on ``device``).
    """
    t = min(len(previous), MAX_T)
    zeros = torch.zeros(CHANNELS, h, w, device=device)
    prev = previous[-1] if previous else zeros
    acc = torch.stack(previous).sum(0).clamp(-16, 16) if previous else zeros
    return torch.cat([prev, acc, torch.full((1, h, w), float(t), device=prev.device),
                      parity(h, w).to(prev.device)[None]])


def step_inputs(history: Tensor, codes: Tensor, known: Tensor) -> Tensor:
    """All 98 input planes for one step: history planes plus the current codes already known."""
    return torch.cat([history[:2 * CHANNELS], codes * known, history[2 * CHANNELS:]])


class ContextNet(nn.Module):
    """The float network used for training: 3×3, 3×3, 1×1 convolutions, clipped ReLUs."""

    clip: Tensor  # a buffer: the hidden layers' activation ranges

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(IN_CHANNELS, HIDDEN, 3, padding=1),
                                    nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1),
                                    nn.Conv2d(HIDDEN, CHANNELS, 1)])
        self.register_buffer("clip", torch.tensor([8.0, 8.0]))  # activation ranges

    def forward(self, x: Tensor) -> Tensor:
        for conv, clip in zip(self.convs[:-1], self.clip, strict=True):
            x = torch.clamp(conv(x), 0, float(clip))
        return self.convs[-1](x)


def quantize(net: ContextNet) -> dict[str, Tensor]:
    """Integer tables for exact inference: int8 weights, integer biases, fixed-point rescales.

    Layer l maps integer inputs x (scale a_in: real = x · a_in) to integer outputs:
    acc = W_q ⋆ x + b_q, with W = W_q · s (s per output channel), real = acc · s · a_in;
    hidden outputs become round(real / a_out) clipped to [0, 255], a_out = clip / 255, computed
    as (acc · M + 2^15) >> 16 with M = round(s · a_in / a_out · 2^16); the last layer gives the
    logit in steps of 1/8 the same way.
    """
    tables: dict[str, Tensor] = {}
    a_in = 1.0  # the first layer's inputs are exact integers
    for i, conv in enumerate(net.convs):
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None  # as ContextNet builds them
        w = conv.weight.detach().double()
        s = w.abs().amax(dim=(1, 2, 3)).clamp(min=1e-8) / 127
        a_out = float(net.clip[i]) / 255 if i < len(net.clip) else 1 / LOGIT_STEPS
        tables[f"{PREFIX}w{i}"] = torch.round(w / s[:, None, None, None]).to(torch.int8)
        bias = conv.bias.detach().double() / (s * a_in)
        tables[f"{PREFIX}b{i}"] = torch.round(bias).to(torch.int32)
        tables[f"{PREFIX}m{i}"] = torch.round(s * a_in / a_out * (1 << SHIFT)).to(torch.int32)
        a_in = a_out
    logits = torch.arange(-LOGIT_MAX, LOGIT_MAX + 1, dtype=torch.float64) / LOGIT_STEPS
    lut = torch.round(torch.sigmoid(logits) * ONE).clamp(1, ONE - 1)
    tables[f"{PREFIX}lut"] = lut.to(torch.int16)
    return tables


def _int_conv(x: Tensor, w: Tensor) -> Tensor:
    """Exact integer convolution: im2col copies, then a float32 GEMM of small integers.

    Every partial sum stays below 2^24 in magnitude (|x| ≤ 255, |w| ≤ 127, ≤ 432 terms; or
    |x| ≤ 16 and ≤ 594 terms), so float32 represents each one exactly, in any order.
    """
    k = w.shape[-1]
    cols = nn.functional.unfold(x[None].float(), k, padding=k // 2)[0]  # (C·k·k) × (h·w)
    out = w.reshape(w.shape[0], -1).float() @ cols
    return out.long().reshape(w.shape[0], *x.shape[1:])


HISTORY_PLANES = [*range(2 * CHANNELS), 3 * CHANNELS, 3 * CHANNELS + 1]
CURRENT_PLANES = list(range(2 * CHANNELS, 3 * CHANNELS))


class IntContextNet:
    """Integer inference from the quantized tables; returns 12-bit probabilities of a 1.

    The first layer is linear, so its history part is computed once per iteration and only the
    current-codes part once per step.
    """

    def __init__(self, tables: Mapping[str, Tensor]) -> None:
        w0 = tables[f"{PREFIX}w0"]
        self.w_hist, self.w_cur = w0[:, HISTORY_PLANES], w0[:, CURRENT_PLANES]
        self.layers = [(tables[f"{PREFIX}w{i}"], tables[f"{PREFIX}b{i}"].long(),
                        tables[f"{PREFIX}m{i}"].long()) for i in range(3)]
        self.lut = tables[f"{PREFIX}lut"].long()

    def history(self, planes: Tensor) -> Tensor:
        """Layer-1 accumulators from the 66 history planes (inputs minus the current codes)."""
        return _int_conv(planes[HISTORY_PLANES], self.w_hist) + self.layers[0][1][:, None, None]

    def probabilities(self, base: Tensor, current: Tensor) -> Tensor:
        (_, _, m0), (w1, b1, m1), (w2, b2, m2) = self.layers
        x = _rescale(base + _int_conv(current, self.w_cur), m0).clamp(0, 255)
        x = _rescale(_int_conv(x, w1) + b1[:, None, None], m1).clamp(0, 255)
        logit = _rescale(_int_conv(x, w2) + b2[:, None, None], m2)
        return self.lut[logit.clamp(-LOGIT_MAX, LOGIT_MAX) + LOGIT_MAX]


def _rescale(acc: Tensor, m: Tensor) -> Tensor:
    """Fixed-point multiply by the per-channel multipliers, rounding half up."""
    return (acc * m[:, None, None] + (1 << (SHIFT - 1))) >> SHIFT


_LEVELS = torch.tensor([-1.0, 1.0, 0.0])  # code 0, 1 and STOPPED as the network reads them
assert _LEVELS[STOPPED] == 0


def levels(codes: np.ndarray) -> Tensor:
    """Codes in {0, 1, STOPPED} as ±1, and 0 for blocks an adaptive file does not code."""
    return _LEVELS[torch.from_numpy(codes).long()]


class NeuralCoder:
    coder_id = 2
    name = "neural"

    def __init__(self, tables: Mapping[str, Tensor]) -> None:
        self.net = IntContextNet(tables)

    def _steps(self, shape: tuple[int, int, int], previous: list[np.ndarray],
               blocks: np.ndarray | None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Per step: the layer-1 history accumulators and the (known, coded) masks, the coded
        one limited to ``blocks`` (h×w bool) when given."""
        _, h, w = shape
        history = history_inputs([levels(p) for p in previous], h, w)
        base = self.net.history(step_inputs(history, torch.zeros(shape), torch.zeros(shape)))
        for step in range(STEPS):
            known, coded = step_mask(step, h, w)
            yield base, known, coded if blocks is None else coded & torch.from_numpy(blocks)

    def encode(self, codes: np.ndarray, previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> bytes:
        signed = levels(codes)
        symbols, probs = [], []
        for base, known, sent in self._steps(codes.shape, previous, coded):
            symbols.append(torch.from_numpy(codes)[sent])
            probs.append(self.net.probabilities(base, signed * known)[sent])
        return encode_bits(codes, torch.cat(symbols).numpy(), torch.cat(probs).numpy())

    def decode(self, payload: bytes, shape: tuple[int, int, int], previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> np.ndarray:
        reader = BitReader(payload)
        signed = torch.zeros(shape)
        for base, known, sent in self._steps(shape, previous, coded):
            p = self.net.probabilities(base, signed * known)[sent]
            signed[sent] = torch.from_numpy(reader.read(p.numpy())).float() * 2 - 1
        codes = ((signed + 1) / 2).to(torch.uint8).numpy()
        if coded is not None:
            codes[:, ~coded] = STOPPED
        return reader.verify(codes)


def training_batch(codes: Tensor, t: int, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs, targets 0/1, coded mask) for step ``step`` of iteration t of N images' codes.

    ``codes`` is N×T×32×h×w in ±1; inputs and targets are differentiable in them.
    """
    _, _, _, h, w = codes.shape
    known, coded = (m.to(codes.device) for m in step_mask(step, h, w))
    xs = [step_inputs(history_inputs(list(c[:t]), h, w, codes.device), c[t], known)
          for c in codes]
    return torch.stack(xs), (codes[:, t] + 1) / 2, coded.expand_as(codes[:, t])


def code_length(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Bits needed for the masked targets: -[c·log2 p + (1-c)·log2(1-p)] summed."""
    nll = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (nll * mask).sum() / np.log(2)


def code_bits(net: ContextNet, codes: Tensor, first: int = 0) -> Tensor:
    """Mean length in bits per bit of the codes of iterations ``first`` on, every step of each,
    under ``net``: differentiable in the network and in the codes (training's rate term).

    ``codes`` is N×T×32×h×w in ±1; earlier iterations' codes are history alone.
    """
    parts = [training_batch(codes, t, step)
             for t in range(first, codes.shape[1]) for step in range(STEPS)]
    x, y, mask = (torch.cat(p) for p in zip(*parts, strict=True))
    return code_length(net(x), y, mask) / mask.sum()
