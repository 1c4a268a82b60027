"""The public codec API: compress / decompress / decode_iterations / truncate / info."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import build_tiny, gradient_image
from PIL import Image

import rnncodec
from rnncodec import codec, engine, ratecontrol, tiling, zoo
from rnncodec.codec import DEFAULT_ITERATIONS, Target
from rnncodec.errors import (
    ArgumentError,
    FormatError,
    ImageError,
    InputMissingError,
    ModelError,
    RnncError,
    RnncWarning,
)
from rnncodec.format import MAX_ITERATIONS, parse
from rnncodec.metrics import ms_ssim, psnr

# the coders a model without learned tables can use (the tiny test models have none)
CODERS = ("raw", "context", "best")


def _chunk_bytes(height: int, width: int) -> int:
    """Bytes per iteration with the raw coder: 32 bits per 16×16 block, plus length and CRC."""
    return 32 * math.ceil(height / 16) * math.ceil(width / 16) // 8 + 8


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(1, 1), (17, 33), (4000, 8), (8, 4000), (40, 56)])
def test_odd_sizes_round_trip(h: int, w: int, tiny_model: str) -> None:
    a = gradient_image(h, w, seed=h * w)
    raw = codec.compress(a, iterations=2, model=tiny_model, coder="raw", postfilter=False,
                         adaptive=False)
    assert len(raw) == parse(raw).header_size + 2 * _chunk_bytes(h, w)
    decoded = np.asarray(codec.decompress(raw, model=tiny_model))
    sizes = {}
    for coder in CODERS:
        data = raw if coder == "raw" else codec.compress(a, iterations=2, model=tiny_model,
                                                          coder=coder, postfilter=False,
                                                          adaptive=False)
        img = codec.decompress(data, model=tiny_model)
        assert img.size == (w, h) and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), decoded)  # the coder is lossless
        i = codec.info(data)
        assert (i.header.width, i.header.height) == (w, h)
        assert i.iterations == 2 and i.bytes == len(data)
        assert i.as_dict()["coder"] == coder
        assert len(i.coders) == 2 and (i.coders == [coder] * 2 or coder == "best")
        assert set(i.coders) <= {"raw", "context"}  # a model without a neural coder
        sizes[coder] = len(data)
    # best: one byte per iteration over the smaller single coder, at most
    assert sizes["best"] <= min(sizes["raw"], sizes["context"]) + 2


def test_public_api_is_exported() -> None:
    for name in ("compress", "decompress", "decode_iterations", "truncate", "info",
                 "load_model", "RnncError", "FormatError", "ModelError"):
        assert hasattr(rnncodec, name)
    assert rnncodec.compress is codec.compress and rnncodec.encode is codec.encode
    assert rnncodec.ArgumentError is ArgumentError and rnncodec.RnncWarning is RnncWarning


def test_compress_and_decompress_are_deterministic(
        rgb: np.ndarray, tiny_model: str) -> None:
    a = codec.compress(rgb, iterations=3, model=tiny_model)
    b = codec.compress(rgb, iterations=3, model=tiny_model)
    assert a == b
    d1 = np.asarray(codec.decompress(a, model=tiny_model))
    d2 = np.asarray(codec.decompress(a, model=tiny_model))
    assert np.array_equal(d1, d2)


def _mode_source(mode: str) -> Image.Image:
    rgb_img = Image.fromarray(gradient_image(20, 30, seed=5), "RGB")
    if mode == "I;16":
        return Image.fromarray(gradient_image(20, 30, channels=0).astype(np.uint16) * 257)
    if mode == "RGBA":
        return Image.fromarray(gradient_image(20, 30, channels=4), "RGBA")
    if mode == "P":
        return rgb_img.convert("P", palette=Image.ADAPTIVE)
    return rgb_img.convert(mode)


@pytest.mark.filterwarnings("ignore::rnncodec.errors.RnncWarning")  # the RGBA's alpha
@pytest.mark.parametrize("mode, decoded", [("RGB", "RGB"), ("RGBA", "RGB"), ("P", "RGB"),
                                           ("CMYK", "RGB"), ("YCbCr", "RGB"), ("L", "L"),
                                           ("1", "L"), ("LA", "L"), ("I;16", "L"), ("I", "L")])
def test_modes_decode_by_the_stated_rule(mode: str, decoded: str, tiny_model: str) -> None:
    src = _mode_source(mode)
    assert src.mode == mode
    data = codec.compress(src, iterations=1, model=tiny_model)
    img = codec.decompress(data, model=tiny_model)
    assert img.mode == decoded and img.size == (30, 20)
    assert codec.info(data).as_dict()["mode"] == decoded
    assert parse(data).header.gray == (decoded == "L")


@pytest.mark.filterwarnings("ignore::rnncodec.errors.RnncWarning")  # random alpha is dropped
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, bool])
@pytest.mark.parametrize("channels", [0, 1, 3, 4])
def test_numpy_inputs(dtype: type, channels: int, tiny_model: str) -> None:
    a = gradient_image(9, 21, channels=max(channels, 1), seed=channels)
    if channels == 0:
        a = a[..., 0]
    if dtype is np.uint16:
        a = a.astype(np.uint16) * 257
    elif dtype in (np.float32, np.float64):
        a = a.astype(dtype) / 255
    elif dtype is bool:
        a = a > 128
    data = codec.compress(a, iterations=1, model=tiny_model)
    img = codec.decompress(data, model=tiny_model)
    assert img.size == (21, 9)
    assert img.mode == ("L" if channels in (0, 1) else "RGB")


def test_paths_bytes_and_images_give_the_same_file(tmp_path: Path, rgb: np.ndarray,
                                                   tiny_model: str) -> None:
    path = tmp_path / "in.png"
    Image.fromarray(rgb).save(path)
    expected = codec.compress(rgb, iterations=2, model=tiny_model)
    for src in (path, str(path), path.read_bytes(), Image.open(path)):
        assert codec.compress(src, iterations=2, model=tiny_model) == expected
    rnnc = tmp_path / "in.rnnc"
    rnnc.write_bytes(expected)
    ref = np.asarray(codec.decompress(expected, model=tiny_model))
    for src in (rnnc, str(rnnc), bytearray(expected)):
        assert np.array_equal(np.asarray(codec.decompress(src, model=tiny_model)), ref)
        assert codec.info(src).iterations == 2


def test_missing_and_unreadable_inputs(tmp_path: Path, tiny_model: str) -> None:
    with pytest.raises(InputMissingError):
        codec.compress(tmp_path / "nope.png", model=tiny_model)
    with pytest.raises(InputMissingError):
        codec.compress(tmp_path, model=tiny_model)
    with pytest.raises(InputMissingError, match="no such file"):
        codec.decompress(tmp_path / "nope.rnnc")
    with pytest.raises(InputMissingError, match="directory"):
        codec.decompress(tmp_path)
    with pytest.raises(InputMissingError):
        codec.info(str(tmp_path / "nope.rnnc"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    with pytest.raises(ImageError):
        codec.compress(junk, model=tiny_model)
    with pytest.raises(FormatError, match="magic"):
        codec.decompress(junk, model=tiny_model)


def test_pixel_limits(tiny_model: str, rgb: np.ndarray) -> None:
    with pytest.raises(ImageError, match="exceeds"):
        codec.compress(rgb, iterations=1, model=tiny_model, max_pixels=100)
    data = codec.compress(rgb, iterations=1, model=tiny_model)
    with pytest.raises(FormatError, match="over the limit"):
        codec.decompress(data, model=tiny_model, max_pixels=100)


def test_images_too_large_to_code_whole_are_tiled_or_refused(tiny_model: str) -> None:
    """One block row of 131,088 pixels is 2,097,408 pixels once padded: over what the networks
    run on at once, so the encoder tiles it by default and refuses tile=0 before any work."""
    thin = np.zeros((1, 131_088, 3), np.uint8)
    with pytest.raises(ValueError, match="cannot code an untiled image of 131088×1 pixels"):
        codec.compress(thin, iterations=1, model=tiny_model, tile=0)
    data = codec.compress(thin, iterations=1, model=tiny_model, coder="raw")
    assert parse(data).header.tile == tiling.DEFAULT_TILE
    assert codec.decompress(data, model=tiny_model).size == (131_088, 1)


def test_progressive_decoding_and_progress_callbacks(rnnc: bytes, rgb: np.ndarray,
                                                     tiny_model: str) -> None:
    steps = list(codec.decode_iterations(rnnc, model=tiny_model))
    assert len(steps) == 6
    assert all(s.size == (rgb.shape[1], rgb.shape[0]) for s in steps)
    assert np.array_equal(np.asarray(steps[-1]), np.asarray(codec.decompress(rnnc,
                                                                            model=tiny_model)))
    assert np.array_equal(np.asarray(steps[2]),
                          np.asarray(codec.decompress(rnnc, iterations=3, model=tiny_model)))
    # asking for more iterations than stored is an error that says how many there are
    with pytest.raises(ArgumentError, match="asked for 50 iterations, but the file holds 6"):
        codec.decompress(rnnc, iterations=50, model=tiny_model)
    seen: list[int] = []
    codec.decompress(rnnc, iterations=4, model=tiny_model, progress=seen.append)
    assert seen == [1, 2, 3, 4]
    seen.clear()
    codec.compress(rgb, iterations=3, model=tiny_model, progress=seen.append)
    assert seen == [1, 2, 3]
    with pytest.raises(ValueError, match="at least 1"):
        codec.decompress(rnnc, iterations=0, model=tiny_model)


@pytest.mark.parametrize("tile", [0, 64])
def test_each_iteration_arrives_as_the_cut_file_and_its_decoded_pixels(
        tile: int, tiny_model: str) -> None:
    """What a viewer streams: after each kept iteration, the file cut there and the pixels a
    decoder makes of that cut (a bpp target keeps only the iterations within it)."""
    image = gradient_image(72, 100, seed=5)
    arrived: list[tuple[bytes, np.ndarray]] = []
    data = codec.compress(image, iterations=4, model=tiny_model, tile=tile,
                          on_iteration=lambda cut, pixels: arrived.append((cut, pixels.copy())))
    assert [cut for cut, _ in arrived] == [codec.truncate(data, iterations=k) for k in (1, 2, 3, 4)]
    for (_, pixels), decoded in zip(arrived, codec.decode_iterations(data, model=tiny_model),
                                    strict=True):
        assert np.array_equal(pixels, np.asarray(decoded))
    bpp = (len(codec.truncate(data, iterations=2)) * 8 + 1) / (72 * 100)
    cuts: list[bytes] = []
    kept = codec.compress(image, bpp=bpp, model=tiny_model, tile=tile,
                          on_iteration=lambda cut, _: cuts.append(cut))
    assert cuts[-1] == kept and len(cuts) == 2


@pytest.mark.parametrize("size", [(40, 56), (64, 64)])
def test_encoder_and_decoder_agree_bit_for_bit(size: tuple[int, int], make_image,
                                              tiny_model: str) -> None:
    """The closed loop: the encoder's reconstruction is exactly the decoder's, as floats (not
    only as pixels: a difference in the last bit rounds to a level apart somewhere). At 64×64
    the encoder's reconstruction once differed by 1e-7, laid out as its permuted image."""
    from rnncodec.engine import decode_tile, iterate_codes
    from rnncodec.images import to_array
    from rnncodec.tiling import plan

    rgb = make_image(*size, seed=3)
    loaded = zoo.load_model(tiny_model)
    steps = iterate_codes(loaded, rgb)
    maps, encoder_side = [], []
    for _ in range(6):
        codes, recon = next(steps)
        maps.append(codes.copy())
        encoder_side.append(recon.clone())
    tile = plan(rgb.shape[1], rgb.shape[0], 0)[0]
    for enc, dec in zip(encoder_side, decode_tile(loaded, tile, maps), strict=False):
        assert torch.equal(enc, dec)
    data = codec.compress(rgb, iterations=6, model=tiny_model, postfilter=False)
    for enc, dec in zip(encoder_side, codec.decode_iterations(data, model=tiny_model),
                        strict=True):
        assert np.array_equal(to_array(enc, *rgb.shape[:2]), np.asarray(dec))


