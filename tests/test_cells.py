"""The four conv-RNN cells: shapes, state contract, gradients, registry."""

from __future__ import annotations

import pytest
import torch

from rnncodec.cells import CELLS, AssociativeLSTM, ConvGRU, ConvLSTM, ResidualGRU, make_cell

CELL_NAMES = ["lstm", "assoc-lstm", "gru", "residual-gru"]
STATE_LEN = {"lstm": 2, "assoc-lstm": 2, "gru": 1, "residual-gru": 1}


def test_registry_names_and_classes() -> None:
    assert list(CELLS) == CELL_NAMES
    assert CELLS["lstm"] is ConvLSTM
    assert CELLS["assoc-lstm"] is AssociativeLSTM
    assert CELLS["gru"] is ConvGRU
    assert CELLS["residual-gru"] is ResidualGRU


def test_unknown_cell_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        make_cell("rnn", 4, 8)


def test_associative_lstm_needs_even_hidden_size() -> None:
    with pytest.raises(ValueError, match="even"):
        make_cell("assoc-lstm", 4, 7)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_output_and_state_shapes(name: str, stride: int) -> None:
    torch.manual_seed(0)
    cell = make_cell(name, 5, 8, stride=stride)
    x = torch.randn(2, 5, 12, 16)
    out, state = cell(x, None)
    expected = (2, 8, 12 // stride, 16 // stride)
    assert out.shape == expected
    assert isinstance(state, tuple) and len(state) == STATE_LEN[name]
    assert all(s.shape == expected for s in state)
    assert torch.isfinite(out).all()
    # the state from the first step is accepted by the next and keeps its shape
    out2, state2 = cell(torch.randn(2, 5, 12, 16), state)
    assert out2.shape == expected and all(s.shape == expected for s in state2)
    assert not torch.equal(out2, out)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_state_carries_memory(name: str) -> None:
    """The same input gives a different output once the cell has seen something."""
    torch.manual_seed(1)
    cell = make_cell(name, 4, 8, hidden_kernel=3)
    x = torch.randn(1, 4, 8, 8)
    first, state = cell(x, None)
    again, _ = cell(x, None)
    second, _ = cell(x, state)
    assert torch.equal(first, again)  # deterministic
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_gradients_reach_every_parameter(name: str, stride: int) -> None:
    torch.manual_seed(2)
    cell = make_cell(name, 3, 8, stride=stride, hidden_kernel=3)
    xs = [torch.randn(2, 3, 8, 8, requires_grad=True) for _ in range(3)]
    state, loss = None, torch.zeros(())
    for x in xs:  # several steps: the hidden convolution only matters once h != 0
        out, state = cell(x, state)
        loss = loss + (out * torch.randn_like(out)).sum()
    loss.backward()
    for pname, p in cell.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"
    for x in xs:
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", CELL_NAMES)
def test_hidden_convolution_has_no_stride(name: str) -> None:
    cell = make_cell(name, 4, 8, stride=2, hidden_kernel=3)
    assert cell.conv_x.stride == (2, 2)
    assert cell.conv_h.stride == (1, 1)
    assert cell.conv_h.kernel_size == (3, 3)


def test_gate_widths() -> None:
    assert make_cell("lstm", 4, 8).conv_x.out_channels == 32
    assert make_cell("gru", 4, 8).conv_x.out_channels == 24
    assert make_cell("residual-gru", 4, 8).conv_x.out_channels == 24
    assert make_cell("assoc-lstm", 4, 8).conv_x.out_channels == 36


def test_residual_gru_output_is_state_plus_skip() -> None:
    torch.manual_seed(3)
    cell = make_cell("residual-gru", 4, 8, stride=2)
    x = torch.randn(1, 4, 8, 8)
    out, (h,) = cell(x, None)
    assert torch.allclose(out, h + cell.conv_skip(x), atol=1e-6)
    assert not torch.allclose(out, h)
    # and plain GRU with the same weights produces exactly that state
    gru = make_cell("gru", 4, 8, stride=2)
    gru.load_state_dict({k: v for k, v in cell.state_dict().items() if "skip" not in k})
    out_g, (h_g,) = gru(x, None)
    assert torch.allclose(out_g, h, atol=1e-6) and torch.allclose(h_g, h, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bounded_outputs(name: str) -> None:
    """LSTM (o·tanh c) and GRU (convex mix of tanh and a bounded h) stay in [-1, 1]."""
    torch.manual_seed(4)
    cell = make_cell(name, 3, 8)
    state = None
    for _ in range(4):
        out, state = cell(10 * torch.randn(1, 3, 8, 8), state)
        assert out.abs().max() <= 1.0


def test_associative_lstm_memory_read_is_bounded() -> None:
    torch.manual_seed(5)
    cell = make_cell("assoc-lstm", 3, 8)
    state = None
    for _ in range(4):
        out, state = cell(10 * torch.randn(1, 3, 8, 8), state)
        re, im = out.chunk(2, dim=1)
        assert (torch.sqrt(re ** 2 + im ** 2) <= 1 + 1e-5).all()
