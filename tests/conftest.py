"""Shared fixtures: generated images and tiny models (width 0.03, channels floored at 8).

The shipped default model is used by only a couple of small-image tests; everything else runs
on tiny networks written with ``zoo.save_weights`` into a session temp folder, so the suite
stays fast on two CPU cores and does not depend on how well the shipped model is trained.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from rnncodec import zoo
from rnncodec.frameworks import ModelConfig, RNNCompressor

torch.set_num_threads(1)

TINY_WIDTH = 0.03


def gradient_image(height: int, width: int, channels: int = 3, seed: int = 0,
                   dtype: type = np.uint8) -> np.ndarray:
    """Smooth colour gradients plus a little noise, as uint8 H×W×C (or H×W when channels=0)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    planes = [x, y, 0.5 * (x + y), 1 - x]
    c = max(channels, 1)
    a = np.stack([planes[i % 4] * rng.uniform(0.6, 1.0) for i in range(c)], axis=-1)
    a = np.clip(a * 255 + rng.normal(0, 6, a.shape), 0, 255).round().astype(np.uint8)
    if dtype is not np.uint8:
        a = a.astype(dtype)
    return a[..., 0] if channels == 0 else a


def build_tiny(cell: str = "residual-gru", framework: str = "residual-scaling",
               seed: int = 0) -> RNNCompressor:
    torch.manual_seed(seed)
    return RNNCompressor(ModelConfig(cell, framework, TINY_WIDTH))


def open_gates(net: RNNCompressor) -> RNNCompressor:
    """``net`` with its priming gates opened (random, not the zeros a new primed model starts
    from, under which priming changes nothing)."""
    if net.prime_gates is not None:
        with torch.no_grad():
            for g in net.prime_gates:
                g.uniform_(0.5, 1.5)
    return net


def primed(prime: int, seed: int = 0) -> RNNCompressor:
    """A tiny primed model with open gates."""
    torch.manual_seed(seed)
    return open_gates(RNNCompressor(ModelConfig(width=TINY_WIDTH, prime=prime)))


@pytest.fixture(scope="session")
def make_image() -> Callable[..., np.ndarray]:
    return gradient_image


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(models_dir: Path) -> str:
    """Path (as str) of a tiny residual-GRU / residual-scaling model named 'tiny'."""
    path = models_dir / "tiny.safetensors"
    zoo.save_weights(build_tiny(seed=0), path, name="tiny")
    return str(path)


@pytest.fixture(scope="session")
def psnr_model(models_dir: Path, tiny_model: str) -> str:
    """The tiny model's weights, saved as tuned for PSNR."""
    path = models_dir / "tiny-psnr.safetensors"
    zoo.save_weights(zoo.load_model(tiny_model).net, path, name="tiny-psnr", tune="psnr")
    return str(path)


@pytest.fixture(scope="session")
def other_model(models_dir: Path) -> str:
    """A second tiny model with different weights (and another cell and framework)."""
    path = models_dir / "other.safetensors"
    zoo.save_weights(build_tiny("gru", "additive", seed=1), path, name="tiny-other")
    return str(path)


@pytest.fixture(scope="session")
def rgb(make_image: Callable[..., np.ndarray]) -> np.ndarray:
    """A 40×56 RGB test image (padded to 48×64 inside the codec: 12 blocks)."""
    return make_image(40, 56, seed=3)


@pytest.fixture(scope="session")
def rnnc(rgb: np.ndarray, tiny_model: str) -> bytes:
    """The test image compressed with 6 iterations of the tiny model, without a filter, every
    block coded alike: the embedded bitstream, which may be cut after any chunk."""
    from rnncodec import codec

    return codec.compress(rgb, iterations=6, model=tiny_model, postfilter=False, adaptive=False)
