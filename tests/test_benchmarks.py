"""The benchmark scripts on tiny inputs: the structure of their tables and JSON, not figures.

``benchmarks/speed_memory.py`` and ``benchmarks/network_speed.py`` are scripts, not package
modules, so they are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import gradient_image
from PIL import AvifImagePlugin, Image

from rnncodec import bands
from rnncodec.evaluate.codecs import CodecUnavailable
from rnncodec.evaluate.results import read_json
from rnncodec.zoo import DEFAULT_MODEL, load_model

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    return _script("speed_memory")


@pytest.fixture(scope="module")
def network() -> ModuleType:
    return _script("network_speed")


@pytest.fixture
def avif_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """``measure_case`` sets Pillow's AVIF decoder threads for its process; restore them."""
    monkeypatch.setattr(AvifImagePlugin, "DEFAULT_MAX_THREADS",
                        AvifImagePlugin.DEFAULT_MAX_THREADS)


def _case(speed: ModuleType, codec: str, iterations: list[int], repeats: int) -> dict[str, Any]:
    return speed.measure_case({"image": "generated:64x64", "crop": None, "codec": codec,
                               "model": DEFAULT_MODEL, "iterations": iterations, "threads": 1,
                               "repeats": repeats})


def test_speed_memory_cases_table_and_json(speed: ModuleType, avif_threads: None,
                                           tmp_path: Path) -> None:
    got = speed.Collected.empty()
    jpeg = _case(speed, "jpeg-420", [1], repeats=2)
    assert jpeg["codec"]["name"] == "jpeg-420@threads1"
    assert [p["setting"] for p in jpeg["points"]] == [speed.QUALITY["jpeg-420"]]
    assert len(jpeg["samples"][0]["encode_s"]) == 2  # one per repeat; the point is the median
    model = _case(speed, "model", [1, 2], repeats=1)
    assert model["codec"]["name"].startswith("rnncodec:") and \
        model["codec"]["name"].endswith("@threads1")
    first, second = model["points"]
    assert (first["setting"], second["setting"]) == (1, 2) and first["bytes"] < second["bytes"]
    assert all(p["encode_s"] > 0 and p["decode_s"] > 0 for p in model["points"])
    got.add(model)
    got.add(jpeg)

    text = speed.table(got.points, {c.name: c.label for c in got.infos.values()})
    assert text.splitlines()[0].startswith("| image | codec | threads |")
    assert len(text.strip().splitlines()) == 2 + 3
    assert "1.00×" in text  # JPEG against itself

    targets = speed.check_targets(got.points, [], "generated:64x64")
    assert [t["step"] for t in targets] == ["compress", "decompress", "help", "decode"]
    assert all(t["met"] is None for t in targets)  # no CLI run, no 8-iteration point
    assert "not measured" in speed.targets_table(targets)

    out = tmp_path / "speed.json"
    results = speed.Results("test", "now", "generated:64x64", {}, list(got.infos.values()),
                            got.points)
    speed.write_results(results, {"samples": got.samples, "cli": [], "targets": targets}, out)
    assert len(read_json(out).points) == 3  # still a results file
    doc = json.loads(out.read_text())
    assert len(doc["samples"]) == 3 and doc["targets"][0]["limit_s"] == 5.0


def test_speed_memory_reports_unavailable_codecs(speed: ModuleType,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str, threads: int) -> None:
        raise CodecUnavailable(f"no {name} here")

    monkeypatch.setattr(speed, "standard_codec", missing)
    got = speed.run_cases(["generated:64x64"], None, ["avif"], DEFAULT_MODEL, [1], [1], 1,
                          None, False, lambda _: None)
    assert got.unavailable == {"avif": "no avif here"} and got.points == []


def test_speed_memory_cli_steps_are_what_a_user_types(speed: ModuleType, tmp_path: Path) -> None:
    steps = speed.cli_steps(tmp_path / "kodim23.png", 8)
    assert [s.args for s in steps] == [["--help"], ["compress", "-n", "8", "kodim23.png"],
                                       ["decompress", "kodim23.rnnc"]]
    assert steps[2].cwd != steps[1].cwd  # the decoded PNG must not meet the input


