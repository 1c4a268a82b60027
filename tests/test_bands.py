"""Row bands (bands.py, ``engine._banded``): a step run on bands is the whole step, bit for bit.

Step by step against the whole-image step (tensors, layouts and all) for every cell and
framework, the shipped model, odd and tiny sizes; the halo is exactly wide enough (a block less
breaks it); and files do not depend on the thread count or on bands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_WIDTH, gradient_image, open_gates

from rnncodec import bands, codec, engine, zoo
from rnncodec.defaults import BLOCK
from rnncodec.frameworks import ModelConfig, RNNCompressor
from rnncodec.images import to_tensor
from rnncodec.registry import CELL_NAMES, FRAMEWORKS


@pytest.fixture
def thin_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands wherever they give the whole step's results, paying off or not, so that smaller
    images split too."""
    monkeypatch.setattr(bands, "MAX_SHARE", 0.99)


@pytest.fixture
def threads() -> Iterator[Callable[[int], None]]:
    """Sets torch's threads (the bands a step may run on); restored afterwards."""
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


def _model(folder: Path, config: ModelConfig, seed: int = 0) -> zoo.LoadedModel:
    """A tiny random model, saved and loaded as the codec loads its models."""
    torch.manual_seed(seed)
    path = folder / f"{config.cell}-{config.framework}-{config.prime}.safetensors"
    zoo.save_weights(open_gates(RNNCompressor(config)), path)
    return zoo.load_model(str(path))


