"""What the per-image filter costs and gives: compress and decompress time, bytes, PSNR and
MS-SSIM with and without it, side by side, for each model and iteration count.

Run from the repository root on a quiet machine (no training, no tests beside it):

    python benchmarks/filter_cost.py                          # both registered models, Kodak
    python benchmarks/filter_cost.py --models rgru-rs-w25-psnr --iterations 4,8,16 --images 6
    python benchmarks/filter_cost.py --images 1 --iterations 1 --repeats 1 \\
        --data /nonexistent --out /tmp/filter.json           # a smoke run (a generated image)

- Per image of --data (the first --images PNGs by name; a generated 768×512 image where there
  are none), model and N in --iterations: ``rnncodec.compress(image, iterations=N,
  postfilter=False)`` and ``postfilter=True`` in turns within each of --repeats rounds (one
  untimed round first), and ``decompress`` of each file; medians. Each model's filter fits for
  the metric the model is tuned for (postfilter.py).
- Per model and N, over the images: the means of bpp, PSNR and MS-SSIM with and without the
  filter, how many files kept one, and the ratios of the summed median times (with / without).

Prints a table and writes JSON (--out, default beside this script). Measured figures belong in
the JSON and in docs, not here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from network_speed import generated  # noqa: E402

import rnncodec  # noqa: E402
from rnncodec.format import parse  # noqa: E402
from rnncodec.images import load_image  # noqa: E402
from rnncodec.metrics import ms_ssim, psnr  # noqa: E402
from rnncodec.registry import MODELS  # noqa: E402

KODAK = "../shared/data/kodak"


def images(folder: str, n: int) -> list[tuple[str, np.ndarray]]:
    paths = sorted(Path(folder).glob("*.png"))[:n]
    if not paths:
        return [("generated:768x512", generated(768, 512))]
    return [(p.name, load_image(p)[0]) for p in paths]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def measure(rgb: np.ndarray, model: str, n: int, repeats: int) -> dict[str, Any]:
    """Both ways of one image, in turns; medians of the times."""
    times: dict[str, list[float]] = {k: [] for k in ("compress", "compress_filter",
                                                     "decompress", "decompress_filter")}
    files: dict[bool, bytes] = {}
    images: dict[bool, np.ndarray] = {}
    for round_ in range(repeats + 1):
        for kept in (False, True):
            tag = "_filter" if kept else ""
            c, files[kept] = timed(rnncodec.compress, rgb, iterations=n, model=model,
                                   postfilter=kept)
            d, image = timed(rnncodec.decompress, files[kept], model=model)
            images[kept] = np.asarray(image.convert("RGB"))
            if round_:  # the first round warms up
                times["compress" + tag].append(c)
                times["decompress" + tag].append(d)
    row: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    for kept, data in files.items():
        decoded = images[kept]
        tag = "_filter" if kept else ""
        row["bpp" + tag] = len(data) * 8 / (rgb.shape[0] * rgb.shape[1])
        row["psnr" + tag] = psnr(rgb, decoded)
        row["ms_ssim" + tag] = ms_ssim(rgb, decoded)
    row["kept"] = parse(files[True]).filter is not None
    return row


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.fmean(r[k] for r in rows)
                           for k in ("bpp", "bpp_filter", "psnr", "psnr_filter", "ms_ssim",
                                     "ms_ssim_filter")}
    out["kept"] = sum(r["kept"] for r in rows)
    for k in ("compress", "decompress"):
        out[f"{k}_ratio"] = sum(r[f"{k}_filter"] for r in rows) / sum(r[k] for r in rows)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated names or weights files (default: the registered)")
    ap.add_argument("--iterations", default="4,8,16", help="comma-separated iteration counts")
    ap.add_argument("--data", default=KODAK, help="folder of PNG images")
    ap.add_argument("--images", type=int, default=6, help="how many of them (first by name)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    photos = images(args.data, args.images)
    results = []
    print("| model | iterations | bpp | with filter | PSNR | with filter | MS-SSIM | with filter "
          "| kept | compress × | decompress × |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for n in (int(v) for v in args.iterations.split(",")):
            rows = [dict(image=name, **measure(rgb, model, n, args.repeats))
                    for name, rgb in photos]
            s = summary(rows)
            results.append({"model": model, "iterations": n, "summary": s, "images": rows})
            print(f"| {model} | {n} | {s['bpp']:.4f} | {s['bpp_filter']:.4f} | {s['psnr']:.3f} "
                  f"| {s['psnr_filter']:.3f} | {s['ms_ssim']:.5f} | {s['ms_ssim_filter']:.5f} "
                  f"| {s['kept']}/{len(rows)} | {s['compress_ratio']:.2f} "
                  f"| {s['decompress_ratio']:.2f} |", flush=True)
    meta = {"images": [name for name, _ in photos], "repeats": args.repeats,
            "torch_threads": torch.get_num_threads()}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
