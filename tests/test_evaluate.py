"""The evaluation suite: metrics against references, real file sizes, caching, report and plots.

Everything runs on small generated images and the tiny model from conftest, so no dataset and
no trained weights are needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from pytorch_msssim import ms_ssim as reference_ms_ssim

from rnncodec import codec
from rnncodec.cli import main
from rnncodec.evaluate import codecs as adapters
from rnncodec.evaluate import report, results
from rnncodec.evaluate.codecs import PillowCodec, classic_codec, rnn_codec
from rnncodec.evaluate.measure import Meter, peak_rss_supported
from rnncodec.evaluate.runner import Cache, build_codecs, evaluate, read_image
from rnncodec.metrics import luma, ms_ssim, ms_ssim_db, psnr, psnr_hvs

MakeImage = Callable[..., np.ndarray]
CSF_DC = 1.608443  # PSNR-HVS contrast-sensitivity weight of the DC coefficient


@pytest.fixture
def image_dir(tmp_path: Path, make_image: MakeImage) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(make_image(48, 72, seed=10 + i)).save(folder / f"img{i}.png")
    return folder


def _nchw(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a.astype(np.float64))
    return (t[..., None] if t.ndim == 2 else t).permute(2, 0, 1)[None]


def test_psnr_matches_hand_computation(make_image: MakeImage) -> None:
    a = make_image(32, 32, seed=1)
    b = a.astype(np.int16)
    b[:16] = np.clip(b[:16] + 6, 0, 255)
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    assert psnr(a, b.astype(np.uint8)) == pytest.approx(10 * math.log10(255 ** 2 / mse))


def test_ms_ssim_matches_pytorch_msssim(make_image: MakeImage) -> None:
    a = make_image(176, 192, seed=2)
    b = np.clip(a + np.random.default_rng(0).normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    ref = float(reference_ms_ssim(_nchw(a), _nchw(b), data_range=255))
    assert ms_ssim(a, b) == pytest.approx(ref, abs=1e-6)
    ref_luma = float(reference_ms_ssim(_nchw(luma(a)), _nchw(luma(b)), data_range=255))
    assert ms_ssim(luma(a), luma(b)) == pytest.approx(ref_luma, abs=1e-6)


def test_luma_is_bt601() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    assert luma(rgb).tolist() == [[76, 150, 29, 18]]


def test_psnr_hvs_of_a_uniform_shift_is_analytic(make_image: MakeImage) -> None:
    """A constant offset d moves only each block's DC term (by 8·d), weighted by CSF_DC."""
    a = (make_image(40, 48, channels=0, seed=4) // 2 + 60).astype(np.uint8)
    d = 4
    expected = -10 * math.log10(((d / 255) * CSF_DC) ** 2)
    assert psnr_hvs(a, a + d) == pytest.approx(expected, abs=1e-9)


def test_psnr_hvs_falls_with_distortion_and_crops_partial_blocks(make_image: MakeImage) -> None:
    a = make_image(37, 45, seed=5)
    rng = np.random.default_rng(1)
    noisy = [np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8) for s in (2, 8, 20)]
    scores = [psnr_hvs(a, b) for b in noisy]
    assert scores == sorted(scores, reverse=True)
    assert math.isnan(psnr_hvs(a[:7], noisy[0][:7]))


