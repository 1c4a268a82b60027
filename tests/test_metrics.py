"""PSNR and MS-SSIM on 8-bit arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import gradient_image

from rnncodec.metrics import MS_SSIM_MIN_SIDE, ms_ssim, psnr


def _noisy(a: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).round().astype(np.uint8)


def test_psnr_identical_is_infinite() -> None:
    a = gradient_image(8, 8)
    assert psnr(a, a.copy()) == math.inf


def test_psnr_known_values() -> None:
    a = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2), abs=1e-9)  # mse 1
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255 ** 2 / 100), abs=1e-9)
    zeros, full = np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)
    assert psnr(zeros, full) == pytest.approx(0.0)


def test_psnr_no_uint8_wraparound_and_symmetry() -> None:
    a = np.array([[0, 255]], np.uint8)
    b = np.array([[255, 0]], np.uint8)
    assert psnr(a, b) == pytest.approx(0.0)
    x = gradient_image(16, 16)
    y = _noisy(x, 10)
    assert psnr(x, y) == psnr(y, x)


def test_psnr_decreases_with_noise() -> None:
    a = gradient_image(32, 32)
    values = [psnr(a, _noisy(a, s)) for s in (2, 8, 32)]
    assert values[0] > values[1] > values[2]


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2, 3), (5, 7, 3), (16, 16, 3), (24, 40),
                                   (170, 180, 3)])
def test_ms_ssim_identical_is_one(shape: tuple) -> None:
    a = gradient_image(shape[0], shape[1], channels=shape[2] if len(shape) == 3 else 0)
    assert ms_ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("side", [1, 2, 3, 8, 40, MS_SSIM_MIN_SIDE - 1, MS_SSIM_MIN_SIDE])
def test_ms_ssim_in_unit_interval_and_decreasing_with_noise(side: int) -> None:
    a = gradient_image(side, side + 3)
    scores = [ms_ssim(a, _noisy(a, s, seed=side)) for s in (4, 30, 120)]
    assert all(0 <= s <= 1 for s in scores)
    assert scores[0] >= scores[1] >= scores[2]
    if side >= 3:
        assert scores[0] > scores[2]


def test_ms_ssim_tiny_image_fallback_is_mean_absolute_difference() -> None:
    a = np.array([[[0, 0, 0], [100, 100, 100]]], np.uint8)  # 1×2: no window fits
    b = a.copy()
    b[0, 1] = 151
    assert ms_ssim(a, b) == pytest.approx(1 - 51 / 2 / 255)


def test_ms_ssim_symmetric_and_full_scale_path() -> None:
    a = gradient_image(MS_SSIM_MIN_SIDE, 200)
    b = _noisy(a, 15)
    s = ms_ssim(a, b)
    assert s == pytest.approx(ms_ssim(b, a), abs=1e-9)
    assert 0.2 < s < 1.0


def test_ms_ssim_accepts_gray_arrays() -> None:
    a = gradient_image(20, 20, channels=0)
    assert a.ndim == 2
    assert ms_ssim(a, a) == pytest.approx(1.0)
    assert ms_ssim(a, _noisy(a, 40)) < 0.99
