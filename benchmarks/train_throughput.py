"""Training throughput (patches/s) of a configuration, in each layout and precision.

    python benchmarks/train_throughput.py                          # every variant
    python benchmarks/train_throughput.py --variants fp32,amp --seconds 5 --json tp.json
    python benchmarks/train_throughput.py --width 0.5 --batch 512      # a GPU run's settings
    python benchmarks/train_throughput.py --patch 128 --batch 2 --loss db --threads 1,2
                                                                   # the CPU recipe

Variants: fp32, ``amp`` (bf16 autocast: AVX512-bf16 on recent x86 CPUs), ``cl``
(channels_last, oneDNN's NHWC layout), ``compile`` (``torch.compile``) and their combinations.
``--loss`` picks the training loss: ``l1`` (the paper's), ``ms-ssim`` (L1 + 3 × (1 − MS-SSIM),
patches ≥ 48 px) or ``db`` (−PSNR and −MS-SSIM in dB). ``--threads`` runs every variant at
each torch thread count. By default: residual-gru cells, residual-scaling, width 0.25,
16 iterations, batch 32 of 32×32 patches, sign bits, on the first device
``TrainConfig.device = "auto"`` picks. One training step is the loop's: zero_grad, forward +
backward (``train_step``), gradient clipping, Adam. Each variant runs one warm-up step first
(for ``compile``, that is the compile time, reported separately), then steps for ``--seconds``
on one fixed batch, so the numbers are the model's; drawing patches (on the CPU, in this
process) is timed on its own, with and without hard-patch mining, and so is drawing from a
patch bank cut on the device (``bank``). A variant that fails (compile without a working C++
toolchain, say) is skipped with a note. On a small CPU compile's warm-up alone takes minutes.
On a shared CPU set the thread count to the free cores: with more torch threads than free
cores, steps slow down many times over. Prints a table as it goes and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rnncodec.frameworks import ModelConfig, RNNCompressor
from rnncodec.train import (
    TrainConfig,
    bank_batch,
    draw_batch,
    patch_bank,
    resolve_device,
    train_step,
)

VARIANTS = {"fp32": (False, False, False), "amp": (True, False, False),
            "cl": (False, True, False), "amp+cl": (True, True, False),
            "compile": (False, False, True), "amp+compile": (True, False, True)}
LOSSES = {"l1": {}, "ms-ssim": {"ms_ssim": 3.0},
          "db": {"l1": 0.0, "psnr_db": 0.01, "ms_ssim_db": 0.01}}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def pool(n: int = 8, size: int = 256, seed: int = 0) -> list[torch.Tensor]:
    """Photo-like uint8 images: smooth gradients, one texture, mild noise."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        f = torch.rand(3, 1, 1, generator=g) * 30
        noise = torch.randn(3, size, size, generator=g) / 50
        img = 0.5 + 0.3 * torch.sin(f * x + y * 4) * y + noise
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return out


def step_rate(cfg: TrainConfig, batch: torch.Tensor, seconds: float) -> dict[str, float]:
    """Warm-up time and patches/s of full training steps on one batch."""
    dev = batch.device
    torch.manual_seed(0)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = RNNCompressor(ModelConfig(cfg.cell, cfg.framework, cfg.width))
    model = model.to(dev, memory_format=layout)
    batch = batch.contiguous(memory_format=layout)
    net = torch.compile(model) if cfg.compile else model
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        train_step(net, batch, cfg)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    t0 = time.perf_counter()
    step()
    sync(dev)
    warmup = time.perf_counter() - t0
    steps, t0 = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    sync(dev)
    elapsed = time.perf_counter() - t0
    return {"warmup_s": warmup, "steps": steps, "step_ms": 1000 * elapsed / steps,
            "patches_per_s": steps * cfg.batch / elapsed}


def draw_rate(cfg: TrainConfig, images: list[torch.Tensor], seconds: float) -> float:
    rng, n, t0 = random.Random(0), 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        draw_batch(images, cfg, rng)
        n += 1
    return n * cfg.batch / (time.perf_counter() - t0)


def bank_rate(cfg: TrainConfig, images: list[torch.Tensor], dev: torch.device,
              seconds: float) -> float:
    bank, n = patch_bank(images, 100_000, cfg.patch, random.Random(0), dev), 0
    sync(dev)
    t0 = time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        bank_batch(bank, cfg.batch)
        n += 1
    sync(dev)
    return n * cfg.batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed steps per variant")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--loss", choices=LOSSES, default="l1")
    ap.add_argument("--threads", default="", help="comma-separated torch thread counts "
                    "(default: torch's own)")
    args = ap.parse_args()
    cfg = TrainConfig(width=args.width, iterations=args.iterations, patch=args.patch,
                      batch=args.batch, binarize="sign", **LOSSES[args.loss])
    dev = resolve_device(cfg.device)
    images = pool()
    batch = draw_batch(images, cfg, random.Random(0)).to(dev)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"training throughput on {where}, torch {torch.__version__}, {args.patch}-px "
          f"patches, batch {args.batch}, {args.iterations} iterations, loss {args.loss}")
    print(f"{'variant':<12} {'threads':>7} {'warm-up s':>9} {'steps':>5} {'ms/step':>8} "
          f"{'patches/s':>9} {'vs fp32':>7}", flush=True)
    rows, notes = [], []
    threads = [int(t) for t in args.threads.split(",") if t] or [torch.get_num_threads()]
    for n in threads:
        torch.set_num_threads(n)
        base = None
        for name in args.variants.split(","):  # each row as it comes: compile takes minutes
            amp, cl, compiled = VARIANTS[name]
            try:
                r = step_rate(replace(cfg, amp=amp, channels_last=cl, compile=compiled), batch,
                              args.seconds)
            except Exception as e:  # noqa: BLE001 — a variant this machine cannot run is a note
                notes.append(f"{name} skipped: {type(e).__name__}: {str(e).splitlines()[0]}")
                continue
            base = base or (r["patches_per_s"] if name == "fp32" else None)
            ratio = r["patches_per_s"] / base if base else float("nan")
            rows.append({"variant": name, "threads": n, **r, "vs_fp32": ratio})
            print(f"{name:<12} {n:7d} {r['warmup_s']:9.2f} {r['steps']:5d} {r['step_ms']:8.1f} "
                  f"{r['patches_per_s']:9.2f} {ratio:7.2f}", flush=True)
    drawing = {f"hard_patches={h}": draw_rate(replace(cfg, hard_patches=h), images,
                                              min(args.seconds, 3))
               for h in (0.0, 0.25)}
    drawing["bank"] = bank_rate(cfg, images, dev, min(args.seconds, 3))
    for k, v in drawing.items():
        where_drawn = f"on {dev.type}" if k == "bank" else "one process, CPU"
        print(f"patch drawing ({k}): {v:.0f} patches/s ({where_drawn})")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        args.json.write_text(json.dumps({
            "device": where, "torch": torch.__version__, "config": asdict(cfg), "steps": rows,
            "drawing_patches_per_s": drawing, "notes": notes}, indent=2) + "\n")


if __name__ == "__main__":
    main()
