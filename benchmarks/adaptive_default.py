"""Adaptive files at a fixed block threshold against uniform ones: the embedded curve, one encode.

    python benchmarks/adaptive_default.py photo1.png photo2.jpg ...   # held-out photos
    python benchmarks/adaptive_default.py --model rgru-rs-w25 --thresholds 38,40 a.png

``compress -n N --adaptive`` stops each 16×16 block once its PSNR reaches a fixed threshold
(``adaptive.DEFAULT_STOP_DB`` unless told): one encode, no search, and every cut of the file is
a point. For each image and threshold, the adaptive file's cuts after 1–16 iterations (block
maps included in their size) against the uniform file's: BD-rate in PSNR and in MS-SSIM (dB of
1 − MS-SSIM), over the quality range both curves cover (``adaptive_ceiling.bd_rate``; negative
is a saving), and the 16-iteration points. Files carry no filter, so that the two differ only in
the block stops. Encode (without the per-cut measurements) and decode (all iterations) times
are medians of ``--repeats`` runs, the files timed in turns. Prints a table and writes JSON
next to this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from adaptive_ceiling import _envelope, bd_rate

from rnncodec import codec
from rnncodec.adaptive import DEFAULT_STOP_DB
from rnncodec.images import load_image
from rnncodec.metrics import ms_ssim, ms_ssim_db, psnr

ITERATIONS = 16


def _seconds(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@contextmanager
def _threshold(stop_db: float | None) -> Iterator[None]:
    """``compress -n N --adaptive`` with blocks stopping at ``stop_db`` (the default's
    constant, set for the while)."""
    saved = codec.DEFAULT_STOP_DB  # type: ignore[attr-defined]
    codec.DEFAULT_STOP_DB = DEFAULT_STOP_DB if stop_db is None else stop_db  # type: ignore[attr-defined]
    try:
        yield
    finally:
        codec.DEFAULT_STOP_DB = saved  # type: ignore[attr-defined]


def curve(rgb: np.ndarray, model: str, stop_db: float | None) -> tuple[bytes, list[dict]]:
    """A file of ``ITERATIONS`` (adaptive at ``stop_db``, uniform for None) and each cut's
    bpp, PSNR and MS-SSIM."""
    pixels, points = rgb.shape[0] * rgb.shape[1], list[dict]()

    def arrived(cut: bytes, decoded: np.ndarray) -> None:
        points.append({"bpp": len(cut) * 8 / pixels, "psnr": psnr(rgb, decoded),
                       "ms_ssim": ms_ssim(rgb, decoded)})

    with _threshold(stop_db):
        data = codec.compress(rgb, iterations=ITERATIONS, model=model, postfilter=False,
                              adaptive=stop_db is not None, on_iteration=arrived)
    return data, points


def _compress(rgb: np.ndarray, model: str, stop_db: float | None) -> bytes:
    """The file ``curve`` measures, made as a user makes it (no per-cut callback): what is
    timed."""
    with _threshold(stop_db):
        return codec.compress(rgb, iterations=ITERATIONS, model=model, postfilter=False,
                              adaptive=stop_db is not None)


def _bd(reference: list[dict], test: list[dict], metric: str) -> float:
    def pts(c: list[dict]) -> list[tuple[float, float]]:
        return _envelope([(p["bpp"], p["psnr"] if metric == "psnr" else ms_ssim_db(p["ms_ssim"]))
                          for p in c])
    return bd_rate(pts(reference), pts(test))[0]


def measure(rgb: np.ndarray, model: str, thresholds: list[float], repeats: int) -> dict:
    files = {"uniform": curve(rgb, model, None)}
    files.update({str(t): curve(rgb, model, t) for t in thresholds})
    times: dict[str, dict[str, list[float]]] = {k: {"encode": [], "decode": []} for k in files}
    for _ in range(repeats):  # in turns, so that the machine's drift hits all alike
        for key, (data, _) in files.items():
            stop = None if key == "uniform" else float(key)
            times[key]["encode"].append(_seconds(lambda s=stop: _compress(rgb, model, s)))
            times[key]["decode"].append(_seconds(lambda d=data: codec.decompress(d, model=model)))
    out: dict = {}
    reference = files["uniform"][1]
    for key, (_, points) in files.items():
        out[key] = {"points": points,
                    "encode_s": statistics.median(times[key]["encode"]),
                    "decode_s": statistics.median(times[key]["decode"])}
        if key != "uniform":
            out[key]["bd_psnr"] = _bd(reference, points, "psnr")
            out[key]["bd_ms_ssim"] = _bd(reference, points, "ms-ssim")
    return out


def _summary(results: list[dict], key: str) -> dict[str, float]:
    """Means over the images (medians for the time ratios to the uniform files)."""
    files, uniform = [r[key] for r in results], [r["uniform"] for r in results]
    last = [f["points"][-1] for f in files]
    ratio = {kind: float(np.median([f[f"{kind}_s"] / u[f"{kind}_s"]
                                    for f, u in zip(files, uniform, strict=True)]))
             for kind in ("encode", "decode")}
    return {"bpp_16": float(np.mean([p["bpp"] for p in last])),
            "psnr_16": float(np.mean([p["psnr"] for p in last])),
            "ms_ssim_16": float(np.mean([p["ms_ssim"] for p in last])),
            "encode_ratio": ratio["encode"], "decode_ratio": ratio["decode"],
            "bd_psnr": _finite_mean([f.get("bd_psnr", 0.0) for f in files]),
            "bd_ms_ssim": _finite_mean([f.get("bd_ms_ssim", 0.0) for f in files])}


def _finite_mean(values: list[float]) -> float:
    """The mean of the BD-rates that exist (a curve that ends after one iteration has none)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", default="rgru-rs-w25-psnr")
    parser.add_argument("--thresholds", default=str(DEFAULT_STOP_DB),
                        help="block PSNR thresholds in dB, comma-separated")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="where to write the results (default: next "
                        "to this script)")
    args = parser.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    out = args.json or Path(__file__).with_suffix(".json")
    results = {}
    for path in args.images:
        results[path.name] = measure(load_image(path)[0], args.model, thresholds, args.repeats)
        print(path.name, flush=True)
    rows = ["| file | BD PSNR | BD MS-SSIM | bpp @16 | PSNR @16 | MS-SSIM @16 | encode × | "
            "decode × |", "|---|---|---|---|---|---|---|---|"]
    summary = {key: _summary(list(results.values()), key)
               for key in ["uniform", *map(str, thresholds)]}
    for key, s in summary.items():
        name = "uniform" if key == "uniform" else f"adaptive {key} dB"
        rows.append(f"| {name} | {s['bd_psnr']:+.2f}% | {s['bd_ms_ssim']:+.2f}% | "
                    f"{s['bpp_16']:.3f} | {s['psnr_16']:.2f} | {s['ms_ssim_16']:.4f} | "
                    f"{s['encode_ratio']:.2f} | {s['decode_ratio']:.2f} |")
    print("\n".join(rows))
    out.write_text(json.dumps({"model": args.model, "iterations": ITERATIONS,
                               "threads": torch.get_num_threads(), "summary": summary,
                               "images": results}, indent=1))


if __name__ == "__main__":
    main()
