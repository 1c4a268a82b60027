"""Training throughput (patches/s) of the shipped configuration, with and without amp/compile.

    python benchmarks/train_throughput.py                          # every variant
    python benchmarks/train_throughput.py --variants fp32,amp --seconds 5 --json tp.json
    python benchmarks/train_throughput.py --width 0.5 --batch 512      # a GPU run's settings

By default the first shipped configuration: residual-gru cells, residual-scaling, width 0.25,
16 iterations, batch 32 of 32×32 patches, on the first device ``TrainConfig.device = "auto"`` picks. One
training step is the loop's: zero_grad, forward + backward (``train_step``), gradient clipping,
Adam. Each variant runs one warm-up step first (for ``compile``, that is the compile time,
reported separately), then steps for ``--seconds`` on one fixed batch, so the numbers are the
model's; drawing patches (on the CPU, in this process) is timed on its own, with and without
hard-patch mining, and so is drawing from a patch bank cut on the device (``bank``). A variant that fails (compile without a working C++ toolchain, say) is
skipped with a note. On a small CPU compile's warm-up alone takes minutes (115 s for a
2-iteration, width-0.03 model on the 2-core development box). On a shared CPU set
OMP_NUM_THREADS to the free cores: with more torch threads than free cores, steps slow down
many times over. Prints a table as it goes and optionally writes JSON.
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

VARIANTS = {"fp32": (False, False), "amp": (True, False), "compile": (False, True),
            "amp+compile": (True, True)}


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
        img = 0.5 + 0.3 * torch.sin(f * x + y * 4) * y + torch.randn(3, size, size, generator=g) / 50
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return out


def step_rate(cfg: TrainConfig, batch: torch.Tensor, seconds: float) -> dict[str, float]:
    """Warm-up time and patches/s of full training steps on one batch."""
    dev = batch.device
    torch.manual_seed(0)
    model = RNNCompressor(ModelConfig(cfg.cell, cfg.framework, cfg.width)).to(dev)
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
    args = ap.parse_args()
    cfg = TrainConfig(width=args.width, iterations=16, patch=32, batch=args.batch)
    dev = resolve_device(cfg.device)
    images = pool()
    batch = draw_batch(images, cfg, random.Random(0)).to(dev)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"cpu, {torch.get_num_threads()} torch threads"
    print(f"training throughput on {where}, torch {torch.__version__}")
    print(f"{'variant':<12} {'warm-up s':>9} {'steps':>5} {'ms/step':>8} {'patches/s':>9}",
          flush=True)
    rows, notes = [], []
    for name in args.variants.split(","):  # each row as it comes: compile can take minutes
        amp, compiled = VARIANTS[name]
        try:
            r = step_rate(replace(cfg, amp=amp, compile=compiled), batch, args.seconds)
        except Exception as e:  # noqa: BLE001 — a variant this machine cannot run is a note
            notes.append(f"{name} skipped: {type(e).__name__}: {str(e).splitlines()[0]}")
            continue
        rows.append({"variant": name, **r})
        print(f"{name:<12} {r['warmup_s']:9.2f} {r['steps']:5d} {r['step_ms']:8.1f} "
              f"{r['patches_per_s']:9.1f}", flush=True)
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
