"""What a model costs: weights, network FLOPs per iteration, and compress / decompress time,
for several models side by side.

Run from the repository root on a quiet machine (no training, no tests beside it):

    python benchmarks/model_cost.py                          # the registered models
    python benchmarks/model_cost.py --models rgru-rs-w25,runs/c20/model.safetensors
    python benchmarks/model_cost.py --models rgru-rs-w25 --configs coarse=1.5,coarse=2 \\
        --no-time                                            # FLOPs of shapes not yet trained
    python benchmarks/model_cost.py --size 256x256 --iterations 2 --repeats 1 \\
        --out /tmp/cost.json                                 # a smoke run

- ``--models``: names or weights files. ``--configs``: the first model's configuration with
  fields changed (``coarse=1.5``, ``width=0.5+coarse=2``), with fresh weights: their FLOPs
  and times are real, their pictures are not.
- FLOPs: ``torch.utils.flop_counter`` over one encoder step (gain estimator, encoder,
  binarizer) and one decoder step of an iteration after the first (the steady state; the
  first has no hidden states to convolve) on an image of --size (default 768×512). Weights:
  parameter count and their fp16 size.
- Time: ``rnncodec.compress(image, iterations=N)`` and ``rnncodec.decompress`` of its file as
  a user calls them (default entropy coder, torch threads as they are; set OMP_NUM_THREADS
  to pin), the models taking turns within each of --repeats rounds, medians; one untimed
  round first. Per iteration: the median over N.
- Ratios: each figure over the first model's, from the same run.

The image: --image (default Kodak's kodim23.png) cut to its central --size, or a generated
image of that size where the file is missing. Prints a table and writes JSON (--out, default
beside this script). Measured figures belong in the JSON and in docs, not here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from network_speed import KODAK, load_rgb, parse_size  # noqa: E402

import rnncodec  # noqa: E402
from rnncodec.frameworks import ModelConfig, RNNCompressor  # noqa: E402
from rnncodec.registry import MODELS  # noqa: E402
from rnncodec.zoo import load_model, save_weights  # noqa: E402


@dataclass
class Row:
    model: str  # a name, a weights file, or "<first model> + changes" for fresh weights
    config: dict[str, Any]
    params: int
    weights_mib: float  # fp16
    encoder_gflop: float  # per iteration at the benchmark's size
    decoder_gflop: float
    weights_file: str = ""  # what compress and decompress load
    compress_s: list[float] = field(default_factory=list)
    decompress_s: list[float] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)


def step_flops(net: RNNCompressor, width: int, height: int) -> tuple[float, float]:
    """GFLOP of one steady-state encoder step and decoder step on a width×height image."""
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        state = net.initial_state(x)
        bits, state = net.encode_step(x, state, stochastic=False)
        state = net.decode_step(bits, state)
        with FlopCounterMode(display=False) as enc:
            bits, state = net.encode_step(x, state, stochastic=False)
        with FlopCounterMode(display=False) as dec:
            net.decode_step(bits, state)
    return enc.get_total_flops() / 1e9, dec.get_total_flops() / 1e9


def parse_changes(text: str) -> dict[str, float | int | str]:
    """'coarse=1.5+width=0.5' → {'coarse': 1.5, 'width': 0.5}, checked against ModelConfig."""
    fields = ModelConfig.__dataclass_fields__
    changes: dict[str, float | int | str] = {}
    for part in text.split("+"):
        key, sep, value = part.partition("=")
        if not sep or key not in fields:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        kind = type(getattr(ModelConfig(), key))
        try:
            changes[key] = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: {value!r} is not a {kind.__name__}") from None
    return changes


def describe(name: str, net: RNNCompressor, size: tuple[int, int], weights_file: str) -> Row:
    enc, dec = step_flops(net, *size)
    params = sum(p.numel() for p in net.parameters())
    return Row(name, net.config.to_dict(), params, params * 2 / 2**20, enc, dec, weights_file)


def build_rows(models: Sequence[str], configs: Sequence[dict[str, Any]], size: tuple[int, int],
               scratch: Path) -> list[Row]:
    rows = []
    for name in models:
        loaded = load_model(name)
        weights = str(MODELS[name].path) if name in MODELS else name
        rows.append(describe(name, loaded.net.float().eval(), size, weights))
    base = ModelConfig(**rows[0].config)
    for i, changes in enumerate(configs):
        torch.manual_seed(i)
        net = RNNCompressor(replace(base, **changes)).eval()
        label = f"{models[0]} + " + "+".join(f"{k}={v}" for k, v in changes.items())
        path = scratch / f"config{i}.safetensors"
        save_weights(net, path)
        rows.append(describe(label, net, size, str(path)))
    return rows


def time_rounds(rows: Sequence[Row], image: Image.Image, iterations: int, repeats: int,
                log: Callable[[str], None]) -> None:
    """Compress and decompress with each model in turn, once untimed, then ``repeats`` rounds."""
    for r in range(repeats + 1):
        for row in rows:
            t0 = time.perf_counter()
            data = rnncodec.compress(image, iterations=iterations, model=row.weights_file)
            t1 = time.perf_counter()
            rnncodec.decompress(data, model=row.weights_file)
            t2 = time.perf_counter()
            if r:
                row.compress_s.append(t1 - t0)
                row.decompress_s.append(t2 - t1)
        log(f"round {r}/{repeats} done" if r else "warm-up round done")


def add_ratios(rows: Sequence[Row]) -> None:
    base = rows[0]
    for row in rows:
        row.ratios = {"encoder_gflop": row.encoder_gflop / base.encoder_gflop,
                      "decoder_gflop": row.decoder_gflop / base.decoder_gflop,
                      "params": row.params / base.params}
        if row.compress_s and base.compress_s:
            row.ratios["compress_s"] = (statistics.median(row.compress_s)
                                        / statistics.median(base.compress_s))
            row.ratios["decompress_s"] = (statistics.median(row.decompress_s)
                                          / statistics.median(base.decompress_s))


def _per_it(values: list[float], iterations: int) -> str:
    return f"{1000 * statistics.median(values) / iterations:.0f}" if values else "-"


def table(rows: Sequence[Row], iterations: int) -> str:
    head = (f"{'model':<44} {'params':>9} {'MiB':>5} {'enc GFLOP':>9} {'dec GFLOP':>9} "
            f"{'enc ms/it':>9} {'dec ms/it':>9} {'×dec GFLOP':>10} {'×decode':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        dec_x = r.ratios.get("decompress_s")
        lines.append(f"{r.model[-44:]:<44} {r.params:>9,} {r.weights_mib:>5.1f} "
                     f"{r.encoder_gflop:>9.2f} {r.decoder_gflop:>9.2f} "
                     f"{_per_it(r.compress_s, iterations):>9} "
                     f"{_per_it(r.decompress_s, iterations):>9} "
                     f"{r.ratios['decoder_gflop']:>10.2f} "
                     f"{'-' if dec_x is None else f'{dec_x:.2f}':>8}")
    return "\n".join(lines)


def write_json(rows: Sequence[Row], meta: dict[str, Any], path: Path) -> None:
    """``meta``: the run's settings; ``rows``: one per model with its figures, the raw times
    (seconds per compress or decompress of all iterations) and ratios to the first row."""
    path.write_text(json.dumps({"meta": meta, "rows": [vars(r) for r in rows]}, indent=1) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS),
                    help="comma-separated names or weights files (default: the registered ones)")
    ap.add_argument("--configs", type=lambda s: [parse_changes(c) for c in s.split(",")],
                    default=[], help="the first model's configuration changed, e.g. coarse=1.5")
    ap.add_argument("--image", type=Path, default=KODAK)
    ap.add_argument("--size", type=parse_size, default=(768, 512), help="WxH (default 768x512)")
    ap.add_argument("--iterations", type=int, default=8, help="iterations coded (default 8)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds; medians (default 5)")
    ap.add_argument("--time", action=argparse.BooleanOptionalAction, default=True,
                    help="time compress and decompress (default) or only count")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    name, rgb = load_rgb(args.image, *args.size)
    with tempfile.TemporaryDirectory() as scratch:
        rows = build_rows(args.models, args.configs, (rgb.shape[1], rgb.shape[0]), Path(scratch))
        if args.time:
            time_rounds(rows, Image.fromarray(rgb), args.iterations, args.repeats,
                        lambda m: print(m, file=sys.stderr, flush=True))
    add_ratios(rows)
    print(table(rows, args.iterations))
    meta = {"image": name, "size": [rgb.shape[1], rgb.shape[0]], "iterations": args.iterations,
            "repeats": args.repeats, "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    write_json(rows, meta, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
