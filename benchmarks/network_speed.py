"""How fast the shipped model's encoder and decoder steps run under other numeric set-ups.

Run from the repository root on a quiet machine (no training, no tests beside it):

    python benchmarks/network_speed.py                        # kodim23 at 768×512, every
                                                              # variant, 1 and 2 threads
    python benchmarks/network_speed.py --variants fp32,bf16 --threads 1 --repeats 9
    python benchmarks/network_speed.py --size 256x256 --iterations 2 --repeats 1 \\
        --variants fp32,channels_last,bf16 --out /tmp/net.json           # a smoke run
    python benchmarks/network_speed.py --variants channels_last,bands --repeats 3  # bands

Variants (--variants; several joined with '+', e.g. channels_last+bf16):

- ``fp32``: float32 weights, the input tensor built as the codec builds it, everything in
  contiguous (NCHW) layout, inference mode. The codec runs every step on one intra-op thread,
  so fp32 on the first --threads count (default 1) is the baseline of every ratio.
- ``channels_last``: weights, input and reconstruction in NHWC memory format (the layout the
  codec runs in, ``engine.nhwc``).
- ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the steps (oneDNN's bf16
  kernels, fast where the CPU has AVX512-BF16 or AMX; the flags are in the JSON).
- ``compile``: ``torch.compile`` (inductor) of ``encode_soft`` and ``decode_step``; compiled
  afresh for each thread count, the compile time in ``first_pass_s``. Skipped with the error
  as a note where it does not work on this machine.
- ``bands``: the steps as the codec runs them (``engine._encode_soft`` and ``_decode_step``,
  channels-last): each on one intra-op thread, on as many row bands at once as the thread
  count allows (rnncodec/bands.py), with the whole step's results. Not with ``compile`` or
  ``bf16``.

Each variant runs at every --threads count (``torch.set_num_threads``). What is timed is the
closed loop ``compress`` runs for --iterations iterations (default 8) on one image: the encoder
step (``net.encode_soft`` and the signs: the bits) and the decoder step (``net.decode_step``:
the next reconstruction), each the mean over the iterations of one pass; a value is the median
over --repeats passes (default 7), the variants taking turns within each repeat so that a
machine's drift hits them alike. Ratios are a variant's time over the baseline's in the same
run (below 1: faster). One untimed pass per variant comes first (``first_pass_s``: warm-up,
and compilation for ``compile``).

Accuracy against the baseline, from that first pass: the largest absolute difference between
the two 8-bit reconstructions after the last iteration, the change in their PSNR to the image
(dB; negative: worse), and whether the bits (the signs of all iterations, each variant in its
own closed loop, as its encoder would send them) are identical to fp32's, with how many differ.

The image: --image (default Kodak's kodim23.png) cut to its central --size (default 768×512),
or a generated image of that size where the file is missing. Prints a table and writes JSON
(--out, default beside this script); the keys are described in ``write_json``. Measured figures
belong in the JSON and in README/docs, not here.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from rnncodec import engine
from rnncodec.evaluate.runner import environment
from rnncodec.frameworks import CodingState, RNNCompressor
from rnncodec.metrics import psnr
from rnncodec.zoo import DEFAULT_MODEL, load_model

KODAK = Path("../shared/data/kodak/kodim23.png")
BASELINE = "fp32"
FLAGS = ("channels_last", "bf16", "compile", "bands")  # what a variant may add to fp32
VARIANTS = ("fp32", "channels_last", "bf16", "channels_last+bf16", "compile")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

Encode = Callable[[Tensor, CodingState], tuple[Tensor, CodingState]]
Decode = Callable[[Tensor, CodingState], CodingState]


# --- the image ----------------------------------------------------------------------------


def generated(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like stand-in: smooth colour gradients, sinusoidal texture and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    planes = [0.5 + 0.25 * np.sin(fx * x + fy * y) * x + 0.2 * (y - 0.5) * c
              for c, (fx, fy) in enumerate(rng.uniform(2, 40, (3, 2)))]
    a = np.stack(planes, -1) * 255 + rng.normal(0, 4, (height, width, 3))
    return np.clip(a, 0, 255).round().astype(np.uint8)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' → (W, H), each rounded down to a multiple of 16 (the networks' block)."""
    w, h = (int(v) // 16 * 16 for v in text.lower().split("x"))
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} is under 16×16")
    return w, h