def test_identical_images_score_perfectly_and_serialize(make_image: MakeImage,
                                                        tmp_path: Path) -> None:
    a = make_image(64, 80, seed=6)
    assert ms_ssim(a, a) == 1.0 and ms_ssim_db(1.0) == math.inf
    assert psnr(a, a) == math.inf and psnr_hvs(a, a) == math.inf
    point = results.Point("x", 1, "a.png", "0" * 64, 80, 64, 10, 0.01, 1.0, 1.0, math.inf,
                          math.inf, math.nan)
    doc = results.Results("cmd", "now", "data", {}, [], [point])
    results.write_json(doc, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert "Infinity" not in text and "NaN" not in text and '"inf"' in text
    back = results.read_json(tmp_path / "r.json").points[0]
    assert back.psnr == math.inf and math.isnan(back.encode_s) and back.decode_s is None
    results.write_csv([point], tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().splitlines()[1].endswith(",inf,inf,nan,,,")


def test_rnn_points_are_real_truncated_files(make_image: MakeImage, tiny_model: str) -> None:
    rgb = make_image(40, 56, seed=7)
    coded = list(rnn_codec(tiny_model, 3).run(rgb, [1, 2, 3]))
    for c in coded:
        direct = codec.compress(rgb, iterations=c.setting, model=tiny_model, postfilter=False)
        assert c.data == direct  # same bytes as encoding k iterations from scratch
        decoded = codec.decompress(direct, model=tiny_model).convert("RGB")
        assert np.array_equal(c.decoded, np.asarray(decoded))
    assert [c.encode_s for c in coded] == sorted(c.encode_s for c in coded)


def test_effort_is_a_codec_of_its_own(make_image: MakeImage, tiny_model: str) -> None:
    rgb = make_image(40, 56, seed=7)
    plain, searched = rnn_codec(tiny_model, 2), rnn_codec(tiny_model, 2, effort=1)
    assert searched.name == plain.name + "@effort1" and searched.identity != plain.identity
    assert "effort 1" in searched.label
    (coded,) = [c for c in searched.run(rgb, [2])]
    assert coded.data == codec.compress(rgb, iterations=2, model=tiny_model, effort=1,
                                        postfilter=False)


def test_identity_follows_the_encoder_not_only_the_weights(tiny_model: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache key changes when the encoder's arithmetic moves by a float's last bits, or the
    filter fit changes, with the same weights and options; and not from one call to the next."""
    from dataclasses import replace

    from rnncodec import postfilter
    from rnncodec.frameworks import CodingState
    from rnncodec.zoo import load_model

    plain, filtered = rnn_codec(tiny_model, 2), rnn_codec(tiny_model, 2, postfilter=True)
    assert rnn_codec(tiny_model, 2).identity == plain.identity
    net = load_model(tiny_model).net
    step = net.decode_step

    def nudged(bits: torch.Tensor, state: CodingState) -> CodingState:
        out = step(bits, state)
        return replace(out, recon=out.recon + 1e-7)

    monkeypatch.setattr(net, "decode_step", nudged)
    assert rnn_codec(tiny_model, 2).identity != plain.identity
    monkeypatch.undo()
    monkeypatch.setattr(postfilter, "FIT_ITERATIONS", 1)
    assert rnn_codec(tiny_model, 2).identity == plain.identity
    assert rnn_codec(tiny_model, 2, postfilter=True).identity != filtered.identity


def test_filter_is_a_codec_of_its_own(make_image: MakeImage, tiny_model: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from rnncodec import postfilter

    monkeypatch.setattr(postfilter, "worth", lambda *a: True)
    rgb = make_image(postfilter.MIN_SIDE, 170, seed=7)
    plain, filtered = rnn_codec(tiny_model, 2), rnn_codec(tiny_model, 2, postfilter=True)
    assert filtered.name == plain.name + "+filter" and filtered.identity != plain.identity
    assert "filter 5×5, least squares" in filtered.identity
    for c in filtered.run(rgb, [1, 2]):  # each setting with a filter of its own
        assert c.data == codec.compress(rgb, iterations=c.setting, model=tiny_model,
                                        postfilter=True)
        assert codec.info(c.data).filtered and codec.info(c.data).iterations == c.setting
        assert np.array_equal(c.decoded, np.asarray(codec.decompress(c.data, model=tiny_model)))
    searched = rnn_codec(tiny_model, 2, effort=1, postfilter=True)
    assert searched.name == plain.name + "@effort1+filter"
    (c,) = searched.run(rgb, [2])
    assert c.data == codec.compress(rgb, iterations=2, model=tiny_model, effort=1,
                                    postfilter=True)
    names = [c.name for c in build_codecs([tiny_model], [], efforts=(0, 1), filtered=3,
                                          filter_efforts=(0, 2))]
    assert names == [plain.name, plain.name + "@effort1", plain.name + "+filter",
                     plain.name + "@effort2+filter"]


def test_bpp_counts_the_whole_file(image_dir: Path, tiny_model: str) -> None:
    codecs = [rnn_codec(tiny_model, 2), classic_codec("jpeg-420", (30,))]
    points = evaluate(sorted(image_dir.iterdir()), image_dir, codecs, Cache(None), quiet=True)
    assert len(points) == 2 * (2 + 1)
    rgb = read_image(image_dir / "img0.png", image_dir).rgb
    jpeg = next(classic_codec("jpeg-420", (30,)).run(rgb, [30])).data
    p = next(p for p in points if p.codec == "jpeg-420" and p.image == "img0.png")
    assert p.bytes == len(jpeg) and jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    assert p.bpp == pytest.approx(len(jpeg) * 8 / (72 * 48))
    r = next(p for p in points if p.codec.startswith("rnncodec:") and p.setting == 2
             and p.image == "img0.png")
    assert r.bytes == len(codec.compress(rgb, iterations=2, model=tiny_model, postfilter=False))


def test_cache_skips_work_already_done(image_dir: Path, make_image: MakeImage, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    jpeg = classic_codec("jpeg-420", (20, 60))
    paths = sorted(image_dir.iterdir())
    first = evaluate(paths, image_dir, [jpeg], Cache(tmp_path / "c.jsonl"), quiet=True)
    with (tmp_path / "c.jsonl").open("a") as f:
        f.write('{"key": "cut off by an interrupted r')  # ignored when read back
    encoded: list[int] = []
    real_encode = PillowCodec.encode

    def counting(self: PillowCodec, rgb: np.ndarray, setting: int) -> bytes:
        encoded.append(setting)
        return real_encode(self, rgb, setting)

    monkeypatch.setattr(PillowCodec, "encode", counting)
    again = evaluate(paths, image_dir, [jpeg], Cache(tmp_path / "c.jsonl"), quiet=True)
    assert again == first and encoded == []
    Image.fromarray(make_image(48, 72, seed=99)).save(image_dir / "new.png")
    evaluate(sorted(image_dir.iterdir()), image_dir, [jpeg], Cache(tmp_path / "c.jsonl"),
             quiet=True)
    assert sorted(encoded) == [20, 20, 60]  # the new image's two settings and one warm-up
    assert len(Cache(tmp_path / "c.jsonl").points) == 3 * 2
    assert Cache.key(jpeg, 20, read_image(paths[0], image_dir)) != Cache.key(
        classic_codec("jpeg-444", (20,)), 20, read_image(paths[0], image_dir))


PSNR = next(m for m in report.METRICS if m.key == "psnr")


def test_auc_integrates_each_image_over_the_range_all_codecs_cover() -> None:
    def line(codec: str, image: str, bpps: list[float], slope: float) -> list[results.Point]:
        return [results.Point(codec, i, image, "", 8, 8, 1, b, psnr=slope * b)
                for i, b in enumerate(bpps)]

    points = (line("a", "x", [0.5, 1, 3], 1) + line("b", "x", [0.25, 1.5], 2)
              + line("a", "y", [0.1, 4], 1) + line("b", "y", [0.2, 5], 2)
              + line("a", "z", [0.1, 1], 1))  # b lacks z: z is left out
    ranges = report.auc_ranges(points, ["a", "b"])
    assert ranges == {"x": (0.5, 1.5), "y": (0.2, 2.0)}  # y capped at 2 bpp
    area_x, area_y = (1.5 ** 2 - 0.5 ** 2) / 2, (2.0 ** 2 - 0.2 ** 2) / 2  # ∫ bpp d(bpp)
    assert report.auc(points, "a", PSNR, ranges) == pytest.approx((area_x + area_y) / 2)
    assert report.auc(points, "b", PSNR, ranges) == pytest.approx(area_x + area_y)


def test_bd_rate_on_known_curves() -> None:
    bpp = np.array([0.25, 0.5, 1.0, 2.0])

    def pts(name: str, rates: np.ndarray) -> list[results.Point]:
        return [results.Point(name, i, "a", "", 8, 8, 1, float(r), psnr=30 + 6 * math.log2(q))
                for i, (r, q) in enumerate(zip(rates, bpp, strict=True))]

    points = pts("jpeg-420", bpp) + pts("half", bpp / 2)
    assert report.bd_rate(points, "half", PSNR) == pytest.approx(-50, abs=0.5)
    assert report.bd_rate(points, "jpeg-420", PSNR) == pytest.approx(0, abs=1e-9)


def test_bd_rate_over_a_fixed_interval_names_what_a_short_curve_reaches() -> None:
    """Over the fixed interval the overlap's BD-rate is not enough: a curve that stops rising
    halfway is reported over the part it reaches, and that part is named."""
    bpp = np.array([0.125, 0.25, 0.5, 1.0, 2.0, 4.0])
    psnr_of = {r: 24 + 3 * math.log2(r / 0.125) for r in bpp}  # 24 … 39 dB

    def pts(name: str, rates: np.ndarray, quality: list[float]) -> list[results.Point]:
        return [results.Point(name, i, "a", "", 8, 8, 1, float(r), psnr=q)
                for i, (r, q) in enumerate(zip(rates, quality, strict=True))]

    jpeg = pts("jpeg-420", bpp, [psnr_of[r] for r in bpp])
    half = pts("half", bpp / 2, [psnr_of[r] for r in bpp])
    stalls = pts("stalls", bpp, [psnr_of[r] for r in bpp[:3]] + [30.5, 30.7, 30.8])
    metric = replace(PSNR, interval=(26.0, 33.0))
    assert report.bd_rate_in(jpeg + half, "half", metric) == pytest.approx((-50, 26, 33),
                                                                           abs=0.5)
    rate, lo, hi = report.bd_rate_in(jpeg + stalls, "stalls", metric)
    assert (lo, hi) == (26.0, 30.8) and rate > 0  # more bits than JPEG above 30 dB
    lines = report._fixed_bd_table(results.Results(
        command="", created="", dataset="", environment={}, points=jpeg + stalls,
        codecs=[results.CodecInfo("stalls", "Stalls", "it", [1], "v")]))
    assert any("Stalls" in line and "(26.0–30.8 dB only)" in line for line in lines)
    # over the curves' overlap alone, bjontegaard's own BD-rate agrees with this one
    ours, lo, hi = report.bd_rate_in(jpeg + half, "half", replace(PSNR, interval=(0, 99)))
    assert ours == pytest.approx(report.bd_rate(jpeg + half, "half", PSNR), abs=1e-6)


def test_equal_quality_rates_read_the_anchor_between_its_points() -> None:
    def pt(name: str, setting: int, bpp: float, q: float, image: str = "a") -> results.Point:
        return results.Point(name, setting, image, "", 8, 8, 1, bpp, ms_ssim=q)

    jpeg = [pt("jpeg-420", 50, 0.5, 0.90), pt("jpeg-420", 90, 1.0, 0.95)]
    ours = [pt("rnn", 1, 0.6, 0.925), pt("rnn", 2, 0.8, 0.99),  # 0.99: beyond JPEG's range
            pt("rnn", 3, 0.2, 0.90), pt("rnn", 3, 0.4, 0.95, image="b")]  # means 0.3 / 0.925
    rates = report.equal_quality_rates(jpeg + ours, "rnn")
    assert rates[1] == pytest.approx(-20.0)  # JPEG needs 0.75 bpp for 0.925
    assert math.isnan(rates[2])
    assert rates[3] == pytest.approx(-60.0)  # means over images, then the comparison
    assert report.equal_quality_rates(jpeg, "jpeg-420") == {50: 0.0, 90: 0.0}
    assert all(math.isnan(v) for v in report.equal_quality_rates(ours, "rnn").values())


def test_speed_keeps_digits_for_slow_encoders() -> None:
    megapixel = results.Point("a", 1, "a", "", 1000, 1000, 1, 1.0)
    assert [report.mp_per_s(megapixel, s) for s in (2.0, 400.0, None)] == ["0.50", "0.0025", "–"]


def test_meter_sees_memory_outside_python() -> None:
    if not peak_rss_supported():
        pytest.skip("peak RSS cannot be reset on this platform")
    meter = Meter()
    block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB allocated by torch, not Python
    del block
    peak = meter.peak_rss()
    assert peak is not None and peak >= 60 << 20


def test_cli_writes_results_report_and_plots(image_dir: Path, tiny_model: str,
                                            tmp_path: Path) -> None:
    out, md = tmp_path / "out", tmp_path / "docs" / "results.md"
    args = ["evaluate", str(image_dir), "--model", tiny_model, "--codecs", "jpeg-420,webp",
            "--qualities", "20,60,90", "--iterations", "3", "--out", str(out), "--report",
            str(md), "--cache", str(tmp_path / "cache.jsonl"), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == results.SCHEMA
    assert {c["name"] for c in doc["codecs"]} == {"rnncodec:tiny", "jpeg-420", "webp"}
    assert len(doc["points"]) == 2 * (3 + 3 + 3)
    assert len((out / "results.csv").read_text().splitlines()) == 1 + len(doc["points"])
    for metric in ("ms-ssim", "ms-ssim-luma", "psnr", "psnr-hvs"):
        for ext in ("png", "svg"):
            assert (out / f"rd-{metric}.{ext}").stat().st_size > 1000
    text = md.read_text()
    assert doc["command"] in text and "BD-rate" in text and "../out/rd-psnr.png" in text
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == len(doc["points"])


def test_unavailable_codecs_are_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise adapters.CodecUnavailable("JPEG XL needs the imagecodecs package")

    monkeypatch.setattr(adapters, "_jxl_version", missing)
    warnings: list[str] = []
    built = build_codecs([], ["jpeg-420", "jxl"], (50,), warn=warnings.append)
    assert [c.name for c in built] == ["jpeg-420"]
    assert warnings == ["jxl skipped: JPEG XL needs the imagecodecs package"]
    with pytest.raises(ValueError, match="unknown codec"):
        build_codecs([], ["nope"], (50,))
    with pytest.raises(ValueError, match="between 0 and 100"):
        build_codecs([], ["jpeg-420"], (101,))


def test_cli_without_dataset_names_the_default(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", "--codecs", "jpeg-420", "-q"])
    assert result.exit_code == 66
    assert "../shared/data/kodak" in result.output
    assert "kodim01.png" in result.output and "https://r0k.us/graphics/kodak/" in result.output
    assert len(result.stderr.splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_cli_writes_into_the_working_directory_by_default(image_dir: Path, tiny_model: str,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Results and report go to ./rnncodec-results/, never into the project's docs/."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(main, ["evaluate", str(image_dir), "--model", tiny_model,
                                       "--codecs", "", "--iterations", "1", "--limit", "1",
                                       "--cache", str(tmp_path / "cache.jsonl"), "-q"])
    assert result.exit_code == 0, result.output
    out = work / "rnncodec-results"
    assert sorted(p.name for p in work.iterdir()) == ["rnncodec-results"]
    assert {"results.json", "results.csv", "results.md"} <= {p.name for p in out.iterdir()}
    assert "rd-psnr.png" in (out / "results.md").read_text()
