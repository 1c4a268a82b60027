"""Block quality measures and block stops for spatially adaptive bit rates."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_tiny

from rnncodec.adaptive import block_quality, mask_bits, ssim_map, still_active


def _image(h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) - 0.5


def test_ssim_map_is_one_for_identical_images_and_lower_for_noise() -> None:
    x = _image()
    assert ssim_map(x, x).shape == (1, 1, 32, 48)
    torch.testing.assert_close(ssim_map(x, x), torch.ones(1, 1, 32, 48))
    noise = torch.randn_like(x)
    mild, strong = (float(ssim_map(x, (x + s * noise).clamp(-0.5, 0.5)).mean()) for s in (0.1, 0.3))
    assert 1 > mild > strong


def test_ssim_map_agrees_with_pytorch_msssim_inside_the_image() -> None:
    """Away from the edges (where this map replicates pixels and pytorch-msssim crops), the
    mean is SSIM's."""
    from pytorch_msssim import ssim

    x, y = _image(64, 64, 1), _image(64, 64, 2) * 0.3 + _image(64, 64, 1) * 0.7
    ours = float(ssim_map(x, y)[..., 5:-5, 5:-5].mean())
    theirs = float(ssim(x + 0.5, y + 0.5, data_range=1.0))
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_block_psnr_is_each_blocks_psnr() -> None:
    x = torch.zeros(1, 3, 32, 32)
    y = x.clone()
    y[..., :16, :16] = 0.1  # MSE 0.01 in the top-left block only: 20 dB
    q = block_quality(x, y, "psnr")
    assert q.shape == (1, 1, 2, 2)
    assert float(q[0, 0, 0, 0]) == pytest.approx(20.0, abs=1e-4)
    assert float(q[0, 0, 1, 1]) == pytest.approx(100.0)  # error clamped at 1e-10


def test_block_ssim_quality_ranks_a_damaged_block_lowest() -> None:
    x = _image(32, 32)
    y = x.clone()
    y[..., 16:, :16] += 0.2 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    q = block_quality(x, y.clamp(-0.5, 0.5))
    assert q.shape == (1, 1, 2, 2)
    assert int(q.flatten().argmin()) == 2  # row 1, column 0


def test_block_quality_refuses_an_unknown_measure() -> None:
    with pytest.raises(ValueError, match="measure must be one of ssim, psnr"):
        block_quality(_image(), _image(), "mse")


def test_a_stopped_block_never_restarts() -> None:
    q1 = torch.tensor([[[[10.0, 20.0]]]])
    active = still_active(None, q1, 15.0)
    assert active.tolist() == [[[[True, False]]]]
    q2 = torch.tensor([[[[20.0, 5.0]]]])  # the first block now good, the second bad again
    assert still_active(active, q2, 15.0).tolist() == [[[[False, False]]]]
    per_image = torch.tensor([15.0, math.inf]).view(2, 1, 1, 1)
    both = still_active(None, torch.cat([q1, q1]), per_image)
    assert both.tolist() == [[[[True, False]]], [[[True, True]]]]


def test_mask_bits_zeroes_the_stopped_blocks() -> None:
    bits = torch.ones(1, 32, 2, 2)
    active = torch.tensor([[[[True, False], [False, True]]]])
    masked = mask_bits(bits, active)
    assert masked[:, :, 0, 1].abs().sum() == 0 and masked[:, :, 1, 0].abs().sum() == 0
    assert masked[:, :, 0, 0].eq(1).all() and masked[:, :, 1, 1].eq(1).all()
    assert mask_bits(bits, None) is bits


def test_forward_with_stops_decodes_zeros_for_stopped_blocks() -> None:
    """The training path's stops are what a decoder reading zeros for those blocks builds."""
    net = build_tiny().eval()
    x = _image(32, 32)
    stop_right = torch.tensor([[[[True, False], [True, False]]]])

    def stops(image: torch.Tensor, recon: torch.Tensor, active: torch.Tensor | None
              ) -> torch.Tensor:
        return stop_right if active is None else active & stop_right

    with torch.no_grad():
        recons = net(x, 3, False, stops)
        state = net.initial_state(x)
        expected = []
        for t in range(3):
            bits, state = net.encode_step(x, state, False)
            if t:
                bits = bits * stop_right.float()
            state = net.decode_step(bits, state)
            expected.append(state.recon)
        uniform = net(x, 3, False)
    for r, e in zip(recons, expected, strict=True):
        torch.testing.assert_close(r, e)
    torch.testing.assert_close(recons[0], uniform[0])
    assert not torch.equal(recons[2], uniform[2])


def test_block_psnr_counts_only_the_images_own_pixels() -> None:
    """A 20×20 image padded to 32×32: errors in the padding do not count, and a partial
    block's PSNR is over its real pixels."""
    from rnncodec.adaptive import block_psnr

    x = torch.zeros(1, 3, 32, 32)
    y = x.clone()
    y[..., 20:, :] = 0.5  # padding only
    y[..., :4, 16:20] = 0.1  # 16 of the top-right block's 64 real pixels (16 rows × 4 columns)
    q = block_psnr(x, y, 20, 20)
    assert float(q[0, 0, 1, 0]) == pytest.approx(100.0)  # nothing wrong among its real pixels
    assert float(q[0, 0, 0, 1]) == pytest.approx(-10 * math.log10(0.01 * 16 / 64), abs=1e-4)
    assert float(block_psnr(x, y + 1, 20, 20)[0, 0, 0, 0]) == pytest.approx(-10 * math.log10(
        0.25))  # the reconstruction is clamped to the pixels' range