def load_rgb(path: Path, width: int, height: int) -> tuple[str, np.ndarray]:
    """(name, H×W×3 uint8): the central width×height of the photo (no more than it has, in
    whole blocks), or a generated image when the file is missing."""
    if not path.is_file():
        return f"generated:{width}x{height}", generated(width, height)
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    h, w = min(height, rgb.shape[0]) // 16 * 16, min(width, rgb.shape[1]) // 16 * 16
    y0, x0 = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    return path.name, np.ascontiguousarray(rgb[y0:y0 + h, x0:x0 + w])


def to_input(rgb: np.ndarray) -> Tensor:
    """1×3×H×W in [-0.5, 0.5] built as the codec builds it (rnncodec.images.to_tensor: a
    permuted view of the pixels), for sides that are multiples of 16."""
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255 - 0.5


def to_pixels(recon: Tensor) -> np.ndarray:
    """A reconstruction as H×W×3 uint8, rounded as the codec rounds (rnncodec.images.to_array)."""
    a = ((recon[0].float() + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()


# --- variants -------------------------------------------------------------------------------


@dataclass
class Variant:
    """How one set-up runs the networks: the two steps, the input and first state, and the
    context the steps run in."""

    name: str
    encode: Encode
    decode: Decode
    start: Callable[[Tensor], tuple[Tensor, CodingState]]
    context: Callable[[], AbstractContextManager[Any]] = nullcontext


def flags_of(name: str) -> set[str]:
    """'channels_last+bf16' → {'channels_last', 'bf16'}; 'fp32' → set(); 'bands' →
    {'bands', 'channels_last'}."""
    parts = set(name.split("+")) - {BASELINE}
    unknown = parts - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown variant part {', '.join(sorted(unknown))}; "
                         f"use {BASELINE} or {', '.join(FLAGS)}, joined with '+'")
    if "bands" in parts and parts & {"bf16", "compile"}:
        raise ValueError("bands run the codec's own steps, without bf16 or compile")
    return parts | {"channels_last"} if "bands" in parts else parts


def make_variant(name: str, net: RNNCompressor) -> Variant:
    """The variant ``name`` of the model (a copy of it where the weights change layout)."""
    flags = flags_of(name)
    layout = torch.channels_last if "channels_last" in flags else torch.contiguous_format
    net = copy.deepcopy(net).to(memory_format=layout)  # the zoo loads it channels-last

    def start(x: Tensor) -> tuple[Tensor, CodingState]:
        state = net.initial_state(x)
        if layout is torch.contiguous_format:
            return x, state
        return (x.contiguous(memory_format=layout),
                replace(state, recon=state.recon.contiguous(memory_format=layout)))

    encode: Encode = net.encode_soft
    decode: Decode = net.decode_step
    if "bands" in flags:  # the caller's thread count (run_variants sets it) in bands
        def encode(x: Tensor, state: CodingState) -> tuple[Tensor, CodingState]:
            return engine._encode_soft(net, x, state, engine.caller_threads())

        def decode(bits: Tensor, state: CodingState) -> CodingState:
            return engine._decode_step(net, bits, state, engine.caller_threads())
    if "compile" in flags:
        import torch._dynamo as dynamo

        dynamo.reset()  # compiled code may bake in the thread count: compile afresh
        encode, decode = torch.compile(encode), torch.compile(decode)
    context: Callable[[], AbstractContextManager[Any]] = nullcontext
    if "bf16" in flags:
        def context() -> AbstractContextManager[Any]:
            return torch.autocast("cpu", dtype=torch.bfloat16)
    return Variant(name, encode, decode, start, context)


# --- one closed loop ------------------------------------------------------------------------


@dataclass
class Pass:
    """One closed loop: seconds of each encoder and decoder step, the bits of every iteration
    (True: +1) and the reconstruction after the last."""

    encode_s: list[float]
    decode_s: list[float]
    codes: Tensor
    recon: Tensor


def closed_loop(v: Variant, x: Tensor, iterations: int) -> Pass:
    """``iterations`` iterations of the codec's loop: bits from the encoder, then the next
    reconstruction from the decoder."""
    encode_s, decode_s, codes = [], [], []
    with torch.inference_mode(), v.context():
        image, state = v.start(x)
        for _ in range(iterations):
            t0 = time.perf_counter()
            soft, state = v.encode(image, state)
            bits = torch.where(soft >= 0, 1.0, -1.0)  # float32, as the codec's ``signs``
            t1 = time.perf_counter()
            state = v.decode(bits, state)
            t2 = time.perf_counter()
            encode_s.append(t1 - t0)
            decode_s.append(t2 - t1)
            codes.append(bits > 0)
        recon = state.recon.float().contiguous()
    return Pass(encode_s, decode_s, torch.stack(codes), recon)


# --- results --------------------------------------------------------------------------------


@dataclass
class Row:
    """One variant at one thread count; times in seconds, medians over the repeats."""

    variant: str
    threads: int
    skipped: str | None = None
    first_pass_s: float | None = None
    encoder_step_s: float | None = None
    decoder_step_s: float | None = None
    iteration_s: float | None = None
    encoder_vs_fp32: float | None = None
    decoder_vs_fp32: float | None = None
    iteration_vs_fp32: float | None = None
    max_abs_diff: int | None = None
    psnr_db: float | None = None
    psnr_change_db: float | None = None
    bits_identical: bool | None = None
    bits_differing: int | None = None
    bits_total: int | None = None
    first_differing_iteration: int | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)


