"""How much could spatially adaptive bit rates save with a model's decoder as it is?

    python benchmarks/adaptive_ceiling.py photo1.png photo2.jpg ...      # held-out photos
    python benchmarks/adaptive_ceiling.py --criteria gain --decoders zeros,frozen-oracle a.png
    python benchmarks/adaptive_ceiling.py --metric psnr --criteria psnr,mse-gain a.png

Codes each image uniformly (32 bits per 16×16 block per iteration) and with blocks stopped
by a per-block criterion (adaptive.py), then compares the RD curves: MS-SSIM (in dB of
1 − MS-SSIM) or PSNR (``--metric``) against raw bits per pixel, before entropy coding. An
adaptive file also sends, per iteration, which active blocks stop; that map is charged at its
binary entropy.

Criteria (each with several settings, whose points together form the adaptive curve):

- ``ssim``: a block stops once its SSIM quality reaches a threshold in dB;
- ``gain``: a block stops once its last iteration raised its SSIM by less than λ (a greedy
  rate-distortion rule: the next 32 bits are expected to buy as little);
- ``psnr``: a block stops once its PSNR reaches a threshold;
- ``mse-gain``: a block stops once its last iteration lowered its mean squared error by less
  than λ (the greedy rule for PSNR: every block's next bits buy at least λ of the image's
  squared error).

Decoders for the stopped blocks:

- ``zeros``: reads zeros for their bits, as an adaptive file decodes (``adaptive.mask_bits``);
- ``frozen-oracle``: is fed their real bits, unsent and uncounted, but their pixels stay as
  they were when they stopped: a bound on what a decoder trained to read zeros can do while
  keeping stopped blocks as they are;
- ``free-oracle``: is fed their real bits and lets them go on improving, still uncounted:
  not reachable, shown because it is what a naive comparison measures.

BD-rate: mean log-rate difference of the adaptive curve's upper envelope (uniform points
included) against the uniform curve of iterations 1–8, over the quality range both cover;
negative is a saving. Prints a table per image and the mean; writes JSON next to this script.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rnncodec.adaptive import BLOCK, block_quality, block_ssim, mask_bits, still_active
from rnncodec.frameworks import CodingState
from rnncodec.images import load_image, to_array, to_tensor
from rnncodec.metrics import ms_ssim, ms_ssim_db, psnr
from rnncodec.refine import signs
from rnncodec.zoo import DEFAULT_MODEL, load_model

SETTINGS = {"ssim": (7.0, 10.0, 13.0), "gain": (0.002, 0.005, 0.01, 0.02),
            "psnr": (27.0, 30.0, 33.0, 36.0), "mse-gain": (1e-5, 3e-5, 1e-4, 3e-4)}
METRICS = ("ms-ssim", "psnr")
DECODERS = ("zeros", "frozen-oracle", "free-oracle")
UNIFORM_ITERATIONS = 8  # the uniform curve the adaptive one is compared with


@dataclass
class Point:
    iteration: int
    bpp: float
    ms_ssim: float
    psnr: float
    active: float  # fraction of blocks still active after this iteration


def _map_bits(active: int, stopping: int) -> float:
    """Bits to say which of ``active`` blocks stop, at the binary entropy of the fraction."""
    p = stopping / active if active else 0.0
    if p in (0.0, 1.0):
        return 0.0
    return -active * (p * math.log2(p) + (1 - p) * math.log2(1 - p))


def code(net: torch.nn.Module, rgb: np.ndarray, iterations: int, criterion: str | None = None,
         setting: float = 0.0, decoder: str = "zeros") -> list[Point]:
    """The RD points after iterations 1..``iterations``: uniform without a ``criterion``."""
    height, width = rgb.shape[:2]
    x = to_tensor(rgb)
    state = net.initial_state(x)
    active: torch.Tensor | None = None
    last = torch.zeros(1)  # the gain criteria's block measure after the previous iteration
    bits, points = 0.0, []
    blocks = x.shape[-2] // BLOCK * x.shape[-1] // BLOCK
    for t in range(iterations):
        n_active = blocks if active is None else int(active.sum())
        soft, state = net.encode_soft(x, state)
        b = signs(soft)
        previous = state.recon
        state = net.decode_step(b if decoder != "zeros" else mask_bits(b, active), state)
        if decoder == "frozen-oracle" and active is not None:
            keep = F.interpolate(active.float(), scale_factor=BLOCK, mode="nearest")
            state = CodingState(previous + keep * (state.recon - previous), state.enc, state.dec)
        bits += 32 * n_active
        if criterion is not None:
            if criterion in ("ssim", "psnr"):
                go_on = still_active(active, block_quality(x, state.recon, criterion), setting)
            else:
                now = (block_ssim(x, state.recon) if criterion == "gain"
                       else -F.avg_pool2d(((x - state.recon) ** 2).mean(1, keepdim=True), BLOCK))
                gain = now - last if t else torch.full_like(now, math.inf)
                go_on = still_active(active, -gain, -setting)
                last = now
            bits += _map_bits(n_active, n_active - int(go_on.sum()))
            active = go_on
        decoded = to_array(state.recon, height, width)
        points.append(Point(t + 1, bits / (height * width), ms_ssim(rgb, decoded),
                            psnr(rgb, decoded),
                            1.0 if active is None else float(active.float().mean())))
    return points


def _envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no cheaper point beats, by rate."""
    out: list[tuple[float, float]] = []
    for rate, quality in sorted(points):
        if not out or quality > out[-1][1]:
            out.append((rate, quality))
    return out