# --- rate control ---------------------------------------------------------------------------


def test_fixed_iterations_and_default(rgb: np.ndarray, tiny_model: str) -> None:
    per_chunk = _chunk_bytes(*rgb.shape[:2])
    for n in (1, 5):
        data = codec.compress(rgb, iterations=n, model=tiny_model, coder="raw", postfilter=False,
                              adaptive=False)
        i = codec.info(data)
        assert i.iterations == n
        header = parse(data).header_size
        assert i.bpp_per_iteration == pytest.approx(
            [(header + k * per_chunk) * 8 / rgb.shape[0] / rgb.shape[1] for k in range(1, n + 1)])
    assert codec.info(codec.compress(rgb, model=tiny_model)).iterations == DEFAULT_ITERATIONS
    assert Target().max_iterations == DEFAULT_ITERATIONS == 16


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("bpp", [0.3, 0.5, 1.0, 2.5])
def test_bpp_target_is_the_most_iterations_within_budget(bpp: float, coder: str, rgb: np.ndarray,
                                                         tiny_model: str) -> None:
    pixels = rgb.shape[0] * rgb.shape[1]
    data = codec.compress(rgb, bpp=bpp, model=tiny_model, coder=coder, postfilter=False)
    n = codec.info(data).iterations
    assert n >= 1
    assert len(data) * 8 <= bpp * pixels or n == 1
    assert n > 1 or bpp < 1  # the larger budgets do hold several iterations
    longer = codec.compress(rgb, iterations=n + 1, model=tiny_model, coder=coder,
                            postfilter=False, adaptive=False)
    assert len(longer) * 8 > bpp * pixels  # one more iteration would exceed it
    assert longer.startswith(data)  # embedded: the bpp file is a prefix of the longer one