def compare(row: Row, first: Pass, base: Pass, rgb: np.ndarray) -> None:
    """Fill ``row``'s accuracy fields: ``first`` (the variant's pass) against ``base``'s."""
    mine, theirs = to_pixels(first.recon), to_pixels(base.recon)
    row.max_abs_diff = int(np.abs(mine.astype(np.int16) - theirs).max())
    row.psnr_db = psnr(rgb, mine)
    row.psnr_change_db = row.psnr_db - psnr(rgb, theirs)
    differ = first.codes != base.codes
    row.bits_differing, row.bits_total = int(differ.sum()), differ.numel()
    row.bits_identical = row.bits_differing == 0
    per_iteration = differ.flatten(1).any(1).nonzero()
    row.first_differing_iteration = int(per_iteration[0]) + 1 if len(per_iteration) else None


def summarise(row: Row, passes: Sequence[Pass]) -> None:
    """Fill ``row``'s times from its timed passes: per pass the mean step, then the median."""
    enc = [statistics.fmean(p.encode_s) for p in passes]
    dec = [statistics.fmean(p.decode_s) for p in passes]
    row.samples = {"encoder_step_s": enc, "decoder_step_s": dec}
    row.encoder_step_s, row.decoder_step_s = statistics.median(enc), statistics.median(dec)
    row.iteration_s = statistics.median([e + d for e, d in zip(enc, dec, strict=True)])


