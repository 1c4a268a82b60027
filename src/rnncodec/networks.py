"""The encoder, binarizer and decoder of Toderici et al. 2017 (Figure 1), with a width multiplier
and a second one (``coarse``) for the layers at 1/8 and 1/16 scale.

Shapes for an input of H×W (a multiple of 16): the encoder maps it to a 512w × H/16 × W/16
feature map, the binarizer to 32 × H/16 × W/16 values in {-1, +1} (0.125 bits per pixel), and the
decoder back to 3 × H × W through four depth-to-space (pixel shuffle) steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .cells import State, make_cell

BITS = 32  # bits per 16×16 block per iteration


def _ch(n: int, width: float, multiple: int = 2) -> int:
    """Scale a channel count to a multiple of ``multiple`` and at least 8.

    Even by default (the associative LSTM needs pairs); the decoder asks for multiples of 4,
    which depth-to-space needs. Every width that built before keeps its channel counts.
    """
    return max(8, multiple * round(n * width / multiple))


class Encoder(nn.Module):
    """conv 3×3/2 → 64, then three conv-RNNs 3×3/2 → 256, 512, 512 (hidden kernels 1×1)."""

    def __init__(self, cell: str, width: float = 1.0, coarse: float = 1.0) -> None:
        super().__init__()
        c64, c256, c512 = _ch(64, width), _ch(256, width), _ch(512, width * coarse)
        self.conv = nn.Conv2d(3, c64, 3, 2, 1, bias=False)
        self.rnns = nn.ModuleList([
            make_cell(cell, c64, c256, stride=2),
            make_cell(cell, c256, c512, stride=2),
            make_cell(cell, c512, c512, stride=2),
        ])
        self.out_channels = c512

    def forward(self, x: Tensor, states: list[State | None]) -> tuple[Tensor, list[State]]:
        x = self.conv(x)
        new: list[State] = []
        for rnn, s in zip(self.rnns, states, strict=False):
            x, s = rnn(x, s)
            new.append(s)
        return x, new


class Binarizer(nn.Module):
    """1×1 conv → 32 channels, tanh, then {-1, +1}.

    Training draws +1 with probability (1 + x) / 2 and passes the gradient straight through
    (the expectation equals x, so the estimator is unbiased); inference takes the sign, with
    0 mapped to +1 so that every value is a real bit.
    """

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, BITS, 1, bias=False)

    def soft(self, x: Tensor) -> Tensor:
        """Values in [-1, 1] whose signs are the inference bits (where the bit search starts)."""
        return torch.tanh(self.conv(x))

    def forward(self, x: Tensor, stochastic: bool | None = None) -> Tensor:
        x = self.soft(x)
        stochastic = self.training if stochastic is None else stochastic
        if stochastic:
            b = torch.where(torch.rand_like(x) < (1 + x) / 2, 1.0, -1.0)
        else:
            b = torch.where(x >= 0, 1.0, -1.0)
        return b + (x - x.detach())  # exactly ±1 forward (x + (b - x) can be 1 ulp off)


class Decoder(nn.Module):
    """1×1 conv → 512; conv-RNNs 512, 512, 256 (3×3 hidden), 128 (3×3 hidden), each followed by
    depth-to-space ×2; 1×1 conv → 3 and tanh."""

    def __init__(self, cell: str, width: float = 1.0, coarse: float = 1.0) -> None:
        super().__init__()
        c512 = _ch(512, width * coarse, 4)
        c256, c128 = (_ch(n, width, 4) for n in (256, 128))
        self.conv_in = nn.Conv2d(BITS, c512, 1, bias=False)
        self.rnns = nn.ModuleList([
            make_cell(cell, c512, c512, hidden_kernel=1),
            make_cell(cell, c512 // 4, c512, hidden_kernel=1),
            make_cell(cell, c512 // 4, c256, hidden_kernel=3),
            make_cell(cell, c256 // 4, c128, hidden_kernel=3),
        ])
        self.conv_out = nn.Conv2d(c128 // 4, 3, 1, bias=False)

    def forward(self, b: Tensor, states: list[State | None]) -> tuple[Tensor, list[State]]:
        x = self.conv_in(b)
        new: list[State] = []
        for rnn, s in zip(self.rnns, states, strict=False):
            x, s = rnn(x, s)
            x = nn.functional.pixel_shuffle(x, 2)
            new.append(s)
        return torch.tanh(self.conv_out(x)), new


class GainEstimator(nn.Module):
    """The residual-scaling framework's gain: one value ≥ 1 per 8×8 block, from the decoded image.

    Three stride-2 3×3 convolutions (ELU) and a 1×1 projection; ``ELU(x) + 2`` keeps the gain at
    least 1. It sees only what the decoder already has, so both sides compute the same gain.
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for _ in range(3):
            layers += [nn.Conv2d(c_in, channels, 3, 2, 1), nn.ELU()]
            c_in = channels
        layers.append(nn.Conv2d(channels, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, recon: Tensor) -> Tensor:
        # The 1×1 projection to one channel as a plain weighted sum: the convolution kernel for
        # one output channel sums in an order that depends on the thread count, so decoded
        # pixels differed between 1 and 2 threads; this sum does not.
        head = self.net[-1]
        assert isinstance(head, nn.Conv2d) and head.bias is not None  # as __init__ builds it
        g = (self.net[:-1](recon) * head.weight.view(1, -1, 1, 1)).sum(1, keepdim=True)
        g = nn.functional.elu(g + head.bias.view(1, 1, 1, 1)) + 2
        return nn.functional.interpolate(g, scale_factor=8, mode="nearest")
