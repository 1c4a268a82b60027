"""Encoder, binarizer, decoder and gain estimator."""

from __future__ import annotations

import pytest
import torch

from rnncodec.networks import BITS, Binarizer, Decoder, Encoder, GainEstimator, _ch

WIDTH = 0.03
CELL_NAMES = ["lstm", "assoc-lstm", "gru", "residual-gru"]


def test_channel_scaling_is_even_and_at_least_8() -> None:
    assert _ch(512, 1.0) == 512
    assert _ch(64, 0.03) == 8
    assert _ch(512, 0.25) == 128
    for n in (64, 128, 256, 512):
        for w in (0.01, 0.03, 0.1, 0.33, 0.5, 1.7):
            for multiple in (2, 4):
                c = _ch(n, w, multiple)
                assert c >= 8 and c % multiple == 0


@pytest.mark.parametrize("width", [0.1, 0.155, 0.3, 0.33, 0.7])
def test_any_width_builds_and_decodes(width: float) -> None:
    """Widths whose scaled counts are not multiples of 4 once crashed in depth-to-space."""
    dec = Decoder("residual-gru", width)
    out, _ = dec(torch.ones(1, BITS, 1, 2), [None] * 4)
    assert out.shape == (1, 3, 16, 32)


def test_decoder_channel_counts_of_working_widths_are_unchanged() -> None:
    """Rounding the decoder to multiples of 4 must not change any width that already built."""
    for w in [i / 200 for i in range(1, 801)]:
        old = [max(8, 2 * round(n * w / 2)) for n in (512, 256, 128)]
        if all(c % 4 == 0 for c in old):
            assert [_ch(n, w, 4) for n in (512, 256, 128)] == old


def test_coarse_widens_only_the_layers_at_one_eighth_and_one_sixteenth_scale() -> None:
    def hidden(net: Encoder | Decoder) -> list[int]:
        return [int(rnn.hidden) for rnn in net.rnns]  # type: ignore[arg-type]

    enc, wide_enc = Encoder("gru", 0.25), Encoder("gru", 0.25, coarse=1.5)
    dec, wide_dec = Decoder("gru", 0.25), Decoder("gru", 0.25, coarse=1.5)
    assert (hidden(enc), hidden(wide_enc)) == ([64, 128, 128], [64, 192, 192])
    assert (hidden(dec), hidden(wide_dec)) == ([128, 128, 64, 32], [192, 192, 64, 32])
    assert wide_enc.out_channels == 192
    out, _ = wide_dec(torch.ones(1, BITS, 1, 2), [None] * 4)
    assert out.shape == (1, 3, 16, 32)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_encoder_binarizer_decoder_shapes(cell: str) -> None:
    torch.manual_seed(0)
    enc, dec = Encoder(cell, WIDTH), Decoder(cell, WIDTH)
    binz = Binarizer(enc.out_channels).eval()
    x = torch.rand(2, 3, 32, 48) - 0.5
    feats, enc_states = enc(x, [None] * 3)
    assert feats.shape == (2, enc.out_channels, 2, 3)
    assert len(enc_states) == 3
    bits = binz(feats)
    assert bits.shape == (2, BITS, 2, 3)
    out, dec_states = dec(bits, [None] * 4)
    assert out.shape == (2, 3, 32, 48)
    assert len(dec_states) == 4
    assert out.abs().max() < 1  # tanh output
    # a second iteration reuses the states
    feats2, _ = enc(x, enc_states)
    out2, _ = dec(binz(feats2), dec_states)
    assert out2.shape == out.shape


# --- binarizer --------------------------------------------------------------------------------


def _identity_binarizer() -> Binarizer:
    """A binarizer whose 32 outputs are all tanh of its single input channel."""
    b = Binarizer(1)
    with torch.no_grad():
        b.conv.weight.fill_(1.0)
    return b


def test_binarizer_outputs_are_exactly_plus_minus_one() -> None:
    torch.manual_seed(0)
    b = Binarizer(8)
    x = 3 * torch.randn(4, 8, 5, 6)
    for stochastic in (True, False):
        out = b(x, stochastic=stochastic)
        assert out.shape == (4, BITS, 5, 6)
        assert set(out.unique().tolist()) <= {-1.0, 1.0}
        assert ((out == 1) | (out == -1)).all()