def add_ratios(rows: Sequence[Row]) -> None:
    """Each row's times over the baseline's (fp32 at the first thread count)."""
    base = next((r for r in rows if r.variant == BASELINE and r.skipped is None), None)
    if base is None:
        return
    for r in rows:
        if r.skipped is None:
            r.encoder_vs_fp32 = r.encoder_step_s / base.encoder_step_s
            r.decoder_vs_fp32 = r.decoder_step_s / base.decoder_step_s
            r.iteration_vs_fp32 = r.iteration_s / base.iteration_s


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def run_variants(net: RNNCompressor, rgb: np.ndarray, variants: Sequence[str],
                 threads: Sequence[int], iterations: int, repeats: int,
                 log: Callable[[str], None] = lambda _: None) -> list[Row]:
    """Every variant at every thread count: a first pass (accuracy against fp32 on the first
    thread count), then ``repeats`` timed passes, the variants taking turns."""
    names = [BASELINE, *(v for v in variants if v != BASELINE)]
    x = to_input(rgb)
    rows: list[Row] = []
    base: Pass | None = None
    saved = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            ready: list[tuple[Row, Variant]] = []
            for name in names:
                row = Row(name, t)
                rows.append(row)
                log(f"{name}, {t} thread(s): first pass ...")
                try:
                    v = make_variant(name, net)
                    start = time.perf_counter()
                    first = closed_loop(v, x, iterations)
                    row.first_pass_s = time.perf_counter() - start
                except Exception as e:  # a variant this machine cannot run; not the baseline
                    if name == BASELINE:
                        raise
                    row.skipped = first_line(e)
                    log(f"{name} skipped: {row.skipped}")
                    continue
                if name == BASELINE and base is None:
                    base = first  # fp32 on the first thread count: what the others match
                if base is not None:
                    compare(row, first, base, rgb)
                ready.append((row, v))
            passes: dict[int, list[Pass]] = {id(r): [] for r, _ in ready}
            for i in range(repeats):
                log(f"{t} thread(s): repeat {i + 1} of {repeats} ...")
                for row, v in ready:
                    passes[id(row)].append(closed_loop(v, x, iterations))
            for row, _ in ready:
                summarise(row, passes[id(row)])
    finally:
        torch.set_num_threads(saved)
    add_ratios(rows)
    return rows


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.1f}"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def table(rows: Sequence[Row]) -> str:
    """A markdown table, one row per variant and thread count."""
    head = ["variant", "threads", "encoder ms", "decoder ms", "iteration ms", "encoder ×fp32",
            "decoder ×fp32", "iteration ×fp32", "max |Δ| px", "ΔPSNR dB", "bits", "first pass s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.skipped:
            cells = [r.variant, str(r.threads), f"skipped: {r.skipped}", *[""] * (len(head) - 3)]
        else:
            bits = "identical" if r.bits_identical else \
                f"{r.bits_differing} of {r.bits_total} differ (from iteration " \
                f"{r.first_differing_iteration})"
            cells = [r.variant, str(r.threads), _ms(r.encoder_step_s), _ms(r.decoder_step_s),
                     _ms(r.iteration_s), _x(r.encoder_vs_fp32), _x(r.decoder_vs_fp32),
                     _x(r.iteration_vs_fp32), str(r.max_abs_diff), f"{r.psnr_change_db:+.3f}",
                     bits, f"{r.first_pass_s:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cpu_flags() -> list[str]:
    """Which of ``CPU_FLAGS`` /proc/cpuinfo lists (bf16 speed depends on them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), []))
    return [f for f in CPU_FLAGS if f in found]


def write_json(rows: Sequence[Row], meta: dict[str, Any], path: Path) -> None:
    """The run as JSON: ``meta`` (command, created, environment with ``cpu_flags``, model and
    weights digest, image, width, height, iterations, repeats, statistic, baseline), then
    ``variants``: one object per row (``Row``'s fields: times in seconds, medians; ``*_vs_fp32``
    the time over the baseline's; ``samples`` the per-repeat mean step times; accuracy against
    the baseline; ``skipped`` the reason a variant did not run, else null). Non-finite numbers
    (the PSNR of identical images) are written as "inf", as in docs/results-schema.md."""
    def finite(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
        return v

    doc = meta | {"variants": [{k: finite(v) for k, v in asdict(r).items()} for r in rows]}
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


# --- the run --------------------------------------------------------------------------------


def ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def variant_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    try:
        for name in names:
            flags_of(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="See the module docstring for what is measured.")
    ap.add_argument("--image", type=Path, default=KODAK,
                    help="photo to code (a generated image if missing)")
    ap.add_argument("--size", type=parse_size, default=(768, 512),
                    help="WxH cut from the photo's centre (default 768x512)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or weights file")
    ap.add_argument("--variants", type=variant_list, default=list(VARIANTS),
                    help=f"comma-separated (default {','.join(VARIANTS)})")
    ap.add_argument("--threads", type=ints, default=[1, 2],
                    help="thread counts (default 1,2; the first is the baseline's)")
    ap.add_argument("--iterations", type=int, default=8, help="iterations per pass (default 8)")
    ap.add_argument("--repeats", type=int, default=7, help="timed passes; medians (default 7)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"),
                    help="JSON to write (default: beside this script)")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1:
        ap.error("--iterations and --repeats must be at least 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    name, rgb = load_rgb(args.image, *args.size)
    loaded = load_model(args.model)
    rows = run_variants(loaded.net, rgb, args.variants, args.threads, args.iterations,
                        args.repeats, log)
    print(f"{loaded.name} on {name} ({rgb.shape[1]}×{rgb.shape[0]}), {args.iterations} "
          f"iterations, medians of {args.repeats}; ratios to {BASELINE} on "
          f"{args.threads[0]} thread(s):\n")
    print(table(rows))
    command = shlex.join(["python", "benchmarks/network_speed.py",
                          *(sys.argv[1:] if argv is None else argv)])
    meta = {"command": command, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment() | {"cpu_flags": " ".join(cpu_flags())},
            "model": loaded.name, "weights": loaded.digest.hex(), "image": name,
            "width": rgb.shape[1], "height": rgb.shape[0], "iterations": args.iterations,
            "repeats": args.repeats, "statistic": "median",
            "baseline": f"{BASELINE}, {args.threads[0]} thread(s)"}
    write_json(rows, meta, args.out)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