def test_bpp_target_too_small_keeps_one_iteration(rgb: np.ndarray, tiny_model: str) -> None:
    data = codec.compress(rgb, bpp=0.01, model=tiny_model, coder="raw")
    assert codec.info(data).iterations == 1
    assert len(data) * 8 > 0.01 * rgb.shape[0] * rgb.shape[1]


def test_bpp_target_is_capped_at_max_iterations(tiny_model: str) -> None:
    a = gradient_image(16, 16)
    data = codec.compress(a, bpp=1000, model=tiny_model)
    assert (codec.info(data).iterations == codec.DEFAULT_ITERATIONS
            == Target(bpp=1000).max_iterations)


def _quality_curve(a: np.ndarray, metric, tiny_model: str) -> list[float]:
    data = codec.compress(a, iterations=codec.DEFAULT_ITERATIONS, model=tiny_model)
    return [metric(a, np.asarray(im)) for im in codec.decode_iterations(data, model=tiny_model)]


@pytest.mark.parametrize("name, metric", [("psnr", psnr), ("ms_ssim", ms_ssim)])
def test_quality_target_is_the_first_iteration_reaching_it(name: str, metric,
                                                           tiny_model: str) -> None:
    """With the real metric and thresholds taken from the quality curve itself, compress stops
    at the first iteration reaching the threshold; an unreachable one uses every iteration."""
    a = gradient_image(24, 40, seed=2)
    curve = _quality_curve(a, metric, tiny_model)
    for t in sorted(set(curve))[-3:] + [min(curve)]:
        data = codec.compress(a, model=tiny_model, **{name: t})
        first = next(j for j, q in enumerate(curve) if q >= t) + 1
        assert codec.info(data).iterations == first, (t, curve)
        decoded = np.asarray(codec.decompress(data, model=tiny_model))
        assert metric(a, decoded) >= t
    unreachable = 99.0 if name == "psnr" else 0.999999
    assert max(curve) < unreachable
    data = codec.compress(a, model=tiny_model, **{name: unreachable})
    assert codec.info(data).iterations == codec.DEFAULT_ITERATIONS


