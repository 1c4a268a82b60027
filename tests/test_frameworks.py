"""ModelConfig, the three reconstruction frameworks, the coding state and the loss."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_WIDTH, build_tiny, primed

from rnncodec.frameworks import (
    FRAMEWORKS,
    ModelConfig,
    RNNCompressor,
    grow,
    ms_ssim_db_loss,
    ms_ssim_loss,
    psnr_db_loss,
    psnr_hvs_db_loss,
    residual_loss,
)

CELL_NAMES = ["lstm", "assoc-lstm", "gru", "residual-gru"]


def _image(n: int = 1, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) - 0.5


def test_config_defaults_and_dict() -> None:
    c = ModelConfig()
    assert (c.cell, c.framework, c.width) == ("residual-gru", "residual-scaling", 1.0)
    assert ModelConfig(**c.to_dict()) == c
    assert FRAMEWORKS == ("one-shot", "additive", "residual-scaling")


@pytest.mark.parametrize("kw, match", [
    ({"cell": "rnn"}, "unknown cell"),
    ({"framework": "magic"}, "unknown framework"),
    ({"width": 0}, "width"),
    ({"width": -1}, "width"),
    ({"width": 4.5}, "width"),
    ({"prime": -1}, "prime"),
    ({"prime": 9}, "prime"),
])
def test_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kw)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gain_estimator_only_for_residual_scaling(framework: str) -> None:
    net = build_tiny(framework=framework)
    assert (net.gain is not None) == (framework == "residual-scaling")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_forward_shapes(framework: str) -> None:
    net = build_tiny(framework=framework).eval()
    x = _image(2)
    with torch.no_grad():
        recons = net(x, 3)
    assert len(recons) == 3
    assert all(r.shape == x.shape for r in recons)
    state = net.initial_state(x)
    assert torch.equal(state.recon, torch.zeros_like(x))
    assert state.enc == [None] * 3 and state.dec == [None] * 4
    with torch.no_grad():
        bits, state = net.encode_step(x, state)
    assert bits.shape == (2, 32, 2, 3)
    assert ((bits == 1) | (bits == -1)).all()
    assert all(s is not None for s in state.enc)
    assert state.dec == [None] * 4  # encoding does not touch the decoder


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_decode_step_reproduces_forward_in_eval_mode(cell: str, framework: str) -> None:
    """A decoder that sees only the bits rebuilds exactly the encoder's reconstructions."""
    net = build_tiny(cell, framework, seed=7).eval()
    x = _image(seed=1)
    with torch.no_grad():
        recons = net(x, 4)
        enc_state = net.initial_state(x)
        all_bits = []
        for _ in range(4):
            bits, enc_state = net.encode_step(x, enc_state)
            enc_state = net.decode_step(bits, enc_state)
            all_bits.append(bits)
        # the decoder side: fresh state, exact ±1 bits (as read from a file)
        dec_state = net.initial_state(torch.zeros_like(x))
        for i, bits in enumerate(all_bits):
            exact = torch.where(bits > 0, 1.0, -1.0)
            dec_state = net.decode_step(exact, dec_state)
            assert torch.equal(dec_state.recon, recons[i]), f"iteration {i + 1}"
    assert not torch.equal(recons[0], recons[-1])


def test_one_shot_predicts_the_image() -> None:
    net = build_tiny(framework="one-shot").eval()
    x = _image()
    with torch.no_grad():
        bits, state = net.encode_step(x, net.initial_state(x))
        out, _ = net.decoder(bits, [None] * 4)
        after = net.decode_step(bits, state)
    assert torch.allclose(after.recon, out * 0.5)
    assert after.recon.abs().max() <= 0.5


def test_additive_adds_the_decoder_output() -> None:
    net = build_tiny(framework="additive").eval()
    x = _image()
    with torch.no_grad():
        bits, state = net.encode_step(x, net.initial_state(x))
        first = net.decode_step(bits, state)
        bits2, state2 = net.encode_step(x, first)
        out2, _ = net.decoder(bits2, first.dec)
        second = net.decode_step(bits2, state2)
    assert torch.allclose(second.recon, first.recon + out2, atol=1e-6)


def test_residual_scaling_divides_by_the_gain() -> None:
    net = build_tiny(framework="residual-scaling").eval()
    x = _image()
    with torch.no_grad():
        bits, state = net.encode_step(x, net.initial_state(x))
        first = net.decode_step(bits, state)
        gain = net.gain(first.recon)
        assert gain.shape == (1, 1, 32, 48)
        assert (gain >= 1).all()
        bits2, state2 = net.encode_step(x, first)
        out2, _ = net.decoder(bits2, first.dec)
        second = net.decode_step(bits2, state2)
    assert torch.allclose(second.recon, first.recon + out2 / gain, atol=1e-6)


