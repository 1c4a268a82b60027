"""Models compared on the training set's held-out photos: the check that chooses weights.

Run from the repository root (a few minutes per model on two cores):

    python benchmarks/heldout.py rgru-rs-w25 runs/c20/model.safetensors
    python benchmarks/heldout.py rgru-rs-w25-psnr runs/a/model.safetensors runs/b/checkpoint.pt

The photos are those ``rnncodec train`` holds out for validation (``patches.split_photos``: the
first --photos of --data by a hash of their path, never trained on), cut to centre crops of
--crop px (default 192, in whole blocks), coded whole by the networks in float32 with inference
bits for --iterations (default 16). Per model and iteration: PSNR of the whole set and mean
MS-SSIM (as ``train.validate`` scores them), and mean PSNR-HVS (luma, ``metrics.psnr_hvs``) of
the 8-bit crops. Rates are raw, 0.125 bpp per iteration, so BD-rates (PCHIP, ``bjontegaard``;
MS-SSIM in dB) compare what the networks make of the same bits, each model against the first,
over iterations 2–8, 1–16 and 9–16. With --coded the rates are those of the codes entropy coded
as files code them (the best coder, with each model's own tables: models must be names or
exported weights, not checkpoints), for models trained to make their codes cheaper.
Prints a table and writes JSON (--out, default beside this script).
Never point --data at Kodak: weights are chosen here, and Kodak is for evaluation only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnncodec.engine import unsigned
from rnncodec.entropy import BEST, make_coder
from rnncodec.evaluate.report import increasing
from rnncodec.images import to_array
from rnncodec.metrics import psnr_hvs
from rnncodec.train import (
    TrainConfig,
    center_crops,
    list_images,
    load_checkpoint,
    load_pool,
    scores,
    split_photos,
)
from rnncodec.zoo import load_model

RANGES = ((2, 8), (1, 16), (9, 16))
SHOWN = (1, 2, 4, 8, 12, 16)  # iterations printed (all are in the JSON)
BPP_PER_ITERATION = 0.125


def held_out(data: str, photos: int, crop: int) -> torch.Tensor:
    """The validation photos ``rnncodec train`` holds out, as N×3×S×S crops in [-0.5, 0.5]."""
    paths = list_images(data)
    if not paths:
        raise SystemExit(f"no photos under {data}")
    val_paths, _ = split_photos(paths, data, min(photos, len(paths) // 10 or 1))
    pool = load_pool(val_paths)
    if not pool:
        raise SystemExit(f"none of the held-out photos under {data} is 128 px or larger")
    side = min([crop] + [min(v.shape[1:]) for v in pool]) // 16 * 16
    return center_crops(pool, side)


def load_net(spec: str) -> torch.nn.Module:
    """A model name, weights file or training checkpoint, in float32."""
    net = load_checkpoint(Path(spec))[1] if spec.endswith(".pt") else load_model(spec).net
    return net.float()


def to_bytes(x: torch.Tensor) -> list[np.ndarray]:
    """Each image of a batch as the codec writes its pixels (H×W×3 uint8)."""
    side = x.shape[-1]
    return [to_array(x[i:i + 1], side, side) for i in range(len(x))]


@torch.no_grad()
def curves(spec: str, crops: torch.Tensor, iterations: int, coded: bool = False
           ) -> dict[str, list[float]]:
    """Per iteration: PSNR and MS-SSIM as ``rnncodec train`` validates, mean PSNR-HVS, and the
    bpp so far (raw, or entropy coded with ``coded``: ``spec`` must then be exported weights)."""
    loaded = load_model(spec) if coded else None
    net = (load_net(spec) if loaded is None else loaded.net.float()).eval()
    codes: list[torch.Tensor] = []
    recons = [r.float().clamp(-0.5, 0.5) for r in net(crops, iterations, None, None, codes)]
    psnr, ms_ssim = scores(crops, recons)
    ref = to_bytes(crops)
    hvs = [float(np.mean([psnr_hvs(a, b) for a, b in zip(ref, to_bytes(r), strict=True)]))
           for r in recons]
    bpp = (coded_bpp(loaded.tables, codes) if loaded is not None
           else [BPP_PER_ITERATION * t for t in range(1, iterations + 1)])
    return {"psnr": psnr, "ms_ssim": ms_ssim, "psnr_hvs": hvs, "bpp": bpp}


def coded_bpp(tables: dict[str, torch.Tensor], codes: list[torch.Tensor]) -> list[float]:
    """Mean bpp after each iteration of the ±1 codes (one N×32×h×w tensor per iteration) coded
    by the best coder with a model's entropy ``tables``, one image at a time."""
    coder = make_coder(BEST, tables)
    n, _, h, w = codes[0].shape
    bits = np.zeros(len(codes))
    for i in range(n):
        previous: list[np.ndarray] = []
        for t, c in enumerate(codes):
            now = unsigned(c[i:i + 1])
            bits[t] += 8 * len(coder.encode(now, previous))
            previous.append(now)
    return list(np.cumsum(bits) / (n * h * w * 256))