@pytest.mark.parametrize("name", ["psnr", "ms_ssim"])
def test_quality_target_stops_at_the_fewest_iterations(name: str, rgb: np.ndarray,
                                                       tiny_model: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted metric that improves with every call: compress must stop at the first
    iteration whose decoded image scores at least the target, and score exactly what the
    decoder will show after that iteration."""
    seen: list[np.ndarray] = []
    real = psnr if name == "psnr" else ms_ssim

    def scripted(original: np.ndarray, decoded: np.ndarray) -> float:
        assert np.array_equal(original, rgb)
        seen.append(decoded.copy())
        return 10.0 * len(seen) if name == "psnr" else 1 - 0.5 ** len(seen)

    monkeypatch.setattr(ratecontrol, name, scripted)
    target = 35.0 if name == "psnr" else 0.9  # reached on the 4th call
    data = codec.compress(rgb, model=tiny_model, **{name: target})
    monkeypatch.setattr(ratecontrol, name, real)
    assert codec.info(data).iterations == 4 == len(seen)
    decoded = [np.asarray(im) for im in codec.decode_iterations(data, model=tiny_model)]
    assert all(np.array_equal(x, y) for x, y in zip(seen, decoded, strict=True))


def test_quality_target_on_gray_image_uses_the_gray_image(tiny_model: str) -> None:
    g = gradient_image(20, 20, channels=0)
    data = codec.compress(g, psnr=1.0, model=tiny_model)
    assert codec.info(data).iterations == 1
    img = codec.decompress(data, model=tiny_model)
    assert img.mode == "L" and psnr(g, np.asarray(img)) >= 1.0


@pytest.mark.parametrize("kw, match", [
    ({"iterations": 0}, "iterations"), ({"iterations": MAX_ITERATIONS + 1}, "iterations"),
    ({"bpp": 0}, "bpp"), ({"bpp": -1}, "bpp"), ({"bpp": float("nan")}, "bpp"),
    ({"ms_ssim": 0}, "ms_ssim"), ({"ms_ssim": 1}, "ms_ssim"), ({"ms_ssim": 1.5}, "ms_ssim"),
    ({"psnr": 0}, "psnr"), ({"psnr": -3}, "psnr"), ({"psnr": float("nan")}, "psnr"),
    ({"iterations": 3, "bpp": 1.0}, "only one"), ({"bpp": 1.0, "psnr": 30}, "only one"),
    ({"ms_ssim": 0.9, "psnr": 30}, "only one"),
])
def test_target_validation(kw: dict, match: str, rgb: np.ndarray, tiny_model: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        Target(**kw)
    with pytest.raises(ArgumentError, match=match):
        codec.compress(rgb, model=tiny_model, **kw)


def test_target_limits() -> None:
    assert Target(iterations=MAX_ITERATIONS).max_iterations == MAX_ITERATIONS
    assert Target(psnr=30).max_iterations == codec.DEFAULT_ITERATIONS
    assert Target(ms_ssim=0.9).max_iterations == codec.DEFAULT_ITERATIONS


def test_unknown_coder(rgb: np.ndarray, tiny_model: str) -> None:
    with pytest.raises(ArgumentError, match="unknown entropy coder"):
        codec.compress(rgb, iterations=1, model=tiny_model, coder="huffman")


# --- models ---------------------------------------------------------------------------------


def test_file_from_another_model_is_refused(rgb: np.ndarray, tiny_model: str,
                                            other_model: str, tmp_path: Path) -> None:
    data = codec.compress(rgb, iterations=2, model=tiny_model)
    assert parse(data).header.model == "tiny"
    with pytest.raises(ModelError, match=r"made by model 'tiny'.*not by 'tiny-other'"):
        codec.decompress(data, model=other_model)
    with pytest.raises(ModelError, match=r"made by model 'tiny'.*not by 'rgru-rs-w25'"):
        codec.decompress(data, model=zoo.DEFAULT_MODEL)
    # the header names a model that is not installed: decompress says which
    with pytest.raises(ModelError, match="'tiny', which is not installed"):
        codec.decompress(data)
    # same name, different weights: refused by the weights hash
    impostor = tmp_path / "impostor.safetensors"
    zoo.save_weights(build_tiny(seed=99), impostor, name="tiny")
    with pytest.raises(ModelError, match=r"'tiny' \(weights [0-9a-f]{12}\)"):
        codec.decompress(data, model=str(impostor))
    # and the other direction
    other = codec.compress(rgb, iterations=1, model=other_model)
    with pytest.raises(ModelError, match="tiny-other"):
        codec.decompress(other, model=tiny_model)


def test_missing_model_for_compress(rgb: np.ndarray) -> None:
    with pytest.raises(ModelError, match="unknown model"):
        codec.compress(rgb, iterations=1, model="no-such-model")


def test_default_model_round_trip_small_images() -> None:
    """The shipped model works end to end (its quality is not tested here)."""
    a = gradient_image(24, 20, seed=11)
    data = codec.compress(a, iterations=2)
    h = parse(data).header
    assert h.model == zoo.DEFAULT_MODEL and h.digest == zoo.load_model().digest
    img = codec.decompress(data)  # the model named in the header
    assert img.size == (20, 24) and img.mode == "RGB"
    g = codec.decompress(codec.compress(a[..., 0], iterations=1))
    assert g.size == (20, 24) and g.mode == "L"


# --- truncate and info ----------------------------------------------------------------------


def test_truncate_by_iterations_and_bpp(rnnc: bytes, rgb: np.ndarray, tiny_model: str,
                                        tmp_path: Path) -> None:
    c = parse(rnnc)
    pixels = rgb.shape[0] * rgb.shape[1]
    three = codec.truncate(rnnc, iterations=3)
    assert three == rnnc[: c.size_after(3)]
    assert codec.truncate(rnnc, iterations=100) == rnnc
    assert np.array_equal(np.asarray(codec.decompress(three, model=tiny_model)),
                          np.asarray(codec.decompress(rnnc, iterations=3, model=tiny_model)))
    for bpp in (0.4, 0.6, 1.0):
        cut = codec.truncate(rnnc, bpp=bpp)
        n = len(parse(cut).chunks)
        assert len(cut) * 8 <= bpp * pixels or n == 1
        assert n == len(c.chunks) or c.size_after(n + 1) * 8 > bpp * pixels
        # the same as compressing to that bpp directly (the stream is embedded)
        assert cut == codec.compress(rgb, bpp=bpp, model=tiny_model,
                                     postfilter=False)[: len(cut)]
    assert len(parse(codec.truncate(rnnc, bpp=0.001)).chunks) == 1
    path = tmp_path / "f.rnnc"
    path.write_bytes(rnnc)
    assert codec.truncate(path, iterations=2) == rnnc[: c.size_after(2)]


@pytest.mark.parametrize("kw", [{}, {"iterations": 2, "bpp": 1.0}, {"iterations": 0}])
def test_truncate_argument_errors(kw: dict, rnnc: bytes) -> None:
    with pytest.raises(ArgumentError):
        codec.truncate(rnnc, **kw)


@pytest.mark.parametrize("call, match", [
    (lambda a, f, m: codec.compress(a, iterations=1, model=m, effort=-1), "effort"),
    (lambda a, f, m: codec.compress(a, iterations=1, model=m, tile=17), "tile side"),
    (lambda a, f, m: codec.compress(a, iterations=1, model=m, coder="zip"), "unknown entropy"),
    (lambda a, f, m: codec.compress(a, iterations=1, bpp=1.0, model=m), "only one"),
    (lambda a, f, m: codec.decompress(f, iterations=0, model=m), "at least 1"),
    (lambda a, f, m: codec.decompress(f, iterations=7, model=m),
     "asked for 7 iterations, but the file holds 6 iterations"),
    (lambda a, f, m: codec.truncate(f), "exactly one"),
    (lambda a, f, m: codec.add_filter(f, a, model=m, decoded=a[..., 0]), "decoded pixels"),
], ids=["effort", "tile", "coder", "targets", "zero", "more than held", "truncate",
        "add_filter"])
def test_argument_errors_are_rnnc_errors(call, match: str, rgb: np.ndarray, rnnc: bytes,
                                         tiny_model: str) -> None:
    """Bad arguments raise ArgumentError: an RnncError (exit status 2 on the command line) that
    is also the ValueError such mistakes always were."""
    with pytest.raises(ArgumentError, match=match) as e:
        call(rgb, rnnc, tiny_model)
    assert isinstance(e.value, RnncError) and isinstance(e.value, ValueError)
    assert e.value.exit_code == 2


def test_a_cut_file_gives_its_complete_iterations_when_allowed(rnnc: bytes,
                                                                tiny_model: str) -> None:
    """Cut inside iteration 5 (as an interrupted download leaves it): refused by default;
    with allow_cut, the 4 complete iterations decode as a file of 4 would, and info, truncate
    and decode_iterations agree on them."""
    whole = parse(rnnc)
    cut = rnnc[:whole.size_after(4) + 7]
    with pytest.raises(FormatError, match="truncated inside iteration 5"):
        codec.decompress(cut, model=tiny_model)
    with pytest.raises(FormatError, match="truncated inside iteration 5"):
        codec.info(cut)
    i = codec.info(cut, allow_cut=True)
    assert i.iterations == 4 and i.cut == "file truncated inside iteration 5"
    assert i.as_dict()["cut"] == i.cut and codec.info(rnnc).as_dict()["cut"] is None
    four = np.asarray(codec.decompress(rnnc, iterations=4, model=tiny_model))
    assert np.array_equal(np.asarray(codec.decompress(cut, model=tiny_model, allow_cut=True)),
                          four)
    steps = list(codec.decode_iterations(cut, model=tiny_model, allow_cut=True))
    assert len(steps) == 4 and np.array_equal(np.asarray(steps[-1]), four)
    assert codec.truncate(cut, iterations=9, allow_cut=True) == rnnc[:whole.size_after(4)]
    with pytest.raises(ArgumentError, match="holds 4 complete iterations"):
        codec.decompress(cut, iterations=5, model=tiny_model, allow_cut=True)
    with pytest.raises(FormatError, match="truncated inside iteration 1"):  # nothing complete
        codec.decompress(rnnc[:whole.size_after(0) + 3], model=tiny_model, allow_cut=True)


def test_encode_reports_the_quality_reached(rgb: np.ndarray, tiny_model: str) -> None:
    """For a quality target, encode says what the decoded file reaches on that metric (also
    when the target is out of reach and the loop stops at the most iterations)."""
    for kw, key in (({"psnr": 12.0}, "psnr"), ({"ms_ssim": 0.5}, "ms_ssim"),
                    ({"psnr": 99.0}, "psnr")):
        result = codec.encode(rgb, model=tiny_model, **kw)
        assert result.data == codec.compress(rgb, model=tiny_model, **kw)
        assert result.iterations == codec.info(result.data).iterations
        decoded = np.asarray(codec.decompress(result.data, model=tiny_model))
        measure = psnr if key == "psnr" else ms_ssim
        assert getattr(result, key) == pytest.approx(measure(rgb, decoded), abs=1e-6)
        other = "ms_ssim" if key == "psnr" else "psnr"
        assert getattr(result, other) is None
    assert result.iterations == DEFAULT_ITERATIONS and result.psnr < 99
    plain = codec.encode(rgb, iterations=2, model=tiny_model)
    assert plain.ms_ssim is None and plain.psnr is None and plain.iterations == 2


def test_dropped_transparency_is_a_warning(tiny_model: str) -> None:
    a = gradient_image(20, 24, channels=4)
    a[..., 3] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codec.compress(a, iterations=1, model=tiny_model)  # opaque: nothing is lost
    a[3, 5, 3] = 0
    with pytest.warns(RnncWarning, match="transparency is dropped"):
        codec.compress(a, iterations=1, model=tiny_model)
    p = Image.fromarray(a[..., :3]).convert("P", palette=Image.ADAPTIVE)
    p.info["transparency"] = int(np.asarray(p)[0, 0])
    with pytest.warns(RnncWarning, match="transparency"):
        codec.compress(p, iterations=1, model=tiny_model)


def test_truncate_refuses_corrupt_input(rnnc: bytes) -> None:
    with pytest.raises(FormatError):
        codec.truncate(rnnc[:-3], iterations=1)


def test_info(rnnc: bytes, rgb: np.ndarray, tiny_model: str) -> None:
    i = codec.info(rnnc)
    d = i.as_dict()
    assert d["width"] == rgb.shape[1] and d["height"] == rgb.shape[0]
    assert d["mode"] == "RGB" and d["model"] == "tiny" and d["coder"] == "best"
    assert d["weights"] == zoo.load_model(tiny_model).digest.hex()
    assert d["iterations"] == 6 and d["bytes"] == len(rnnc)
    assert d["bpp"] == pytest.approx(len(rnnc) * 8 / (rgb.shape[0] * rgb.shape[1]))
    assert d["bpp_per_iteration"] == sorted(d["bpp_per_iteration"])
    assert len(d["bpp_per_iteration"]) == 6


def test_decoded_image_saves_as_png(rnnc: bytes, tiny_model: str) -> None:
    buf = io.BytesIO()
    codec.decompress(rnnc, model=tiny_model).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).size == (56, 40)


def test_iterating_codes_leaves_gradients_on_in_the_caller(tiny_model: str) -> None:
    """A generator suspended inside inference mode would switch autograd off for its caller."""
    import torch


    steps = engine.iterate_codes(zoo.load_model(tiny_model), gradient_image(16, 16))
    codes, _ = next(steps)
    assert codes.shape == (32, 1, 1)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_a_primed_model_decodes_what_its_encoder_reconstructed(models_dir: Path,
                                                                rgb: np.ndarray) -> None:
    """Priming runs inside the decoder step both sides share: the encoder's closed loop and
    the decoder agree, tiled or not (a plain model refuses the file: test_zoo's digest test)."""
    from conftest import primed

    from rnncodec.engine import iterate_codes
    from rnncodec.images import to_array

    path = models_dir / "primed.safetensors"
    zoo.save_weights(primed(2), path, name="primed")
    model = zoo.load_model(str(path))
    _, recon = next(iterate_codes(model, rgb))
    data = codec.compress(rgb, iterations=1, model=str(path), tile=0)
    decoded = np.asarray(codec.decompress(data, model=str(path)))
    np.testing.assert_array_equal(decoded, to_array(recon, *rgb.shape[:2]))
    tiled = codec.compress(rgb, iterations=2, model=str(path), tile=64)
    assert np.asarray(codec.decompress(tiled, model=str(path))).shape == rgb.shape


def test_a_model_with_late_networks_decodes_what_its_encoder_reconstructed(
        models_dir: Path, rgb: np.ndarray) -> None:
    """Both sides count the iterations to pick the networks: the decoder follows the
    encoder's closed loop, and both the model's own forward pass."""
    import torch
    from conftest import TINY_WIDTH

    from rnncodec.engine import iterate_codes
    from rnncodec.frameworks import ModelConfig, RNNCompressor
    from rnncodec.images import to_array, to_tensor

    torch.manual_seed(0)  # late networks drawn apart from the early ones
    net = RNNCompressor(ModelConfig(width=TINY_WIDTH, late_from=2))
    path = models_dir / "late.safetensors"
    zoo.save_weights(net, path)
    model = zoo.load_model(str(path))
    assert model.net.config == net.config
    steps = iterate_codes(model, rgb)
    recons = [to_array(next(steps)[1], *rgb.shape[:2]) for _ in range(3)]
    data = codec.compress(rgb, iterations=3, model=str(path), tile=0, adaptive=False)
    np.testing.assert_array_equal(np.asarray(codec.decompress(data, model=str(path))), recons[2])
    with torch.no_grad():
        forward = to_array(model.net.float()(to_tensor(rgb), 3, False)[2], *rgb.shape[:2])
    assert np.abs(forward.astype(int) - recons[2]).max() <= 1


# --- adaptive rates (format version 4) --------------------------------------------------------

STOP_DB = 14.0  # where the tiny model's blocks of ``rgb`` part: some stop after iteration 1


@pytest.fixture()
def no_threshold_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adaptive files stop blocks at the PSNR target itself: the tiny model's images never
    reach one, which would send the encoder searching for a threshold that does."""
    monkeypatch.setattr(ratecontrol, "SEARCH_TRIALS", 1)


def _adaptive(image: np.ndarray, model: str, **kw: object) -> tuple[bytes, list[np.ndarray]]:
    """An adaptive file and the encoder's pixels after each of its iterations."""
    arrived: list[np.ndarray] = []
    kw.setdefault("psnr", STOP_DB)
    data = codec.compress(image, adaptive=True, model=model,
                          on_iteration=lambda _, pixels: arrived.append(pixels.copy()), **kw)
    return data, arrived


def test_adaptive_files_decode_to_the_encoders_reconstruction(rgb: np.ndarray,
                                                              tiny_model: str,
                                                              no_threshold_search: None) -> None:
    data, arrived = _adaptive(rgb, tiny_model)
    active = codec.info(data).active_per_iteration
    assert data[4] == 4 and active is not None and len(active) == len(arrived)
    assert active[0] == 1 and 0 < active[-1] < 1 and active == sorted(active, reverse=True)
    decoded = list(codec.decode_iterations(data, model=tiny_model))
    assert len(decoded) == len(arrived)
    for k, (pixels, image) in enumerate(zip(arrived, decoded, strict=True), 1):
        assert np.array_equal(pixels, np.asarray(image)), k
        cut = codec.truncate(data, iterations=k)  # every iteration boundary is a valid cut
        assert cut[4] == 4 and codec.info(cut).active_per_iteration == active[:k]
        assert np.array_equal(np.asarray(codec.decompress(cut, model=tiny_model)), pixels)
    assert np.array_equal(np.asarray(codec.decompress(data, model=tiny_model)), arrived[-1])


def test_stopped_blocks_save_bits(rgb: np.ndarray, tiny_model: str,
                                  no_threshold_search: None) -> None:
    data, arrived = _adaptive(rgb, tiny_model, coder="raw")
    uniform = codec.compress(rgb, iterations=len(arrived), model=tiny_model, coder="raw")
    assert len(data) < len(uniform)


def test_an_adaptive_file_without_stops_is_the_uniform_one_plus_empty_maps(
        rgb: np.ndarray, tiny_model: str) -> None:
    """Nothing stops at 40 dB (-n's threshold) under the tiny model: each chunk is the uniform
    file's payload after a zero map length, and the pixels are the same."""
    adaptive = codec.compress(rgb, iterations=3, adaptive=True, model=tiny_model)
    uniform = codec.compress(rgb, iterations=3, adaptive=False, model=tiny_model)
    assert parse(adaptive).chunks == [bytes(4) + c for c in parse(uniform).chunks]
    assert np.array_equal(np.asarray(codec.decompress(adaptive, model=tiny_model)),
                          np.asarray(codec.decompress(uniform, model=tiny_model)))


@pytest.mark.parametrize("tune", ["ms-ssim", "psnr"])
def test_iterations_are_coded_adaptively_by_default(tune: str, rgb: np.ndarray, tiny_model: str,
                                                    psnr_model: str) -> None:
    """On for every model coding a number of iterations (one encode, blocks stopping at
    40 dB); off for targets, whose threshold searches take several encodes."""
    model = psnr_model if tune == "psnr" else tiny_model

    def version(**kw: Any) -> int:
        return codec.compress(rgb, postfilter=False, model=model, **kw)[4]

    assert version(iterations=2) == 4
    assert version() == 4
    assert codec.compress(rgb, iterations=2, model=model) == codec.compress(
        rgb, iterations=2, model=model, adaptive=True)
    assert version(iterations=2, adaptive=False) == 1
    assert version(psnr=1.0) == 1
    assert version(bpp=0.2) == 1
    assert version(ms_ssim=0.5) == 1
    assert version(psnr=1.0, adaptive=True) == 4


def test_adaptive_psnr_target_stops_blocks_at_the_target(rgb: np.ndarray,
                                                         tiny_model: str) -> None:
    """A target every block reaches after one iteration ends the file there."""
    e = codec.encode(rgb, psnr=1.0, adaptive=True, model=tiny_model)
    assert e.iterations == 1 and e.psnr is not None and e.psnr >= 1.0


def test_adaptive_rate_and_ms_ssim_targets(rgb: np.ndarray, tiny_model: str) -> None:
    budget = len(codec.compress(rgb, iterations=4, model=tiny_model)) * 8 / rgb[..., 0].size
    fitted = codec.encode(rgb, bpp=budget, adaptive=True, model=tiny_model)
    assert fitted.data[4] == 4 and len(fitted.data) * 8 <= budget * rgb[..., 0].size
    tiny_budget = codec.encode(rgb, bpp=0.01, adaptive=True, model=tiny_model)
    assert tiny_budget.iterations == 1  # cut to the rate: one iteration at least
    reached = ms_ssim(rgb, np.asarray(codec.decompress(fitted.data, model=tiny_model)))
    e = codec.encode(rgb, ms_ssim=reached * 0.99, adaptive=True, model=tiny_model)
    assert e.ms_ssim is not None and e.ms_ssim >= reached * 0.99
    assert e.data[4] == 4


def test_adaptive_files_keep_a_filter(tiny_model: str, monkeypatch: pytest.MonkeyPatch,
                                      no_threshold_search: None) -> None:
    from rnncodec import postfilter

    monkeypatch.setattr(postfilter, "worth", lambda *a: True)
    data, arrived = _adaptive(gradient_image(161, 170, seed=5), tiny_model, postfilter=True)
    c = parse(data)
    assert c.header.adaptive and c.filter is not None
    unfiltered = codec.decompress(codec.truncate(data, iterations=len(c.chunks) - 1),
                                  model=tiny_model)
    assert np.array_equal(np.asarray(unfiltered), arrived[-2])
    codec.decompress(data, model=tiny_model)


def test_a_psnr_target_the_blocks_threshold_misses_raises_the_threshold(
        rgb: np.ndarray, tiny_model: str) -> None:
    """The tiny model's image never reaches 14 dB: stopping blocks there falls short, so the
    encoder tries the highest threshold, which falls short too and is returned; the viewer's
    callback starts over with that file's iterations."""
    arrived: list[tuple[bytes, np.ndarray]] = []
    e = codec.encode(rgb, psnr=STOP_DB, adaptive=True, model=tiny_model,
                     on_iteration=lambda cut, pixels: arrived.append((cut, pixels.copy())))
    assert e.psnr is not None and e.psnr < STOP_DB and e.data[4] == 4
    assert codec.info(e.data).active_per_iteration == [1.0] * e.iterations  # 50 dB: none stop
    replayed = arrived[-e.iterations:]
    assert len(arrived) > e.iterations and replayed[-1][0] == e.data
    for n, ((cut, pixels), image) in enumerate(zip(replayed, codec.decode_iterations(
            e.data, model=tiny_model), strict=True), 1):
        assert cut == codec.truncate(e.data, iterations=n)
        assert np.array_equal(pixels, np.asarray(image))