def test_residual_scaling_encoder_sees_the_scaled_residual() -> None:
    net = build_tiny(framework="residual-scaling").eval()
    x = _image()
    with torch.no_grad():
        state = net.initial_state(x)
        net.gain.net[-1].bias.fill_(3.0)  # gain = ELU(3 + ...) + 2 > 1
        g = net.gain(state.recon)
        assert (g > 1).all()
        bits, _ = net.encode_step(x, state)
        feats, _ = net.encoder(x * g, [None] * 3)
        assert torch.equal(bits, net.binarizer(feats))
        unscaled, _ = net.encoder(x, [None] * 3)
        assert not torch.equal(bits, net.binarizer(unscaled))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_training_path_is_stochastic_and_differentiable(framework: str) -> None:
    net = build_tiny(framework=framework, seed=3).train()
    x = _image(2, 32, 32)
    torch.manual_seed(0)
    recons = net(x, 3)
    loss = residual_loss(x, recons)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    torch.manual_seed(1)
    with torch.no_grad():
        other = net(x, 3)
    assert not torch.equal(other[-1], recons[-1].detach())


def test_training_path_with_sign_bits_is_deterministic_and_differentiable() -> None:
    """``stochastic=False`` in train mode: the bits of inference, gradients straight through."""
    net = build_tiny(seed=3).train()
    x = _image(2, 32, 32)
    torch.manual_seed(0)
    recons = net(x, 3, stochastic=False)
    residual_loss(x, recons).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    torch.manual_seed(1)
    with torch.no_grad():
        again = net(x, 3, stochastic=False)
        inference = net.eval()(x, 3)
    assert torch.equal(again[-1], recons[-1].detach())
    assert torch.equal(inference[-1], again[-1])


def test_residual_loss_is_mean_l1_over_iterations() -> None:
    x = _image()
    r1, r2 = torch.zeros_like(x), x + 0.1
    loss = residual_loss(x, [r1, r2])
    expected = (x.abs().mean() + 0.1) / 2
    assert torch.isclose(loss, expected, atol=1e-6)
    assert residual_loss(x, [x, x]) == 0


def test_psnr_db_loss_is_minus_the_mean_psnr_of_each_image_and_iteration() -> None:
    x = _image(2, 32, 32)
    noise = torch.zeros_like(x)
    noise[0] += 0.1  # image 0: MSE 1e-2 (20 dB); image 1: MSE 1e-4 (40 dB)
    noise[1] += 0.01
    loss = psnr_db_loss(x, [x + noise, x + noise / 10])  # then 40 and 60 dB
    assert loss.item() == pytest.approx(-(20 + 40 + 40 + 60) / 4, abs=1e-3)


