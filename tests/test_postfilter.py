"""The per-image filter: its fit and quantization, its chunk in the file, and the codec's use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageFilter

from rnncodec import codec
from rnncodec import postfilter as filters
from rnncodec.cli import main
from rnncodec.errors import FormatError, ImageError
from rnncodec.format import FILTER_MARK, assemble, pack_chunk, parse
from rnncodec.metrics import ms_ssim, psnr


def _blurred(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(1.2)))


def _identity() -> filters.Filter:
    w = torch.zeros(3, 3, filters.KERNEL, filters.KERNEL)
    w[range(3), range(3), filters.KERNEL // 2, filters.KERNEL // 2] = 1
    return filters.quantize(w, torch.zeros(3))


@pytest.fixture(scope="module")
def photo_like(make_image) -> np.ndarray:
    """Texture a blur visibly softens (noise over gradients), large enough for five scales of
    MS-SSIM (the filter's least side)."""
    return make_image(filters.MIN_SIDE + 3, 176, seed=11)


@pytest.fixture(scope="module")
def big(make_image) -> np.ndarray:
    return make_image(filters.MIN_SIDE, 170, seed=3)


# --- the filter itself ----------------------------------------------------------------------


def test_identity_filter_changes_nothing(photo_like: np.ndarray) -> None:
    f = _identity()
    assert f.shift == 6 and f.weights.max() == 64  # 1.0 is 64 steps of 2⁻⁶: int8 holds ≤ 127
    assert np.array_equal(filters.apply(f, photo_like), photo_like)


def test_pack_round_trip_and_size() -> None:
    rng = np.random.default_rng(0)
    f = filters.Filter(rng.integers(-127, 128, (3, 3, 5, 5)).astype(np.int8),
                       np.array([-3, 0, 7], np.int8), 8)
    payload = f.pack()
    assert len(payload) == 2 + 225 + 3
    g = filters.Filter.unpack(payload)
    assert np.array_equal(g.weights, f.weights) and np.array_equal(g.bias, f.bias)
    assert g.shift == 8


@pytest.mark.parametrize("payload, message", [
    (b"", "too short"),
    (b"\x04\x07" + bytes(9 * 16 + 3), "kernel 4"),
    (b"\x05\x10" + bytes(228), "weight shift 16"),
    (b"\x05\x07" + bytes(227), "holds 229 bytes, not 230"),
    (b"\x03\x07" + bytes(9 * 9 + 4), "not 86"),
])
def test_bad_filter_payloads_are_format_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        filters.Filter.unpack(payload)


def test_quantize_picks_the_finest_step_that_holds_the_weights() -> None:
    w = torch.full((3, 3, 5, 5), 0.01)
    w[0, 0, 2, 2] = 0.9  # needs steps of 2⁻⁷ to fit in int8
    assert filters.quantize(w, torch.zeros(3)).shift == 7
    w[0, 0, 2, 2] = 0.45
    assert filters.quantize(w, torch.zeros(3)).shift == 8
    b = filters.quantize(w, torch.tensor([1.0, -0.5, 100.0])).bias
    assert b.tolist() == [8, -4, 127]  # eighths of a level, clamped to int8


def test_strips_give_the_same_pixels_as_one_pass(photo_like: np.ndarray,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    f = filters.fit(photo_like, _blurred(photo_like))
    whole = filters.apply(f, photo_like)
    monkeypatch.setattr(filters, "STRIP", 7)  # strips cut inside the filter's window
    assert np.array_equal(filters.apply(f, photo_like), whole)


def test_fit_undoes_part_of_a_blur(photo_like: np.ndarray) -> None:
    soft = _blurred(photo_like)
    f = filters.fit(photo_like, soft)
    sharp = filters.apply(f, soft)
    gain, before = filters.gain_db(f, photo_like, soft)
    assert gain > 0.5 and before > 0
    assert ms_ssim(photo_like, sharp) > ms_ssim(photo_like, soft)


def test_fit_is_deterministic_and_handles_flat_images(photo_like: np.ndarray) -> None:
    soft = _blurred(photo_like)
    a, b = filters.fit(photo_like, soft), filters.fit(photo_like, soft)
    assert a.pack() == b.pack()
    flat = np.full((filters.MIN_SIDE, filters.MIN_SIDE, 3), 90, np.uint8)
    f = filters.fit(flat, flat)
    assert np.array_equal(filters.apply(f, flat), flat)


def test_fit_sees_a_centred_crop_of_large_images(monkeypatch: pytest.MonkeyPatch,
                                                 photo_like: np.ndarray) -> None:
    monkeypatch.setattr(filters, "FIT_SIDE", 100)
    assert filters._crop(photo_like).shape == (100, 100, 3)
    assert np.array_equal(filters._crop(photo_like), photo_like[32:132, 38:138])


@pytest.mark.parametrize("gain, cost, bar, kept", [
    (0.2, 0.005, 18.0, True),    # 40 dB per bpp against the codes' 18
    (0.05, 0.005, 18.0, False),  # 10 against 18
    (0.0, 0.005, 18.0, False),
    (-0.1, 0.005, 18.0, False),
    (0.2, 0.005, float("inf"), False),  # a lossless image has nothing to gain
    (0.2, 0.005, float("nan"), False),
])
def test_worth(gain: float, cost: float, bar: float, kept: bool) -> None:
    assert filters.worth(gain, cost, bar) is kept


def test_the_bar_is_the_average_for_ms_ssim_and_the_last_iteration_for_psnr() -> None:
    assert filters.bar_for("ms-ssim", 18.0, 1.0, None, 0.125) == 18.0
    # 30 dB after 1 bpp, 29 before the last 0.125 bpp: 8 dB per bpp, not 30
    assert filters.bar_for("psnr", 30.0, 1.0, 29.0, 0.125) == 8.0
    with pytest.raises(ValueError, match="PSNR before the last iteration"):
        filters.bar_for("psnr", 30.0, 1.0, None, 0.125)


def test_psnr_fit_rounds_where_the_squared_error_grows_least(photo_like: np.ndarray) -> None:
    soft = _blurred(photo_like)
    f = filters.fit(photo_like, soft, "psnr")
    assert f.pack() == filters.fit(photo_like, soft, "psnr").pack()  # deterministic
    gain, before = filters.gain_db(f, photo_like, soft, "psnr")
    assert gain > 0.5 and before == psnr(photo_like, soft)
    o, d = filters._levels(photo_like), filters._levels(soft)
    w, b = filters._unpack(torch.linalg.solve(*filters._normal_equations(d, o)))
    nearest = filters.quantize(w, b)  # each weight alone to its nearest step
    assert f.shift == nearest.shift
    assert gain > filters.gain_db(nearest, photo_like, soft, "psnr")[0]
    # a strong deblurring filter (weights up to 3.5, steps of 2⁻⁵) keeps most of its gain
    exact = psnr(photo_like, _conv_levels(soft, w, b))  # the unrounded filter's
    assert gain > 0.6 * (exact - before)
    with pytest.raises(ValueError, match="no filter fit for 'ssim'"):
        filters.fit(photo_like, soft, "ssim")


def _conv_levels(rgb: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    y = filters._conv(filters._levels(rgb), w, b)[0]
    return y.round().clamp(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


# --- in the codec and the file ----------------------------------------------------------------


@pytest.fixture()
def always_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every fitted filter: whether one pays on an untrained model's image is chance."""
    monkeypatch.setattr(filters, "worth", lambda *a: True)


def test_filtered_file(big: np.ndarray, tiny_model: str, always_kept: None) -> None:
    plain = codec.compress(big, iterations=4, model=tiny_model, postfilter=False,
                           adaptive=False)
    data = codec.compress(big, iterations=4, model=tiny_model, postfilter=True,
                          adaptive=False)
    assert data[4] == 3 and plain[4] == 1  # version 3 only for a filter
    c = parse(data)
    assert c.chunks == parse(plain).chunks and c.filter is not None
    assert codec.info(data).filtered and not codec.info(plain).filtered
    assert codec.info(data).bytes == len(data) == c.size_after(4)
    unfiltered = np.asarray(codec.decompress(plain, model=tiny_model))
    decoded = np.asarray(codec.decompress(data, model=tiny_model))
    assert np.array_equal(decoded, filters.apply(filters.Filter.unpack(c.filter), unfiltered))
    frames = [np.asarray(i) for i in codec.decode_iterations(data, model=tiny_model)]
    assert np.array_equal(frames[-1], decoded)
    # fewer iterations: the networks' image, as without a filter
    for k in (1, 3):
        assert np.array_equal(frames[k - 1], np.asarray(
            codec.decompress(plain, iterations=k, model=tiny_model)))
        assert np.array_equal(np.asarray(codec.decompress(data, iterations=k, model=tiny_model)),
                              frames[k - 1])
        assert codec.truncate(data, iterations=k) == codec.truncate(plain, iterations=k)
    assert codec.truncate(data, iterations=4) == data


def test_file_cut_before_the_filter_is_the_unfiltered_image(big: np.ndarray, tiny_model: str,
                                                             always_kept: None) -> None:
    data = codec.compress(big, iterations=3, model=tiny_model, postfilter=True)
    cut = data[:len(data) - len(parse(data).filter) - 8]
    assert parse(cut).filter is None and len(parse(cut).chunks) == 3
    plain = codec.compress(big, iterations=3, model=tiny_model, postfilter=False)
    assert np.array_equal(np.asarray(codec.decompress(cut, model=tiny_model)),
                          np.asarray(codec.decompress(plain, model=tiny_model)))
    for n in range(len(cut) + 1, len(cut) + 4):  # inside its length: it could be anything
        with pytest.raises(FormatError, match="truncated inside iteration 4"):
            parse(data[:n])
    for n in range(len(cut) + 4, len(data)):
        with pytest.raises(FormatError, match="truncated inside the filter chunk"):
            parse(data[:n])


def test_filter_chunk_errors(big: np.ndarray, tiny_model: str, always_kept: None) -> None:
    data = codec.compress(big, iterations=2, model=tiny_model, postfilter=True,
                          adaptive=False)
    bad = bytearray(data)
    bad[-6] ^= 1  # inside the filter's payload
    with pytest.raises(FormatError, match="checksum mismatch in the filter chunk"):
        parse(bytes(bad))
    with pytest.raises(FormatError, match="data after the filter chunk"):
        parse(data + pack_chunk(2, b"x"))
    c = parse(data)
    spliced = assemble(c.header, c.chunks[:1], c.filter)  # a CRC made for 1 iteration: valid
    assert parse(spliced).filter == c.filter
    stale = spliced[:-len(c.filter) - 8] + data[-len(c.filter) - 8:]  # made for 2 iterations
    with pytest.raises(FormatError, match="checksum mismatch in the filter chunk"):
        parse(stale)
    with pytest.raises(FormatError, match="filter chunk before any iteration"):
        parse(c.header.pack(True) + pack_chunk(FILTER_MARK | 0, c.filter))
    # versions 1 and 2 know no filter: the marked length reads as a chunk past the end
    with pytest.raises(FormatError, match="truncated inside iteration 2"):
        parse(codec.truncate(data, iterations=1) + pack_chunk(FILTER_MARK | 1, c.filter))


def test_bad_filter_payload_is_refused_before_decoding(big: np.ndarray, tiny_model: str,
                                                       always_kept: None) -> None:
    c = parse(codec.compress(big, iterations=2, model=tiny_model, postfilter=True))
    broken = assemble(c.header, c.chunks, b"\x04\x07")
    with pytest.raises(FormatError, match="kernel 4"):
        codec.decompress(broken, model=tiny_model)
    with pytest.raises(FormatError, match="kernel 4"):
        next(codec.decode_iterations(broken, model=tiny_model))
    # a decode of fewer iterations never reads it
    codec.decompress(broken, iterations=1, model=tiny_model)


def test_filter_within_a_bpp_budget(big: np.ndarray, tiny_model: str, always_kept: None) -> None:
    pixels = big.shape[0] * big.shape[1]
    for bpp in (0.5, 1.5, 3.0):
        data = codec.compress(big, bpp=bpp, model=tiny_model, postfilter=True)
        assert len(data) * 8 <= bpp * pixels or codec.info(data).iterations == 1
        cut = codec.truncate(data, bpp=bpp)
        assert len(cut) * 8 <= bpp * pixels or len(parse(cut).chunks) == 1
    # the filter goes before an iteration does
    full = codec.compress(big, iterations=3, model=tiny_model, postfilter=True)
    budget = (len(full) - 1) * 8 / pixels
    cut = codec.truncate(full, bpp=budget)
    assert len(parse(cut).chunks) == 3 and parse(cut).filter is None


def test_filter_not_worth_it_leaves_the_file_as_it_was(big: np.ndarray, tiny_model: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filters, "worth", lambda *a: False)
    assert codec.compress(big, iterations=2, model=tiny_model, postfilter=True) == codec.compress(
        big, iterations=2, model=tiny_model, postfilter=False)


def test_tiled_and_gray_images_get_filters(make_image, tiny_model: str,
                                           always_kept: None) -> None:
    a = make_image(filters.MIN_SIDE + 10, 170, seed=5)
    data = codec.compress(a, iterations=2, model=tiny_model, tile=64, postfilter=True,
                          adaptive=False)
    c = parse(data)
    assert c.header.tile == 64 and c.filter is not None and data[4] == 3
    plain = codec.compress(a, iterations=2, model=tiny_model, tile=64, postfilter=False,
                           adaptive=False)
    assert np.array_equal(np.asarray(codec.decompress(data, model=tiny_model)), filters.apply(
        filters.Filter.unpack(c.filter), np.asarray(codec.decompress(plain, model=tiny_model))))
    gray = make_image(filters.MIN_SIDE, 164, channels=0, seed=6)
    data = codec.compress(gray, iterations=1, model=tiny_model, postfilter=True)
    img = codec.decompress(data, model=tiny_model)
    assert parse(data).filter is not None
    assert img.mode == "L" and img.size == (164, filters.MIN_SIDE)


def test_add_filter_gives_a_cut_file_the_filter_compress_would(big: np.ndarray, tiny_model: str,
                                                                always_kept: None) -> None:
    long = codec.compress(big, iterations=4, model=tiny_model, postfilter=True)
    for k in (1, 3):
        cut = codec.truncate(long, iterations=k)
        assert parse(cut).filter is None
        refit = codec.add_filter(cut, big, model=tiny_model)
        assert refit == codec.compress(big, iterations=k, model=tiny_model, postfilter=True)
        assert codec.add_filter(refit, big, model=tiny_model) == refit  # replaced, not added
        pixels = np.asarray(codec.decompress(cut, model=tiny_model))
        assert codec.add_filter(cut, big, model=tiny_model, decoded=pixels) == refit
    assert codec.add_filter(long, big, model=tiny_model) == long


def test_add_filter_takes_only_a_colour_files_pixels(big: np.ndarray, make_image,
                                                    tiny_model: str) -> None:
    data = codec.compress(big, iterations=1, model=tiny_model, postfilter=False)
    pixels = np.asarray(codec.decompress(data, model=tiny_model))
    for wrong in (pixels[:-1], pixels.astype(np.float32), pixels[..., 0]):
        with pytest.raises(ValueError, match="H×W×3 uint8"):
            codec.add_filter(data, big, model=tiny_model, decoded=wrong)
    gray = make_image(filters.MIN_SIDE, 164, channels=0, seed=6)
    data = codec.compress(gray, iterations=1, model=tiny_model, postfilter=False)
    with pytest.raises(ValueError, match="grayscale file"):
        codec.add_filter(data, gray, model=tiny_model, decoded=np.stack([gray] * 3, axis=-1))


def test_add_filter_refuses_another_image_and_skips_small_ones(big: np.ndarray, make_image,
                                                               tiny_model: str,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    data = codec.compress(big, iterations=1, model=tiny_model, postfilter=True)
    with pytest.raises(ImageError, match="the image is 170×160, the file 170×161"):
        codec.add_filter(data, big[:-1], model=tiny_model)
    monkeypatch.setattr(filters, "worth", lambda *a: False)  # not worth it: the plain file
    assert codec.add_filter(data, big, model=tiny_model) == codec.compress(
        big, iterations=1, model=tiny_model, postfilter=False)
    small = make_image(filters.MIN_SIDE - 1, 170, seed=2)
    plain = codec.compress(small, iterations=1, model=tiny_model, postfilter=True)
    assert codec.add_filter(plain, small, model=tiny_model) == plain


def test_small_images_are_not_filtered(make_image, tiny_model: str, always_kept: None) -> None:
    a = make_image(filters.MIN_SIDE - 1, 400, seed=1)
    assert parse(codec.compress(a, iterations=1, model=tiny_model, postfilter=True)).filter is None


def test_cli_filter_switch(big: np.ndarray, tiny_model: str, tmp_path, always_kept: None) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(big).save(src)
    runner = CliRunner()
    for flags, version in ((["--filter"], 3), (["--no-filter"], 1), ([], 1)):  # off by default
        out = tmp_path / f"{''.join(flags) or 'default'}.rnnc"
        r = runner.invoke(main, ["compress", str(src), "-o", str(out), "-n", "2", "--model",
                                 tiny_model, *flags, "--no-adaptive", "--quiet"])
        assert r.exit_code == 0, r.output
        assert out.read_bytes()[4] == version
        shown = runner.invoke(main, ["info", str(out)])
        assert f"filter     {version == 3}" in shown.output


def test_the_filter_is_opt_in_for_ms_ssim_models(big: np.ndarray, tiny_model: str,
                                                 always_kept: None) -> None:
    plain = codec.compress(big, iterations=2, model=tiny_model)
    assert plain == codec.compress(big, iterations=2, model=tiny_model, postfilter=False)
    assert parse(plain).filter is None


def test_gain_is_measured_on_the_crop_the_fit_saw(photo_like: np.ndarray,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Large images are judged on the fitted crop, so the filter's cost stays bounded; images
    no larger than the crop are judged whole, as before."""
    soft = _blurred(photo_like)
    f = filters.fit(photo_like, soft)
    whole = filters.gain_db(f, photo_like, soft)
    monkeypatch.setattr(filters, "FIT_SIDE", 100)
    crop = filters._crop
    assert filters.gain_db(f, photo_like, soft) == filters.gain_db(f, crop(photo_like),
                                                                   crop(soft)) != whole


# --- a PSNR-tuned model's filter ----------------------------------------------------------------


@pytest.fixture()
def bars(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every call of ``bar_for``, with the filter kept whatever the bar."""
    seen: list[tuple] = []
    real = filters.bar_for
    monkeypatch.setattr(filters, "bar_for", lambda *a: seen.append(a) or real(*a))
    monkeypatch.setattr(filters, "worth", lambda *a: True)
    return seen


@pytest.mark.parametrize("tile", [None, 64])
def test_psnr_tuned_models_fit_for_psnr_against_the_last_iteration(
        big: np.ndarray, psnr_model: str, bars: list[tuple], tile: int | None) -> None:
    data = codec.compress(big, iterations=3, model=psnr_model, tile=tile, postfilter=True)
    c = parse(data)
    cut = codec.compress(big, iterations=3, model=psnr_model, tile=tile, postfilter=False)
    images = [np.asarray(im) for im in codec.decode_iterations(cut, model=psnr_model)]
    assert c.filter == filters.fit(big, images[2], "psnr").pack()
    metric, quality, _, previous, last_bpp = bars[-1]
    assert metric == "psnr" and quality == psnr(big, images[2])
    assert previous == psnr(big, images[1])
    assert last_bpp == len(pack_chunk(2, c.chunks[2])) * 8 / big.shape[0] / big.shape[1]
    # add_filter judges it alike, with or without the pixels in hand
    assert codec.add_filter(cut, big, model=psnr_model) == data
    assert codec.add_filter(cut, big, model=psnr_model, decoded=images[2],
                            previous=images[1]) == data
    assert codec.add_filter(cut, big, model=psnr_model, decoded=images[2]) == data
    assert bars[-1] == bars[-2] == bars[-3] == bars[-4]


def test_one_iteration_psnr_filter_is_judged_against_the_decoders_grey(
        big: np.ndarray, psnr_model: str, bars: list[tuple]) -> None:
    codec.compress(big, iterations=1, model=psnr_model, postfilter=True)
    assert bars[-1][3] == psnr(big, np.full_like(big, 128))


def test_psnr_models_filter_by_default(big: np.ndarray, psnr_model: str, tmp_path,
                                       always_kept: None) -> None:
    filtered = codec.compress(big, iterations=2, model=psnr_model)
    assert filtered == codec.compress(big, iterations=2, model=psnr_model, postfilter=True)
    assert parse(codec.compress(big, iterations=2, model=psnr_model, postfilter=False)
                 ).filter is None
    src = tmp_path / "a.png"
    Image.fromarray(big).save(src)
    for flags, version in (([], 3), (["--no-filter"], 1)):
        out = tmp_path / f"{''.join(flags) or 'default'}.rnnc"
        r = CliRunner().invoke(main, ["compress", str(src), "-o", str(out), "-n", "2",
                                      "--model", psnr_model, "--no-adaptive", *flags, "--quiet"])
        assert r.exit_code == 0, r.output
        assert out.read_bytes()[4] == version