def bd_rate(reference: list[tuple[float, float]], test: list[tuple[float, float]]
            ) -> tuple[float, float, float]:
    """(percent rate change of ``test`` at equal quality, low, high end of the quality range)."""
    rq, rr = np.array([q for _, q in reference]), np.log([r for r, _ in reference])
    tq, tr = np.array([q for _, q in test]), np.log([r for r, _ in test])
    low, high = max(rq.min(), tq.min()), min(rq.max(), tq.max())
    if high <= low:
        return math.nan, low, high
    grid = np.linspace(low, high, 200)
    diff = np.interp(grid, tq, tr) - np.interp(grid, rq, rr)
    return float(np.expm1(diff.mean()) * 100), float(low), float(high)


def _curve(points: list[Point], metric: str) -> list[tuple[float, float]]:
    return [(p.bpp, ms_ssim_db(p.ms_ssim) if metric == "ms-ssim" else p.psnr) for p in points]


def measure(net: torch.nn.Module, rgb: np.ndarray, iterations: int, criteria: list[str],
            decoders: list[str], metric: str = "ms-ssim") -> dict:
    """Uniform and adaptive points of one image, and each (criterion, decoder)'s BD-rate."""
    uniform = code(net, rgb, iterations)
    reference = _envelope(_curve(uniform[:UNIFORM_ITERATIONS], metric))
    result: dict = {"uniform": [vars(p) for p in uniform], "adaptive": {}, "bd_rate": {}}
    for criterion in criteria:
        for decoder in decoders:
            key = f"{criterion}/{decoder}"
            runs = {s: code(net, rgb, iterations, criterion, s, decoder)
                    for s in SETTINGS[criterion]}
            result["adaptive"][key] = {str(s): [vars(p) for p in pts] for s, pts in runs.items()}
            pooled = [c for pts in runs.values() for c in _curve(pts, metric)] + reference
            pct, low, high = bd_rate(reference, _envelope(pooled))
            result["bd_rate"][key] = {"percent": pct, "range_db": [low, high]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--metric", choices=METRICS, default="ms-ssim",
                        help="the quality the RD curves and BD-rates are in")
    parser.add_argument("--criteria", default="ssim,gain")
    parser.add_argument("--decoders", default=",".join(DECODERS))
    parser.add_argument("--json", type=Path, help="where to write the results (default: next "
                        "to this script, one file per metric)")
    args = parser.parse_args()
    criteria, decoders = args.criteria.split(","), args.decoders.split(",")
    suffix = "" if args.metric == "ms-ssim" else f"_{args.metric}"
    out = args.json or Path(__file__).with_name(f"{Path(__file__).stem}{suffix}.json")
    torch.set_num_threads(1)
    net = load_model(args.model).net
    results = {}
    with torch.inference_mode():
        for path in args.images:
            rgb, _ = load_image(path)
            results[path.name] = measure(net, rgb, args.iterations, criteria, decoders,
                                         args.metric)
            for key, bd in results[path.name]["bd_rate"].items():
                low, high = bd["range_db"]
                print(f"| {path.name} | {key} | {bd['percent']:+.1f}% | {low:.1f}–{high:.1f} dB |",
                      flush=True)
    keys = next(iter(results.values()))["bd_rate"].keys()
    means = {k: float(np.nanmean([r["bd_rate"][k]["percent"] for r in results.values()]))
             for k in keys}
    print("\n| criterion/decoder | mean BD-rate vs uniform |\n|---|---|")
    for key, value in means.items():
        print(f"| {key} | {value:+.1f}% |")
    out.write_text(json.dumps({"model": args.model, "iterations": args.iterations,
                                     "metric": args.metric,
                                     "settings": SETTINGS, "mean_bd_rate": means,
                                     "images": results}, indent=1))


if __name__ == "__main__":
    main()