def test_psnr_hvs_db_loss_is_minus_the_psnr_hvs_that_evaluation_reports() -> None:
    """On grey images (whose luma is exact in uint8) the loss and ``metrics.psnr_hvs`` agree;
    the rows and columns past the last whole 8×8 block count in neither."""
    import numpy as np

    from rnncodec.metrics import psnr_hvs

    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 256, (40, 53), dtype=np.uint8)]
    grey.append(np.clip(grey[0] + rng.integers(-6, 7, grey[0].shape), 0, 255).astype(np.uint8))
    a, b = (np.repeat(g[..., None], 3, -1) for g in grey)

    def tensor(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(v).permute(2, 0, 1)[None].double() / 255 - 0.5

    loss = psnr_hvs_db_loss(tensor(a), [tensor(b)]).item()
    assert loss == pytest.approx(-psnr_hvs(a, b), abs=1e-6)


def test_psnr_hvs_db_loss_counts_low_frequency_luma_errors_most() -> None:
    """Errors of equal MSE: a flat offset costs more PSNR-HVS than a fine checkerboard, and a
    luma error more than a chroma one."""
    x = torch.zeros(1, 3, 32, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 2 - 1.0
    flat, fine = x + 0.01, x + 0.01 * checker
    blue = x.clone()
    blue[:, 2] += 0.01 * 0.587 / 0.114  # moves luma as much as ...
    green = x.clone()
    green[:, 1] += 0.01  # ... this, with a far larger chroma error
    assert psnr_hvs_db_loss(x, [flat]) > psnr_hvs_db_loss(x, [fine]) + 10
    assert psnr_hvs_db_loss(x, [blue]) == pytest.approx(psnr_hvs_db_loss(x, [green]).item())
    assert psnr_db_loss(x, [blue]) > psnr_db_loss(x, [green]) + 10


def test_db_losses_weigh_a_late_iteration_as_much_as_an_early_one() -> None:
    """Halving a residual gains the same in dB whatever its size, unlike an L1 or L2 mean."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) - 0.5
    noise = torch.randn_like(x)
    early, late = x + 0.1 * noise, x + 0.001 * noise
    for fn in (psnr_db_loss, ms_ssim_db_loss, psnr_hvs_db_loss):
        gain_early = fn(x, [early, late]) - fn(x, [x + 0.05 * noise, late])
        gain_late = fn(x, [early, late]) - fn(x, [early, x + 0.0005 * noise])
        assert gain_early.item() > 0 and gain_late.item() > 0
        assert gain_late.item() == pytest.approx(gain_early.item(), rel=0.3), fn.__name__
    l1_early = residual_loss(x, [early, late]) - residual_loss(x, [x + 0.05 * noise, late])
    l1_late = residual_loss(x, [early, late]) - residual_loss(x, [early, x + 0.0005 * noise])
    assert l1_late < l1_early / 50


def test_width_scales_parameter_count() -> None:
    tiny = sum(p.numel() for p in RNNCompressor(ModelConfig(width=TINY_WIDTH)).parameters())
    small = sum(p.numel() for p in RNNCompressor(ModelConfig(width=0.1)).parameters())
    assert tiny < small


@pytest.mark.parametrize("side", [48, 128])
def test_ms_ssim_loss_fits_small_patches_and_ranks_reconstructions(side: int) -> None:
    torch.manual_seed(0)
    image = torch.rand(2, 3, side, side) - 0.5
    near, far = image + 0.02 * torch.randn_like(image), image + 0.2 * torch.randn_like(image)
    assert ms_ssim_loss(image, [image]).item() == pytest.approx(0, abs=1e-5)
    assert 0 < ms_ssim_loss(image, [near]) < ms_ssim_loss(image, [far]) <= 1
    both = ms_ssim_loss(image, [near, far])  # the mean over iterations
    assert both.item() == pytest.approx(
        (ms_ssim_loss(image, [near]) + ms_ssim_loss(image, [far])).item() / 2, rel=1e-5)


def test_ms_ssim_loss_is_the_evaluation_metric_on_large_patches() -> None:
    from rnncodec.metrics import ms_ssim_tensor

    torch.manual_seed(0)
    image = torch.rand(2, 3, 176, 176) - 0.5
    recon = image + 0.05 * torch.randn_like(image)
    expected = 1 - ms_ssim_tensor(recon + 0.5, image + 0.5, 1.0).mean()
    assert ms_ssim_loss(image, [recon]).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(("cell", "framework", "width", "coarse"), [
    ("residual-gru", "residual-scaling", 0.0625, 1.0), ("gru", "additive", 0.0625, 1.0),
    ("lstm", "one-shot", 0.0625, 1.0),
    ("residual-gru", "residual-scaling", 0.1, 1.0),  # encoder and decoder counts differ (26, 24)
    ("residual-gru", "residual-scaling", TINY_WIDTH, 2.0),  # only the coarse layers grow
    ("gru", "additive", 0.0625, 1.5),  # both
])
def test_grow_keeps_what_the_narrower_model_computes(cell: str, framework: str,
                                                     width: float, coarse: float) -> None:
    torch.manual_seed(0)
    small = RNNCompressor(ModelConfig(cell, framework, TINY_WIDTH)).eval()
    for p in small.parameters():  # weights far from the initialisation, as after training
        p.data.normal_(0, 0.2)
    wide = RNNCompressor(ModelConfig(cell, framework, width, coarse=coarse)).eval()
    grow(small, wide)
    x = _image()
    with torch.no_grad():
        for a, b in zip(small(x, 3, False), wide(x, 3, False), strict=True):
            assert torch.allclose(a, b, atol=1e-6)
        assert not torch.allclose(small(x, 1, False)[0], RNNCompressor(wide.config).eval()(
            x, 1, False)[0], atol=1e-3)  # a fresh wide model computes something else
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in small.parameters())


@pytest.mark.parametrize(("small", "wide", "match"), [
    (ModelConfig("assoc-lstm", width=TINY_WIDTH), ModelConfig("assoc-lstm", width=0.0625),
     "cannot grow"),
    (ModelConfig(width=0.0625), ModelConfig(width=TINY_WIDTH), "only the widths"),
    (ModelConfig(width=TINY_WIDTH), ModelConfig(framework="additive", width=0.0625),
     "only the widths"),
    (ModelConfig(width=TINY_WIDTH, coarse=2), ModelConfig(width=TINY_WIDTH), "only the widths"),
])
def test_grow_refuses_what_it_cannot_keep(small: ModelConfig, wide: ModelConfig,
                                          match: str) -> None:
    with pytest.raises(ValueError, match=match):
        grow(RNNCompressor(small), RNNCompressor(wide))


def test_a_plain_config_is_stored_as_before_and_others_round_trip() -> None:
    assert ModelConfig().to_dict() == {"cell": "residual-gru", "framework": "residual-scaling",
                                       "width": 1.0}
    for changed in (ModelConfig(prime=2), ModelConfig(coarse=1.5), ModelConfig(late_from=9)):
        assert ModelConfig(**changed.to_dict()) == changed
    assert ModelConfig(prime=2).to_dict()["prime"] == 2
    assert ModelConfig(coarse=1.5).to_dict()["coarse"] == 1.5
    assert ModelConfig(late_from=9).to_dict()["late_from"] == 9


@pytest.mark.parametrize("coarse", [0.5, 4.5])
def test_coarse_outside_its_range_is_refused(coarse: float) -> None:
    with pytest.raises(ValueError, match="coarse"):
        ModelConfig(coarse=coarse)


def test_priming_runs_extra_decoder_steps_on_the_first_bits_only() -> None:
    """A primed model's first reconstruction comes after ``prime`` decoder steps on the first
    bits whose outputs are dropped and whose state is scaled by the gates; later iterations
    decode one step each."""
    from dataclasses import replace

    net = primed(2).eval()
    plain = RNNCompressor(ModelConfig(width=TINY_WIDTH)).eval()
    plain.load_state_dict(net.state_dict(), strict=False)  # all but the gates
    assert net.prime_gates is not None
    x = _image(h=32, w=32)
    with torch.no_grad():
        got = net(x, 3, False)
        state = plain.initial_state(x)
        expected = []
        for t in range(3):
            bits, state = plain.encode_step(x, state, False)
            if t == 0:
                dec = state.dec
                for _ in range(2):
                    _, dec = plain.decoder(bits, dec)
                dec = [tuple(v * g for v in s) for s, g in zip(dec, net.prime_gates,
                                                               strict=True)]
                state = replace(state, dec=dec)
            state = plain.decode_step(bits, state)
            expected.append(state.recon)
        unprimed = plain(x, 3, False)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    assert not torch.equal(got[0], unprimed[0])


def test_closed_priming_gates_change_nothing() -> None:
    """A new primed model's gates are zero: it reconstructs exactly what the same weights
    unprimed do, so priming added to trained weights starts from them."""
    torch.manual_seed(0)
    plain = RNNCompressor(ModelConfig(width=TINY_WIDTH)).eval()
    gated = RNNCompressor(ModelConfig(width=TINY_WIDTH, prime=2)).eval()
    assert plain.prime_gates is None and gated.prime_gates is not None
    assert all(not g.any() for g in gated.prime_gates)
    gated.load_state_dict(plain.state_dict(), strict=False)
    x = _image(h=32, w=32)
    with torch.no_grad():
        for a, b in zip(gated(x, 3, False), plain(x, 3, False), strict=True):
            assert torch.equal(a, b)


def test_grow_may_add_priming_to_trained_weights() -> None:
    src = build_tiny()
    dst = RNNCompressor(ModelConfig(width=TINY_WIDTH, prime=1))
    grow(src, dst)
    grown = dst.state_dict()
    for k, a in src.state_dict().items():
        assert torch.equal(a, grown[k]), k
    assert sorted(set(grown) - set(src.state_dict())) == [f"prime_gates.{i}" for i in range(4)]


def test_late_networks_code_the_iterations_from_late_from_on_and_grow_copies_them() -> None:
    src = build_tiny().eval()
    dst = RNNCompressor(ModelConfig(width=TINY_WIDTH, late_from=3)).eval()
    grow(src, dst)  # the late networks start as copies: the same reconstructions
    x = _image()
    with torch.no_grad():
        for a, b in zip(src(x, 4, False), dst(x, 4, False), strict=True):
            assert torch.equal(a, b)
        assert dst.late is not None
        for p in dst.late.parameters():
            p.mul_(1.5)
        changed = dst(x, 4, False)
    for t, (a, b) in enumerate(zip(src(x, 4, False), changed, strict=True), 1):
        assert torch.equal(a, b) == (t < 3), t  # iterations 1 and 2 use the early networks
    with pytest.raises(ValueError, match="only the widths"):
        grow(dst, RNNCompressor(ModelConfig(width=TINY_WIDTH, late_from=5)))


@pytest.mark.parametrize("late_from", [1, 65])
def test_late_from_outside_its_range_is_refused(late_from: int) -> None:
    with pytest.raises(ValueError, match="late_from"):
        ModelConfig(late_from=late_from)
