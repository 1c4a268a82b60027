"""Convolutional recurrent cells: LSTM, associative LSTM, GRU and the paper's Residual GRU.

Every cell has the same contract so networks can swap them by name:
``output, state = cell(x, state)`` where ``state`` is ``None`` on the first iteration.
The input convolution carries the spatial stride; the hidden-to-hidden convolution never does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class ConvRNNCell(nn.Module):
    """Shared plumbing: an input convolution (with stride) and a hidden convolution."""

    gate_factor: float = 4.0

    def __init__(self, in_ch: int, hidden: int, kernel: int = 3, stride: int = 1,
                 hidden_kernel: int = 1) -> None:
        super().__init__()
        self.hidden = hidden
        gates = int(self.gate_factor * hidden)
        self.conv_x = nn.Conv2d(in_ch, gates, kernel, stride, kernel // 2)
        self.conv_h = nn.Conv2d(hidden, gates, hidden_kernel, 1, hidden_kernel // 2, bias=False)

    def zeros(self, gx: Tensor, channels: int) -> Tensor:
        """A zero state shaped like the input convolution's output."""
        return gx.new_zeros(gx.shape[0], channels, gx.shape[2], gx.shape[3])


class ConvLSTM(ConvRNNCell):
    """Standard LSTM with convolutional gates (Toderici et al. 2016/2017)."""

    def forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        gx = self.conv_x(x)
        h, c = state if state is not None else (self.zeros(gx, self.hidden),) * 2
        i, f, o, g = (gx + self.conv_h(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def _bound(z: Tensor) -> Tensor:
    """Project complex numbers (stored as [real | imag] channel halves) into the unit disc."""
    re, im = z.chunk(2, dim=1)
    d = torch.clamp(torch.sqrt(re * re + im * im), min=1.0)
    return torch.cat([re / d, im / d], dim=1)


def _cmul(a: Tensor, b: Tensor) -> Tensor:
    """Complex product of two tensors stored as [real | imag] channel halves."""
    ar, ai = a.chunk(2, dim=1)
    br, bi = b.chunk(2, dim=1)
    return torch.cat([ar * br - ai * bi, ar * bi + ai * br], dim=1)


class AssociativeLSTM(ConvRNNCell):
    """Associative LSTM (Danihelka et al. 2016) with one memory copy, as used by Toderici 2017.

    The hidden size counts real numbers; the holographic memory holds hidden/2 complex values.
    Pre-activations: forget, input and output gates (hidden/2 each, real) and the complex input
    key, output key and update (hidden each).
    """

    gate_factor = 4.5

    def __init__(self, in_ch: int, hidden: int, **kw: int) -> None:
        if hidden % 2:
            raise ValueError("AssociativeLSTM needs an even hidden size")
        super().__init__(in_ch, hidden, **kw)

    def forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        gx = self.conv_x(x)
        h, c = state if state is not None else (self.zeros(gx, self.hidden),) * 2
        n = self.hidden // 2
        pre = gx + self.conv_h(h)
        f, i, o = (torch.sigmoid(t) for t in pre[:, : 3 * n].chunk(3, dim=1))
        r_in, r_out, u = (_bound(t) for t in pre[:, 3 * n:].chunk(3, dim=1))
        c = torch.cat([f, f], 1) * c + _cmul(r_in, torch.cat([i, i], 1) * u)
        h = torch.cat([o, o], 1) * _bound(_cmul(r_out, c))
        return h, (h, c)


class ConvGRU(ConvRNNCell):
    """GRU with convolutional gates."""

    gate_factor = 3.0

    def step(self, gx: Tensor, h: Tensor) -> Tensor:
        xz, xr, xn = gx.chunk(3, dim=1)
        w = self.conv_h.weight
        hz, hr = nn.functional.conv2d(h, w[: 2 * self.hidden], padding=w.shape[-1] // 2).chunk(2, 1)
        z, r = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
        hn = nn.functional.conv2d(r * h, w[2 * self.hidden:], padding=w.shape[-1] // 2)
        return (1 - z) * h + z * torch.tanh(xn + hn)

    def forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        gx = self.conv_x(x)
        h = state[0] if state is not None else self.zeros(gx, self.hidden)
        h = self.step(gx, h)
        return h, (h,)


class ResidualGRU(ConvGRU):
    """The paper's Residual GRU: a GRU whose output adds a projection of its input.

    The state carried between iterations is the GRU's own ``h``; the output passed to the next
    layer is ``h + W_ox * x`` (a shortcut around the recurrent cell, as in residual networks).
    """

    def __init__(self, in_ch: int, hidden: int, kernel: int = 3, stride: int = 1,
                 hidden_kernel: int = 1) -> None:
        super().__init__(in_ch, hidden, kernel, stride, hidden_kernel)
        self.conv_skip = nn.Conv2d(in_ch, hidden, kernel, stride, kernel // 2, bias=False)

    def forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        h, state = super().forward(x, state)
        return h + self.conv_skip(x), state


CELLS: dict[str, type[ConvRNNCell]] = {
    "lstm": ConvLSTM,
    "assoc-lstm": AssociativeLSTM,
    "gru": ConvGRU,
    "residual-gru": ResidualGRU,
}


def make_cell(name: str, in_ch: int, hidden: int, **kw: int) -> ConvRNNCell:
    """Build a cell by its registered name."""
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)}")
    return CELLS[name](in_ch, hidden, **kw)