def test_network_speed_rows_table_and_json(network: ModuleType, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = network.make_variant

    def no_bf16(name: str, net: Any) -> Any:
        if "bf16" in name:
            raise RuntimeError("no bf16 here")
        return real(name, net)

    monkeypatch.setattr(network, "make_variant", no_bf16)
    rgb = network.generated(64, 48)
    rows = network.run_variants(load_model(DEFAULT_MODEL).net, rgb,
                                ["channels_last", "bf16"], [1], iterations=1, repeats=1)
    base, layout, bf16 = rows
    assert (base.variant, layout.variant, bf16.variant) == ("fp32", "channels_last", "bf16")
    assert base.iteration_vs_fp32 == 1.0 and base.bits_identical and base.max_abs_diff == 0
    assert layout.encoder_step_s > 0 and layout.bits_total == 32 * 3 * 4
    assert bf16.skipped == "RuntimeError: no bf16 here" and bf16.encoder_step_s is None
    text = network.table(rows)
    assert len(text.strip().splitlines()) == 2 + 3 and "skipped" in text

    out = tmp_path / "net.json"
    network.write_json(rows, {"model": "m"}, out)
    doc = json.loads(out.read_text())
    assert doc["model"] == "m" and doc["variants"][0]["psnr_db"] != "nan"
    assert set(doc["variants"][0]) >= {"encoder_step_s", "decoder_step_s", "bits_identical",
                                       "max_abs_diff", "psnr_change_db", "samples"}


def test_network_speed_bands_run_the_codecs_steps(network: ModuleType,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert network.flags_of("bands") == {"bands", "channels_last"}
    with pytest.raises(ValueError, match="bands"):
        network.flags_of("bands+bf16")
    asked: list[int] = []
    real = bands.plan
    monkeypatch.setattr(bands, "plan", lambda *a: asked.append(a[-1]) or real(*a))
    rows = network.run_variants(load_model(DEFAULT_MODEL).net, network.generated(64, 48),
                                ["channels_last", "bands"], [2], iterations=1, repeats=1)
    layout, banded = rows[1:]
    assert banded.variant == "bands" and banded.bits_identical
    assert banded.max_abs_diff == layout.max_abs_diff
    assert set(asked) == {2}  # the caller's threads, for bands of steps on one thread each


def test_network_speed_main_on_a_generated_image(network: ModuleType, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "net.json"
    network.main(["--image", str(tmp_path / "missing.png"), "--size", "64x64", "--iterations",
                  "1", "--repeats", "1", "--threads", "1", "--variants", "fp32", "--out",
                  str(out)])
    assert "| fp32 | 1 |" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["image"] == "generated:64x64" and doc["width"] == 64
    assert [v["variant"] for v in doc["variants"]] == ["fp32"]


def test_model_cost_counts_and_times_models_side_by_side(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cost = _script("model_cost")
    out = tmp_path / "cost.json"
    cost.main(["--models", DEFAULT_MODEL, "--configs", "coarse=1.5", "--image",
               str(tmp_path / "missing.png"), "--size", "64x64", "--iterations", "1",
               "--repeats", "1", "--out", str(out)])
    assert "coarse=1.5" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    base, wide = doc["rows"]
    assert doc["meta"]["image"] == "generated:64x64"
    assert base["ratios"]["decoder_gflop"] == 1 and wide["ratios"]["decoder_gflop"] > 1
    assert wide["config"]["coarse"] == 1.5 and wide["params"] > base["params"]
    assert len(wide["compress_s"]) == len(wide["decompress_s"]) == 1
    assert wide["ratios"]["decompress_s"] > 0
    with pytest.raises(SystemExit):  # a field the configuration does not have
        cost.parse_args(["--configs", "depth=3"])


def test_filter_cost_compares_files_with_and_without_the_filter(
        tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture[str]) -> None:
    cost = _script("filter_cost")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(gradient_image(170, 180, seed=1)).save(photos / "a.png")
    out = tmp_path / "filter.json"
    cost.main(["--models", tiny_model, "--iterations", "1,2", "--data", str(photos),
               "--repeats", "1", "--out", str(out)])
    assert "| 2 |" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["meta"]["images"] == ["a.png"] and len(doc["results"]) == 2
    row = doc["results"][1]["images"][0]
    assert row["bpp_filter"] >= row["bpp"] and row["compress_filter"] > 0
    assert row["kept"] == (row["bpp_filter"] > row["bpp"])
    assert cost.images(str(tmp_path / "none"), 3)[0][0] == "generated:768x512"


def test_adaptive_default_compares_fixed_threshold_files_with_uniform_ones(
        tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports adaptive_ceiling, as run there
    bench = _script("adaptive_default")
    photo = tmp_path / "a.png"
    Image.fromarray(gradient_image(64, 80, seed=1)).save(photo)
    out = tmp_path / "adaptive.json"
    bench.main([str(photo), "--model", tiny_model, "--thresholds", "10,40", "--json", str(out)])
    assert "| adaptive 40.0 dB |" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    s = doc["summary"]
    assert len(doc["images"]["a.png"]["uniform"]["points"]) == 16
    # nothing stops at 40 dB under the tiny model: the uniform file plus an empty map per chunk
    # (and the header's tile field, which version 4 always has)
    extra = (16 * 4 + 2) * 8 / (64 * 80)
    assert s["40.0"]["bpp_16"] - s["uniform"]["bpp_16"] == pytest.approx(extra)
    assert s["40.0"]["psnr_16"] == s["uniform"]["psnr_16"]
    assert s["10.0"]["bpp_16"] < s["uniform"]["bpp_16"]  # blocks stop at 10 dB
    assert bench.codec.DEFAULT_STOP_DB == 40.0  # the threshold under test was put back


def test_heldout_compares_models_on_the_photos_training_holds_out(
        tmp_path: Path, tiny_model: str, other_model: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    heldout = _script("heldout")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(gradient_image(140, 150, seed=i)).save(photos / f"p{i}.png")
    out = tmp_path / "heldout.json"
    heldout.main([tiny_model, other_model, "--data", str(photos), "--iterations", "8",
                  "--crop", "128", "--out", str(out)])
    assert "BD-rate vs first" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["meta"]["photos"] == 1 and doc["meta"]["crop"] == 128  # a tenth, at least one
    curves = doc["models"][other_model]
    assert all(len(curves[m]) == 8 for m in ("psnr", "ms_ssim", "psnr_hvs", "bpp"))
    assert curves["bpp"] == pytest.approx([0.125 * t for t in range(1, 9)])
    assert set(curves["bd"]) == {"psnr_2-8", "psnr_hvs_2-8", "ms_ssim_2-8"}
    # the BD-rates: a curve one iteration ahead of the reference saves bits, the same none
    ref = {"psnr": [20.0 + 1.5 * t for t in range(16)], "psnr_hvs": [18.0 + 2.0 * t for t in
           range(16)], "ms_ssim": [1 - 0.2 * 0.8 ** t for t in range(16)],
           "bpp": [0.125 * t for t in range(1, 17)]}
    ahead = {k: v if k == "bpp" else v[1:] + [v[-1] + (v[-1] - v[-2])] for k, v in ref.items()}
    assert all(v == pytest.approx(0, abs=1e-6) for v in heldout.bd_rates(ref, ref).values())
    gains = heldout.bd_rates(ref, ahead)
    assert len(gains) == 9 and all(v is not None and v < -5 for v in gains.values())
    flat = {k: v if k == "bpp" else [v[0]] * 16 for k, v in ref.items()}  # never rises: none
    assert all(v is None for v in heldout.bd_rates(ref, flat).values())
    cheaper = {**ref, "bpp": [0.9 * r for r in ref["bpp"]]}  # the same quality for 10% less
    assert all(v == pytest.approx(-10, abs=1e-6) for v in heldout.bd_rates(ref, cheaper).values())


def test_heldout_coded_rates_are_the_entropy_coded_files(
        tmp_path: Path, tiny_model: str) -> None:
    """--coded: each iteration's codes as the best coder writes them, one byte per iteration
    naming the coder; never more than the raw bits and that byte."""
    import torch

    from rnncodec import zoo

    heldout = _script("heldout")
    torch.manual_seed(0)
    codes = [torch.where(torch.rand(2, 32, 4, 5) < 0.5, 1.0, -1.0) for _ in range(3)]
    codes[0] = torch.ones_like(codes[0])  # constant codes: cheaper than raw
    bpp = heldout.coded_bpp(zoo.load_model(tiny_model).tables, codes)
    raw = [0.125 * t for t in range(1, 4)]
    byte = 8 / (64 * 80)  # one coder byte per 64×80-pixel image and iteration
    assert all(0 < b <= r + (i + 1) * byte for i, (b, r) in enumerate(zip(bpp, raw, strict=True)))
    assert bpp[0] < 0.125  # below the raw bits
    with pytest.raises(SystemExit, match="exported weights"):
        heldout.main([tiny_model, str(tmp_path / "run" / "checkpoint.pt"), "--coded"])


@pytest.mark.slow
def test_speed_memory_script_end_to_end(tmp_path: Path) -> None:
    """The whole script, workers and the timed command included, on a tiny generated image."""
    out = tmp_path / "speed.json"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "speed_memory.py"), "--image",
                        str(tmp_path / "missing.png"), "--size", "64x64", "--iterations", "1",
                        "--repeats", "1", "--threads", "1", "--codecs", "jpeg-420",
                        "--cli-iterations", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert "| `rnncodec --help` |" in r.stdout
    doc = json.loads(out.read_text())
    assert [c["name"].split("@")[1] for c in doc["codecs"]] == ["threads1", "threads1"]
    assert [row["step"] for row in doc["cli"]] == ["help", "compress", "decompress"]
    assert all(row["seconds"] > 0 for row in doc["cli"])
    assert doc["run"]["repeats"] == 1 and len(doc["targets"]) == 4
    assert doc["points"][0]["width"] == 64
