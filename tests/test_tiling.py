"""Tiled coding: the tile plan, round trips, agreement of encoder and decoder, the header field."""

from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gradient_image

from rnncodec import codec, engine, ratecontrol, tiling, zoo
from rnncodec.errors import FormatError
from rnncodec.format import Header, parse
from rnncodec.metrics import ms_ssim, psnr
from rnncodec.tiling import CONTEXT, SEAM, choose_tile, plan, spans


def _owners(width: int, height: int, tile: int) -> np.ndarray:
    """How many tiles own each block."""
    count = np.zeros((-(-height // 16), -(-width // 16)), int)
    for t in plan(width, height, tile):
        count[t.rows[0] + t.top:t.rows[1], t.cols[0] + t.left:t.cols[1]] += 1
    return count


# --- the plan -------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks, per", [(1, 4), (4, 4), (5, 4), (250, 32), (188, 32), (9, 4)])
def test_spans_are_even_and_cover(blocks: int, per: int) -> None:
    s = spans(blocks, per)
    assert s[0][0] == 0 and s[-1][1] == blocks
    assert all(a[1] == b[0] for a, b in itertools.pairwise(s))
    lengths = [b - a for a, b in s]
    assert max(lengths) <= per and max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("w, h, tile", [(200, 150, 64), (4000, 3000, 512), (17, 1000, 64),
                                        (768, 512, 256), (100, 100, 0)])
def test_every_block_has_one_owner_and_context_comes_first(w: int, h: int, tile: int) -> None:
    assert (_owners(w, h, tile) == 1).all()
    tiles = plan(w, h, tile)
    for t in tiles:
        assert t.top == min(CONTEXT, t.rows[0] + t.top) and t.left == min(CONTEXT,
                                                                          t.cols[0] + t.left)
        owned_rows = t.rows[1] - t.rows[0] - t.top
        assert owned_rows * 16 >= SEAM  # the next tile mixes into at most this many pixels
    # raster order: context blocks belong to tiles earlier in the list
    starts = [(t.rows[0] + t.top, t.cols[0] + t.left) for t in tiles]
    assert starts == sorted(starts)


def test_choose_tile() -> None:
    assert choose_tile(None, 768, 512) == 0  # Kodak-sized images stay untiled
    assert choose_tile(None, 4000, 3000) == tiling.DEFAULT_TILE
    assert choose_tile(1024, 768, 512) == 0  # one tile is plain coding
    assert choose_tile(256, 768, 512) == 256
    assert choose_tile(None, 768, 512, auto_pixels=1 << 18) == tiling.DEFAULT_TILE
    for bad in (16, 48, 100, 65536, -16):
        with pytest.raises(ValueError, match="multiple of 16"):
            choose_tile(bad, 768, 512)


def test_choose_tile_counts_whole_blocks_and_bounds_every_region() -> None:
    """Images are tiled by their area in whole blocks, so a thin image the networks would run
    over in millions of padded pixels is tiled too, and no side makes a region larger than
    MAX_REGION_PIXELS (the decoder refuses those)."""
    limit = tiling.MAX_REGION_PIXELS
    assert limit == tiling.AUTO_TILE_PIXELS
    thin = limit // 16 + 16  # one block row: fewer pixels than the limit, more once padded
    assert tiling.padded_pixels(thin, 1) > limit >= thin
    assert choose_tile(None, thin, 1) == tiling.DEFAULT_TILE
    assert choose_tile(None, limit // 16, 16) == 0  # exactly at the limit: whole
    with pytest.raises(ValueError, match=rf"cannot code an untiled image of {thin}×1 pixels "
                                         rf"\({thin}×16 in 16-pixel blocks\), more than"):
        choose_tile(0, thin, 1)
    with pytest.raises(ValueError, match="a 2048×2048 image in 2048-pixel tiles, whose regions"):
        choose_tile(2048, 2048, 2048)  # one tile: as large as untiled
    with pytest.raises(ValueError, match="in 4096-pixel tiles"):
        choose_tile(4096, 8000, 6000)
    assert choose_tile(1408, 8000, 6000) == 1408  # (1408 + 2 · 16)² pixels fit
    assert all(t.pixels <= limit for t in plan(8000, 6000, 1408))
    assert choose_tile(4096, 100_000, 64) == 4096  # regions 4128×64: far from the limit
    assert tiling.region_overflow(100_000, 64, 4096) is None


def test_regions_in_flight_stay_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    tiles = plan(4000, 3000, 512)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert engine._workers(tiles) == 4
        monkeypatch.setattr(engine, "MAX_REGION_PIXELS", 2 * max(t.pixels for t in tiles))
        assert engine._workers(tiles) == 2
        monkeypatch.setattr(engine, "MAX_REGION_PIXELS", 1)
        assert engine._workers(tiles) == 1  # one tile always runs
    finally:
        torch.set_num_threads(previous)


def test_progressive_decoding_of_a_large_tiled_file_in_bounded_memory(
        tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles whose regions together exceed the bound are decoded afresh for each iteration,
    tile by tile, instead of all held at once: the same images."""
    data = codec.compress(gradient_image(150, 200, seed=8), iterations=3, model=tiny_model,
                          tile=64)
    held = [np.asarray(i) for i in codec.decode_iterations(data, model=tiny_model)]
    monkeypatch.setattr(engine, "MAX_REGION_PIXELS", 96 * 96)  # one tile's region, not all
    calls = []
    real = engine.decode_pixels
    monkeypatch.setattr(engine, "decode_pixels", lambda *a, **k: calls.append(1) or real(*a, **k))
    afresh = [np.asarray(i) for i in codec.decode_iterations(data, model=tiny_model)]
    assert len(calls) == 3
    assert all(np.array_equal(a, b) for a, b in zip(held, afresh, strict=True))


# --- coding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w, channels", [(150, 200, 3), (97, 131, 3), (150, 200, 0)])
def test_tiled_round_trip(h: int, w: int, channels: int, tiny_model: str) -> None:
    a = gradient_image(h, w, channels=channels, seed=h + w)
    data = codec.compress(a, iterations=3, model=tiny_model, tile=64, adaptive=False)
    header = parse(data).header
    assert header.tile == 64 and data[4] == 2
    steps = list(codec.decode_iterations(data, model=tiny_model))
    assert len(steps) == 3
    for n, step in enumerate(steps, 1):
        assert step.size == (w, h) and step.mode == ("L" if channels == 0 else "RGB")
        # one tile at a time (decompress) and all tiles at once (decode_iterations) agree
        assert np.array_equal(np.asarray(codec.decompress(data, iterations=n, model=tiny_model)),
                              np.asarray(step))
        # and so does a file cut after n iterations
        cut = codec.truncate(data, iterations=n)
        assert np.array_equal(np.asarray(codec.decompress(cut, model=tiny_model)),
                              np.asarray(step))


def test_encoder_and_decoder_agree_when_tiled(tiny_model: str) -> None:
    """Tile after tile and all tiles in lockstep make the same codes and pixels, and those
    pixels are exactly what the decoder shows."""
    a = gradient_image(150, 200, seed=4)
    loaded = zoo.load_model(tiny_model)
    tiles = plan(200, 150, 64)
    steps = engine.encode_lockstep(loaded, a, tiles, keep_images=True)
    lockstep = [(c.copy(), img) for _, (c, img) in zip(range(4), steps, strict=False)]
    by_tile = list(engine.encode_by_tile(loaded, a, tiles, 4, keep_images=True))
    data = codec.compress(a, iterations=4, model=tiny_model, tile=64, coder="raw")
    for (c1, img1), (c2, img2), dec in zip(lockstep, by_tile,
                                           codec.decode_iterations(data, model=tiny_model),
                                           strict=True):
        assert np.array_equal(c1, c2) and np.array_equal(img1, img2)
        assert np.array_equal(img1, np.asarray(dec))


def test_tiles_encode_in_waves_to_the_same_codes_on_any_number_of_workers(
        tiny_model: str) -> None:
    a = gradient_image(200, 260, seed=5)
    loaded = zoo.load_model(tiny_model)
    tiles = plan(260, 200, 64)
    groups = tiling.waves(tiles)
    assert sorted(map(id, itertools.chain(*groups))) == sorted(map(id, tiles))
    rows, cols = ({t.rows[1] for t in tiles}, {t.cols[1] for t in tiles})
    assert len(rows) > 2 and len(cols) > 2 and len(groups) == len(rows) + len(cols) - 1
    lockstep = [c.copy() for _, (c, _) in zip(range(3), engine.encode_lockstep(
        loaded, a, tiles, keep_images=False), strict=False)]
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            by_tile = [c for c, _ in engine.encode_by_tile(loaded, a, tiles, 3, keep_images=False)]
            assert all(np.array_equal(x, y) for x, y in zip(lockstep, by_tile, strict=True))
    finally:
        torch.set_num_threads(previous)


def test_untiled_files_are_unchanged(rgb: np.ndarray, tiny_model: str) -> None:
    """tile=0 and a tile side that gives one tile write the plain version-1 file."""
    uniform = {"iterations": 2, "model": tiny_model, "adaptive": False}
    plain = codec.compress(rgb, **uniform)
    assert plain[4] == 1 and parse(plain).header.tile == 0
    assert codec.compress(rgb, tile=0, **uniform) == plain
    assert codec.compress(rgb, tile=64, **uniform) == plain  # 40×56


def test_tiled_rate_and_quality_targets(tiny_model: str) -> None:
    a = gradient_image(150, 200, seed=5)
    full = codec.compress(a, iterations=16, model=tiny_model, tile=64, coder="context",
                          adaptive=False)  # the targets' files are uniform
    bpp = codec.info(full).bpp_per_iteration
    budget = (bpp[2] + bpp[3]) / 2
    assert codec.compress(a, bpp=budget, model=tiny_model, tile=64, coder="context") == \
        codec.truncate(full, iterations=3)
    decoded = [np.asarray(s) for s in codec.decode_iterations(full, model=tiny_model)]
    goal = psnr(a, decoded[1]) - 1e-9
    data = codec.compress(a, psnr=goal, model=tiny_model, tile=64, coder="context")
    n = next(i for i, d in enumerate(decoded, 1) if psnr(a, d) >= goal)
    assert data == codec.truncate(full, iterations=n)
    seen: list[int] = []
    codec.compress(a, iterations=3, model=tiny_model, tile=64, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 3
    seen.clear()
    codec.decompress(full, iterations=5, model=tiny_model, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 5


def test_tiled_quality_is_close_to_whole_image() -> None:
    """The shipped model on a photo-like image cut into 3×2 tiles: no quality lost to tiling."""
    y, x = np.mgrid[0:256, 0:384] / 256
    texture = 40 * np.sin(9 * x + 5 * y)[..., None] * np.array([1.0, 0.6, -0.4])
    a = np.clip(gradient_image(256, 384, seed=1) * 0.7 + 40 + texture, 0, 255).astype(np.uint8)
    whole = codec.decompress(codec.compress(a, iterations=4, tile=0))
    tiled = codec.decompress(codec.compress(a, iterations=4, tile=128))
    assert psnr(a, np.asarray(tiled)) > psnr(a, np.asarray(whole)) - 0.2
    assert ms_ssim(a, np.asarray(tiled)) > ms_ssim(a, np.asarray(whole)) - 0.005


# --- the header field -----------------------------------------------------------------------


def _v2_header(tile: int) -> bytes:
    body = struct.pack(">4sBBIIBB", b"RNNC", 2, 0, 200, 150, 0, 4) + b"tiny" + bytes(16)
    body += struct.pack(">H", tile)
    return body + struct.pack(">I", zlib.crc32(body))


def test_tile_field_round_trip_and_layout() -> None:
    h = Header(200, 150, False, 0, "tiny", bytes(16), tile=64)
    raw = h.pack()
    assert raw == _v2_header(64)
    assert raw[4] == 2 and raw[36:38] == (64).to_bytes(2, "big")
    assert parse(raw).header == h and parse(raw).header_size == len(raw) == 42
    assert Header(200, 150, False, 0, "tiny", bytes(16)).pack()[4] == 1


@pytest.mark.parametrize("tile", [0, 16, 48, 65, 100, 65535])
def test_bad_tile_side_is_refused(tile: int) -> None:
    with pytest.raises(FormatError, match=f"bad tile side {tile} in header"):
        parse(_v2_header(tile))


def test_version_2_header_cut_short() -> None:
    with pytest.raises(FormatError, match="truncated inside the header"):
        parse(_v2_header(64)[:-3])


# --- the command line -----------------------------------------------------------------------


def test_cli_tile_option(tmp_path: Path, tiny_model: str) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from rnncodec.cli import main

    src = tmp_path / "in.png"
    Image.fromarray(gradient_image(150, 200, seed=6)).save(src)
    run = CliRunner().invoke
    r = run(main, ["compress", str(src), "-n", "2", "--tile", "64", "--model", tiny_model, "-q"])
    assert r.exit_code == 0, r.output
    assert parse((tmp_path / "in.rnnc").read_bytes()).header.tile == 64
    assert "tile       64" in run(main, ["info", str(tmp_path / "in.rnnc")]).output
    out = tmp_path / "out.png"
    r = run(main, ["decompress", str(tmp_path / "in.rnnc"), "-o", str(out), "--model", tiny_model,
                   "-q"])
    assert r.exit_code == 0 and Image.open(out).size == (200, 150)
    r = run(main, ["compress", str(src), "--tile", "100", "--model", tiny_model, "-f"])
    assert r.exit_code == 2 and "tile side must be 0 (no tiling) or a multiple of 16" in r.stderr


def test_adaptive_tiles_stop_their_own_blocks(tiny_model: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tile's blocks stop on their own; the decoder, tile by tile or all at once, shows
    what the encoder reconstructed, and context blocks an earlier tile stopped read as zeros
    in the next tile's decoder as in the encoder's."""
    monkeypatch.setattr(ratecontrol, "SEARCH_TRIALS", 1)  # blocks stop at the target itself
    a = gradient_image(97, 131, seed=8)
    arrived: list[np.ndarray] = []
    data = codec.compress(a, psnr=14.0, adaptive=True, model=tiny_model, tile=64,
                          on_iteration=lambda _, pixels: arrived.append(pixels.copy()))
    header = parse(data).header
    assert header.tile == 64 and data[4] == 4
    active = codec.info(data).active_per_iteration
    assert active is not None and 0 < active[-1] < 1
    decoded = list(codec.decode_iterations(data, model=tiny_model))
    assert len(decoded) == len(arrived) > 1
    for n, (pixels, image) in enumerate(zip(arrived, decoded, strict=True), 1):
        assert np.array_equal(pixels, np.asarray(image))
        assert np.array_equal(np.asarray(codec.decompress(data, iterations=n,
                                                          model=tiny_model)), pixels)


def test_adaptive_tiles_in_lockstep_and_one_by_one_agree(tiny_model: str) -> None:
    a = gradient_image(97, 131, seed=8)
    loaded = zoo.load_model(tiny_model)
    tiles = plan(131, 97, 64)
    steps = engine.encode_lockstep(loaded, a, tiles, keep_images=True, stop_db=14.0)
    lockstep = [(c.copy(), img) for _, (c, img) in zip(range(3), steps, strict=False)]
    by_tile = engine.encode_by_tile(loaded, a, tiles, 3, keep_images=True, stop_db=14.0)
    for (c1, img1), (c2, img2) in zip(lockstep, by_tile, strict=True):
        assert np.array_equal(c1, c2) and np.array_equal(img1, img2)
