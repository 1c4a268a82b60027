"""Bytes saved by each entropy coder against the raw bits, per iteration, and coder speed.

    python benchmarks/entropy_coders.py                       # Kodak from ../shared/data/kodak
    python benchmarks/entropy_coders.py FOLDER --limit 4 --json out.json

For every image the model's codes for 16 iterations are computed once; each coder then encodes
and decodes every iteration's chunk (checking the round trip). Savings are against the raw
chunk of the same iteration. The last table times a whole `decompress` (image decoder included)
of each image's file (default coder) cut to at most 1 bpp. Prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import rnncodec
from rnncodec.engine import iterate_codes
from rnncodec.entropy import make_coder
from rnncodec.images import list_images, load_image
from rnncodec.zoo import DEFAULT_MODEL, load_model

CODERS = ("raw", "context", "neural", "best")
CODED = CODERS[1:]  # the entropy coders, compared with raw
ITERATIONS = 16


def chunk_stats(codes: list[np.ndarray], tables: dict) -> dict[str, list[tuple[int, float, float]]]:
    """Per coder and iteration: (payload bytes, encode s, decode s)."""
    out: dict[str, list[tuple[int, float, float]]] = {}
    for name in CODERS:
        coder, rows = make_coder(name, tables), []
        for t, c in enumerate(codes):
            start = time.perf_counter()
            payload = coder.encode(c, codes[:t])
            mid = time.perf_counter()
            decoded = coder.decode(payload, c.shape, codes[:t])
            end = time.perf_counter()
            assert np.array_equal(decoded, c), f"{name} failed to round-trip iteration {t + 1}"
            rows.append((len(payload), mid - start, end - mid))
        out[name] = rows
    return out


def decode_time_at(path: Path, model: str, bpp: float) -> tuple[float, float, int]:
    """(seconds to decompress, bpp, iterations) of the image's file (default coder) cut to ≤ bpp."""
    data = rnncodec.truncate(rnncodec.compress(path, iterations=ITERATIONS, model=model), bpp=bpp)
    info = rnncodec.info(data)
    start = time.perf_counter()
    rnncodec.decompress(data, model=model)
    return time.perf_counter() - start, info.bpp_per_iteration[-1], info.iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default="../shared/data/kodak", type=Path)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--json", default="benchmarks/entropy_coders.json", type=Path)
    args = ap.parse_args()
    paths = list_images(args.folder)
    paths = paths[:args.limit] if args.limit else paths
    loaded = load_model(args.model)
    per_image, timings = [], []
    for path in paths:
        rgb = load_image(path)[0]
        steps = iterate_codes(loaded, rgb)
        codes = [next(steps)[0] for _ in range(ITERATIONS)]
        per_image.append({"image": path.name, "pixels": rgb.shape[0] * rgb.shape[1],
                          "chunks": chunk_stats(codes, loaded.tables)})
        seconds, bpp, n = decode_time_at(path, args.model, 1.0)
        timings.append({"image": path.name, "decode_s": seconds, "bpp": bpp, "iterations": n})
        print(f"{path.name}: done", flush=True)

    print(f"\nmodel {loaded.name} ({loaded.digest.hex()[:12]}), {len(paths)} images, "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print("\niter  raw B/img" + "".join(f"{n + ' saved':>14}" for n in CODED)
          + "".join(f"{n + ' enc/dec ms':>20}" for n in CODED))
    summary = []
    for t in range(ITERATIONS):
        row = {name: np.mean([im["chunks"][name][t] for im in per_image], axis=0)
               for name in CODERS}
        raw = row["raw"][0]
        saved = {n: 1 - row[n][0] / raw for n in CODED}
        summary.append({"iteration": t + 1, "raw_bytes": raw,
                        **{f"{n}_bytes": row[n][0] for n in CODERS},
                        **{f"{n}_saved": saved[n] for n in saved},
                        **{f"{n}_{k}_s": row[n][i + 1] for n in CODERS
                           for i, k in enumerate(("encode", "decode"))}})
        print(f"{t + 1:>4}  {raw:>9.0f}" + "".join(f"{saved[n]:>14.1%}" for n in CODED)
              + "".join(f"{f'{row[n][1] * 1e3:.1f}/{row[n][2] * 1e3:.1f}':>20}" for n in CODED))
    totals = {n: sum(s[f"{n}_bytes"] for s in summary) for n in CODERS}
    print(f" all  {totals['raw']:>9.0f}"
          + "".join(f"{1 - totals[n] / totals['raw']:>14.1%}" for n in CODED))
    mean_decode = float(np.mean([t["decode_s"] for t in timings]))
    print(f"\nwhole decompress of the default file cut to ≤ 1 bpp: {mean_decode:.2f} s per image "
          f"(mean over {len(timings)}; {np.mean([t['bpp'] for t in timings]):.3f} bpp, "
          f"{np.mean([t['iterations'] for t in timings]):.1f} iterations)")
    args.json.write_text(json.dumps({
        "model": loaded.name, "weights": loaded.digest.hex(), "images": len(paths),
        "torch_threads": torch.get_num_threads(), "per_iteration": summary,
        "overall_saved": {n: 1 - totals[n] / totals["raw"] for n in CODED},
        "decode_at_1bpp": timings}, indent=2, default=float))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
