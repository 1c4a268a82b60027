"""What adaptive files (``compress --adaptive --psnr T``) save over uniform ones, in real bytes.

    python benchmarks/adaptive_files.py photo1.png photo2.jpg ...      # held-out photos
    python benchmarks/adaptive_files.py --at 3,6,9 --json out.json a.png

For each image: a uniform file of up to 16 iterations, each of its cuts a point (entropy-coded
bytes, PSNR of the decoded cut), and one adaptive file per PSNR target T (blocks stop at
block PSNR T; the file ends once the image reaches T or every block has stopped), each a
point with its block maps included in its size. The targets are the uniform file's PSNR after
the iterations ``--at`` names (rounded down to 0.01 dB), so that each lies where that image's
uniform curve still rises and a uniform file reaches it. Reported per target: the adaptive
file's size against the uniform file cut at the first iteration that reaches T (what
``--psnr T`` writes without ``--adaptive``), the bytes of its maps (length fields included),
encode and decode times; per image the BD-rate
(adaptive_ceiling.bd_rate) of the adaptive points against the uniform cuts, over the PSNR range
both cover, negative being a saving. Prints a table and writes JSON next to this script.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from adaptive_ceiling import _envelope, bd_rate

from rnncodec import codec
from rnncodec.format import parse, split_adaptive
from rnncodec.images import load_image
from rnncodec.metrics import psnr
from rnncodec.zoo import DEFAULT_MODEL

AT = (2, 4, 6, 8, 10)  # the uniform iterations whose PSNR are the targets


def _timed(call):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def measure(rgb: np.ndarray, at: list[int], model: str) -> dict:
    pixels = rgb.shape[0] * rgb.shape[1]
    cuts: list[tuple[int, float]] = []
    uniform, encode_s = _timed(lambda: codec.compress(
        rgb, iterations=16, model=model,
        on_iteration=lambda cut, pixels_: cuts.append((len(cut), psnr(rgb, pixels_)))))
    reference = [(n * 8 / pixels, q) for n, q in cuts]
    result: dict = {"uniform": {"bpp": [r for r, _ in reference],
                                "psnr": [q for _, q in reference], "encode_s": encode_s},
                    "adaptive": {}}
    points = []
    for target in [math.floor(cuts[k - 1][1] * 100) / 100 for k in at]:
        data, encode_s = _timed(lambda t=target: codec.compress(rgb, psnr=t, adaptive=True,
                                                                 model=model))
        decoded, decode_s = _timed(lambda d=data: np.asarray(codec.decompress(d, model=model)))
        container = parse(data)
        reached = next((k for k, (_, q) in enumerate(cuts) if q >= target), len(cuts) - 1)
        same = codec.truncate(uniform, iterations=reached + 1)
        _, uniform_decode_s = _timed(lambda d=same: codec.decompress(d, model=model))
        maps = sum(4 + len(split_adaptive(c, i)[0]) for i, c in enumerate(container.chunks, 1))
        quality = psnr(rgb, decoded)
        points.append((len(data) * 8 / pixels, quality))
        result["adaptive"][str(target)] = {
            "bpp": points[-1][0], "psnr": quality, "iterations": len(container.chunks),
            "map_bytes": maps, "bytes": len(data), "uniform_bytes": len(same),
            "uniform_psnr": cuts[reached][1], "uniform_iterations": reached + 1,
            "active": codec.info(data).active_per_iteration, "encode_s": encode_s,
            "decode_s": decode_s, "uniform_decode_s": uniform_decode_s}
    pct, low, high = bd_rate(_envelope(reference), _envelope(points))
    result["bd_rate"] = {"percent": pct, "range_db": [low, high]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--at", default=",".join(map(str, AT)),
                        help="uniform iterations whose PSNR are the adaptive targets")
    parser.add_argument("--json", type=Path, help="where to write the results (default: next "
                        "to this script)")
    args = parser.parse_args()
    at = [int(k) for k in args.at.split(",")]
    out = args.json or Path(__file__).with_suffix(".json")
    torch.set_num_threads(1)
    results = {}
    print("| image | T dB | adaptive bytes (maps) | PSNR | uniform bytes | PSNR | encode s "
          "adaptive / uniform | decode s adaptive / uniform |\n|---|---|---|---|---|---|---|---|")
    for path in args.images:
        rgb, _ = load_image(path)
        r = results[path.name] = measure(rgb, at, args.model)
        for t, a in r["adaptive"].items():
            print(f"| {path.name} | {t} | {a['bytes']} ({a['map_bytes']}) | {a['psnr']:.2f} | "
                  f"{a['uniform_bytes']} | {a['uniform_psnr']:.2f} | {a['encode_s']:.1f} / "
                  f"{r['uniform']['encode_s']:.1f} | {a['decode_s']:.1f} / "
                  f"{a['uniform_decode_s']:.1f} |", flush=True)
        bd = r["bd_rate"]
        print(f"| {path.name} | BD-rate {bd['percent']:+.1f}% over "
              f"{bd['range_db'][0]:.1f}–{bd['range_db'][1]:.1f} dB |", flush=True)
    mean = float(np.nanmean([r["bd_rate"]["percent"] for r in results.values()]))
    print(f"\nmean BD-rate (PSNR) of adaptive files vs uniform: {mean:+.1f}%")
    out.write_text(json.dumps({"model": args.model, "at": at, "mean_bd_rate": mean,
                               "images": results}, indent=1))


if __name__ == "__main__":
    main()