def test_binarizer_stochastic_mean_is_tanh_of_preactivation() -> None:
    """E[b] = tanh(x): the stochastic binarizer is unbiased."""
    torch.manual_seed(1)
    b = _identity_binarizer()
    pre = torch.tensor([-2.0, -0.8, -0.3, 0.0, 0.1, 0.5, 1.2, 3.0])
    x = pre.view(1, 1, 1, -1).expand(4000, 1, 1, -1)
    with torch.no_grad():
        out = b(x, stochastic=True)  # 4000 × 32 samples per value
    mean = out.mean(dim=(0, 1, 2))
    expected = torch.tanh(pre)
    # standard error is at most 1/sqrt(128000) ≈ 0.003
    assert torch.allclose(mean, expected, atol=0.015), (mean, expected)
    # and the samples really vary where |tanh x| < 1
    assert (out[:, :, 0, 3] == 1).any() and (out[:, :, 0, 3] == -1).any()


def test_binarizer_training_mode_is_stochastic_by_default() -> None:
    torch.manual_seed(2)
    b = _identity_binarizer().train()
    x = torch.zeros(1, 1, 16, 16)
    out1, out2 = b(x), b(x)
    assert not torch.equal(out1, out2)
    assert 0.3 < (out1 == 1).float().mean() < 0.7


def test_binarizer_takes_the_sign_at_inference_with_zero_as_plus_one() -> None:
    b = _identity_binarizer().eval()
    pre = torch.tensor([-3.0, -1e-4, 0.0, 1e-4, 2.0]).view(1, 1, 1, -1)
    expected = torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0])
    for _ in range(3):  # deterministic
        out = b(pre)
        assert torch.equal(out[0, 0, 0], expected)
        assert torch.equal(out[0, 31, 0], expected)
    # an explicit stochastic=False in training mode is deterministic too
    b.train()
    assert torch.equal(b(pre, stochastic=False)[0, 0, 0], expected)


@pytest.mark.parametrize("stochastic", [True, False])
def test_binarizer_straight_through_gradient(stochastic: bool) -> None:
    """The gradient of b is that of tanh(conv(x)): nonzero, and passed straight through."""
    torch.manual_seed(3)
    b = Binarizer(4)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    w = torch.randn(2, BITS, 3, 3)
    (b(x, stochastic=stochastic) * w).sum().backward()
    g_x, g_w = x.grad.clone(), b.conv.weight.grad.clone()
    assert g_x.abs().sum() > 0 and g_w.abs().sum() > 0
    x.grad, b.conv.weight.grad = None, None
    (torch.tanh(b.conv(x)) * w).sum().backward()
    assert torch.allclose(g_x, x.grad, atol=1e-6)
    assert torch.allclose(g_w, b.conv.weight.grad, atol=1e-6)


# --- gain estimator ---------------------------------------------------------------------------


def test_gain_estimator_shape_and_lower_bound() -> None:
    torch.manual_seed(4)
    g = GainEstimator()
    recon = torch.rand(2, 3, 32, 48) - 0.5
    gain = g(recon)
    assert gain.shape == (2, 1, 32, 48)
    assert (gain >= 1).all()
    # constant over each 8×8 block
    blocks = gain.view(2, 1, 4, 8, 6, 8)
    assert torch.equal(blocks.amax(dim=(3, 5)), blocks.amin(dim=(3, 5)))


def test_gain_never_drops_below_one_even_for_extreme_weights() -> None:
    torch.manual_seed(5)
    g = GainEstimator()
    with torch.no_grad():
        g.net[-1].bias.fill_(-1e4)
    gain = g(torch.rand(1, 3, 16, 16) - 0.5)
    assert (gain >= 1).all()
    assert torch.allclose(gain, torch.ones_like(gain))
    with torch.no_grad():
        g.net[-1].bias.fill_(5.0)
    assert (g(torch.rand(1, 3, 16, 16) - 0.5) > 5).all()