def _same(a: Any, b: Any) -> bool:
    """Whether two steps' results hold equal tensors, bit for bit, in the same layout."""
    found: list[bool] = []

    def check(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        found.append(torch.equal(x, y) and x.stride() == y.stride())
        return x

    bands._map(check, a, b)
    return bool(found) and all(found)


def _closed_loop(net: RNNCompressor, rgb: np.ndarray, iterations: int,
                 threads: int) -> list[Any]:
    """Every step's results over ``iterations`` of the closed loop, each step on up to
    ``threads`` bands (``engine._banded``)."""
    x = engine.nhwc(to_tensor(rgb))
    state = net.initial_state(x)
    out: list[Any] = []
    for _ in range(iterations):
        soft, state = engine._encode_soft(net, x, state, threads)
        out.append((soft, state.enc))
        state = engine._decode_step(net, engine.nhwc(torch.where(soft >= 0, 1.0, -1.0)), state,
                                    threads)
        out.append((state.recon, state.dec))
    return out


def _bands_used(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of bands of every step from now on."""
    used: list[int] = []
    real = bands.plan
    monkeypatch.setattr(bands, "plan", lambda *a: used.append(len(p := real(*a))) or p)
    return used


# --- where the bands are --------------------------------------------------------------------


@pytest.mark.parametrize("height, count, halo, least, last", [
    (16, 2, 48, 0, 16), (512, 2, 48, 64, 64), (512, 3, 32, 16, 32), (208, 4, 48, 0, 16),
    (1024, 8, 48, 176, 16), (96, 2, 16, 0, 16), (320, 3, 48, 176, 64), (592, 2, 48, 0, 1024)])
def test_bands_cover_each_row_once_and_run_over_their_halo_and_enough_rows(
        height: int, count: int, halo: int, least: int, last: int) -> None:
    split = bands.split(height, count, halo, least, last)
    assert [r for b in split for r in range(*b.own)] == list(range(height))
    assert 1 <= len(split) <= count
    for b in split:
        assert b.own[0] % BLOCK == 0 and b.own[1] % BLOCK == 0
        if len(split) > 1:
            assert least <= b.rows[1] - b.rows[0] <= bands.MAX_SHARE * height
    for b in split[:-1]:
        assert b.rows == (max(0, b.own[0] - halo), min(height, b.own[1] + halo))
    end = split[-1]
    assert end.rows[1] == height and end.rows[0] % last == 0
    assert max(0, end.own[0] - halo - last) < end.rows[0] + 1 <= max(1, end.own[0] - halo + 1)


def test_bands_only_where_they_pay_for_their_halo_and_run_as_the_whole() -> None:
    halo = 48
    assert len(bands.split(224, 2, halo)) == 1  # each would run over 160 of 224 rows
    assert len(bands.split(256, 2, halo)) == 2  # 176 of 256
    assert len(bands.split(256, 1, halo)) == 1  # one thread: never
    assert len(bands.split(256, 2, halo, least=192)) == 1
    assert len(bands.split(320, 3, halo, least=176)) == 2  # three would run over 144 rows
    assert len(bands.split(512, 2, halo, last=1024)) == 1  # the last band would be the whole
    shipped = zoo.load_model().net
    assert len(bands.plan(shipped, True, False, 512, 768, 2)) == 2  # a Kodak photo
    assert len(bands.plan(shipped, True, False, 768, 512, 2)) == 2  # and upright
    assert bands.align(768) == 64 and bands.align(1024) == 16 and bands.align(1008) == 1024


def test_the_halo_and_the_least_rows_follow_the_layers(tmp_path: Path) -> None:
    shipped = zoo.load_model().net
    assert (bands.halo(shipped, decoder=True), bands.halo(shipped, decoder=False)) == (48, 32)
    # without a gain estimator the encoder reads less; a primed first step reads further
    additive = _model(tmp_path, ModelConfig("lstm", "additive", TINY_WIDTH)).net
    assert bands.halo(additive, decoder=False) == 16
    primed = _model(tmp_path, ModelConfig(prime=2, width=TINY_WIDTH)).net
    assert bands.halo(primed, decoder=True, first=True) == 3 * 48
    assert bands.halo(primed, decoder=True) == 48
    # the decoder's first cell: 128 channels at 1/16 scale, over 20480 values in oneDNN
    assert bands.least_rows(shipped, True, 768) == 4 * BLOCK  # 4 rows of 48 × 128
    assert bands.least_rows(shipped, True, 256) == 11 * BLOCK  # 11 rows of 16 × 128
    assert bands.least_rows(shipped, False, 768) < bands.least_rows(shipped, True, 768)


# --- banded steps are the whole steps -------------------------------------------------------


@pytest.mark.parametrize("cell, framework", list(zip(CELL_NAMES, [*FRAMEWORKS, "one-shot"],
                                                     strict=True)))
def test_banded_steps_are_the_whole_steps_for_every_cell_and_framework(
        cell: str, framework: str, tmp_path: Path, thin_bands: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = _model(tmp_path, ModelConfig(cell, framework, TINY_WIDTH)).net
    rgb = gradient_image(570, 1020, seed=5)  # 576×1024 in blocks: two bands, just tall enough
    whole = _closed_loop(net, rgb, 2, threads=1)
    used = _bands_used(monkeypatch)
    assert _same(whole, _closed_loop(net, rgb, 2, threads=3))
    assert min(used) >= 2  # every step on bands


@pytest.mark.parametrize("height, width, count", [(16, 16, 1), (40, 56, 1), (512, 256, 3),
                                                  (501, 250, 3), (400, 500, 3)])
def test_banded_steps_are_the_whole_steps_for_any_size(
        height: int, width: int, count: int, thin_bands: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = zoo.load_model().net
    rgb = gradient_image(height, width, seed=6)
    whole = _closed_loop(net, rgb, 2, threads=1)
    used = _bands_used(monkeypatch)
    assert _same(whole, _closed_loop(net, rgb, 2, threads=3))
    assert max(used) == count


def test_banded_steps_are_the_whole_steps_for_a_primed_model(
        tmp_path: Path, thin_bands: None, monkeypatch: pytest.MonkeyPatch) -> None:
    net = _model(tmp_path, ModelConfig(width=TINY_WIDTH, prime=2)).net
    rgb = gradient_image(600, 1024, seed=7)
    whole = _closed_loop(net, rgb, 2, threads=1)
    used = _bands_used(monkeypatch)
    assert _same(whole, _closed_loop(net, rgb, 2, threads=2))
    assert min(used) == 2  # the first decoder step too, with three times the halo


def test_banded_steps_are_the_whole_steps_for_a_model_with_late_networks(
        tmp_path: Path, thin_bands: None) -> None:
    net = _model(tmp_path, ModelConfig(width=TINY_WIDTH, late_from=2)).net
    rgb = gradient_image(600, 1024, seed=7)
    assert _same(_closed_loop(net, rgb, 3, threads=1), _closed_loop(net, rgb, 3, threads=2))


@pytest.mark.parametrize("step", ["encoder", "decoder"])
def test_a_block_less_halo_changes_the_step(step: str, tmp_path: Path, thin_bands: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The halo is no wider than it must be: a block less, and the bands' own rows read zeros
    where the whole step reads pixels (the decoder from its second step, once the hidden
    state that its reset gates multiply is not zero)."""
    net = _model(tmp_path, ModelConfig(width=TINY_WIDTH)).net
    rgb = gradient_image(640, 1024, seed=8)
    whole = _closed_loop(net, rgb, 2, threads=1)
    real = bands.halo

    def narrow(n: RNNCompressor, decoder: bool, first: bool = False) -> int:
        return real(n, decoder, first) - BLOCK * (decoder == (step == "decoder"))

    used = _bands_used(monkeypatch)
    assert _same(whole, _closed_loop(net, rgb, 2, threads=2))
    monkeypatch.setattr(bands, "halo", narrow)
    assert not _same(whole, _closed_loop(net, rgb, 2, threads=2))
    assert set(used) == {2}


def test_bands_too_short_for_onednn_change_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``least_rows`` a band's first decoder cell runs on PyTorch's own kernels, which
    sum in another order than oneDNN's on the whole image (should PyTorch move its threshold,
    this fails, and ``ONEDNN_MIN_VALUES`` must follow)."""
    net = zoo.load_model().net
    rgb = gradient_image(320, 256, seed=9)
    whole = _closed_loop(net, rgb, 1, threads=1)
    used = _bands_used(monkeypatch)
    assert _same(whole, _closed_loop(net, rgb, 1, threads=3))
    monkeypatch.setattr(bands, "least_rows", lambda *a: 0)
    assert not _same(whole, _closed_loop(net, rgb, 1, threads=3))
    assert used == [3, 1, 3, 3]  # encoder, decoder: no decoder bands tall enough and paying


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the image is chosen so that AVX-512's steps of 64 values end "
                           "elsewhere; shorter vectors may end alike")
def test_a_last_band_off_the_vector_steps_changes_the_step(
        tmp_path: Path, thin_bands: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unless it starts where ``align`` says, the last band's tensors end in another number of
    values past whole vector steps, and the last pixels' sigmoids round differently."""
    net = _model(tmp_path, ModelConfig("gru", width=TINY_WIDTH)).net
    rgb = gradient_image(570, 1000, seed=5)  # 576×1008: the last band would start at 0
    whole = _closed_loop(net, rgb, 2, threads=1)
    used = _bands_used(monkeypatch)
    assert _same(whole, _closed_loop(net, rgb, 2, threads=3))
    assert set(used) == {1}
    monkeypatch.setattr(bands, "align", lambda width: BLOCK)
    assert not _same(whole, _closed_loop(net, rgb, 2, threads=3))
    assert min(used[4:]) >= 2


# --- files ----------------------------------------------------------------------------------


def test_files_and_pixels_do_not_depend_on_threads_or_bands(
        threads: Callable[[int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped model on a photo-sized image: 1 and 2 threads make the same file, which
    decodes to the same pixels with bands (also progressively) and on one thread without."""
    rgb = gradient_image(400, 500, seed=10)  # 400×512 in blocks
    used = _bands_used(monkeypatch)
    files = []
    for n in (1, 2):
        threads(n)
        files.append(codec.compress(rgb, iterations=2))
    assert max(used) == 2 and files[0] == files[1]
    used.clear()
    banded = [np.asarray(codec.decompress(files[0])),
              np.asarray(list(codec.decode_iterations(files[0]))[-1])]
    assert min(used) == 2
    threads(1)
    used.clear()
    plain = np.asarray(codec.decompress(files[0]))
    assert max(used) == 1
    assert all(np.array_equal(plain, b) for b in banded)


def test_a_wave_of_one_tile_runs_on_all_threads(
        tiny_model: str, threads: Callable[[int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles coded at once share the threads; a tile coded alone gets them all for its bands
    (too small for any here), and the file is the same."""
    rgb = gradient_image(100, 150, seed=11)  # 3 × 2 tiles of 64: waves of 1, 2, 2, 1
    asked: list[int] = []
    real = bands.plan
    monkeypatch.setattr(bands, "plan", lambda *a: asked.append(a[-1]) or real(*a))
    files = []
    for n in (1, 2):
        threads(n)
        asked.clear()
        files.append(codec.compress(rgb, iterations=1, model=tiny_model, tile=64))
    assert files[0] == files[1]
    # the encoder step alone (one iteration: its decoder step is never needed): two lone
    # tiles, four paired
    assert sorted(asked) == [1] * 4 + [2] * 2