def bd_rates(ref: dict[str, list[float]], cand: dict[str, list[float]]
             ) -> dict[str, float | None]:
    """BD-rate (%) of ``cand`` against ``ref`` per metric and range of iterations, over the
    points that beat every earlier one (BD needs rising curves)."""
    from bjontegaard import bd_rate

    def quality(c: dict[str, list[float]], metric: str) -> np.ndarray:
        q = np.array(c[metric])
        return -10 * np.log10(1 - q) if metric == "ms_ssim" else q

    out: dict[str, float | None] = {}
    for metric in ("psnr", "psnr_hvs", "ms_ssim"):
        a, b = quality(ref, metric), quality(cand, metric)
        for lo, hi in RANGES:
            if hi > len(a):
                continue
            s = slice(lo - 1, hi)
            ra, rb = np.array(ref["bpp"][s]), np.array(cand["bpp"][s])
            (ra, qa), (rb, qb) = increasing((ra, a[s])), increasing((rb, b[s]))
            with warnings.catch_warnings():  # it warns on small overlap
                warnings.simplefilter("ignore")
                v = (float(bd_rate(ra, qa, rb, qb, method="pchip", min_overlap=0,
                                     require_matching_points=False))
                     if min(len(ra), len(rb)) > 1 else math.nan)
            out[f"{metric}_{lo}-{hi}"] = v if math.isfinite(v) else None  # None: no overlap
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for spec, res in results.items():
        lines.append(f"== {spec}")
        n = len(res["psnr"])
        shown = [t for t in SHOWN if t <= n]
        lines.append("  iterations " + " ".join(f"{t:>7}" for t in shown))
        for metric, fmt in (("bpp", ".3f"), ("psnr", ".2f"), ("ms_ssim", ".4f"),
                            ("psnr_hvs", ".2f")):
            lines.append(f"  {metric:<10} " + " ".join(f"{res[metric][t - 1]:>7{fmt}}"
                                                      for t in shown))
        if res.get("bd"):
            lines.append("  BD-rate vs first: " + "  ".join(
                f"{k} {'-' if v is None else f'{v:+.1f}%'}" for k, v in res["bd"].items()))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="names, weights files or checkpoints; the first "
                    "is the reference")
    ap.add_argument("--data", default=TrainConfig.data,
                    help="training photos (default %(default)s)")
    ap.add_argument("--photos", type=int, default=TrainConfig.val_images,
                    help="held-out photos (default %(default)s, as training holds out)")
    ap.add_argument("--crop", type=int, default=TrainConfig.val_crop)
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--coded", action="store_true",
                    help="rates of the entropy-coded codes instead of raw bits")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.models = list(dict.fromkeys(args.models))  # each once
    checkpoints = [m for m in args.models if m.endswith(".pt")]
    if args.coded and checkpoints:  # before any model is coded: they have no entropy tables
        raise SystemExit(f"--coded needs exported weights with entropy tables, not "
                         f"{', '.join(checkpoints)}")
    crops = held_out(args.data, args.photos, args.crop)
    results: dict[str, dict[str, Any]] = {}
    for spec in args.models:
        print(f"coding {len(crops)} crops of {crops.shape[-1]} px with {spec}", file=sys.stderr,
              flush=True)
        results[spec] = curves(spec, crops, args.iterations, args.coded)
    ref = results[args.models[0]]
    for spec in args.models[1:]:
        results[spec]["bd"] = bd_rates(ref, results[spec])
    print(table(results))
    meta = {"data": args.data, "photos": len(crops), "crop": crops.shape[-1],
            "iterations": args.iterations, "coded": args.coded}
    args.out.write_text(json.dumps({"meta": meta, "models": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
