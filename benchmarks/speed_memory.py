"""Encode/decode speed (megapixels per second) and peak memory of a model and standard codecs.

    python benchmarks/speed_memory.py                      # Kodak image (if present) + 12 MP
    python benchmarks/speed_memory.py --size 2000x1500     # a smaller generated image
    python benchmarks/speed_memory.py --size none          # the Kodak image only

Each (image, codec) case runs in a fresh Python process, so memory freed by an earlier case
cannot hide a later one's allocations. Inside it the codec is warmed up once on a small image
(model weights loaded, libraries initialised), then the image is encoded and decoded once per
setting. The model is encoded once at the highest iteration count and read after 4, 8 and 16
iterations (the same work a shorter encode does); peak RSS is the growth over the process's RSS
after warm-up — interpreter, torch and weights excluded (see rnncodec.evaluate.measure). Runs on
the CPU with torch's thread setting (set OMP_NUM_THREADS to pin it). Prints a table and writes
the points in the results format of docs/results-schema.md (quality metrics left null).

The 12-megapixel model case is slow on a small CPU: on the 2-core development box (one torch
thread, sharing the CPU with a training run) the 16-iteration encode took 528 s and the decode
350 s, with 6.5 GB of extra RSS; the whole script took 16 minutes. Use --size for a smaller
generated image (or 'none').
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rnncodec.evaluate.codecs import Codec, classic_codec, rnn_codec
from rnncodec.evaluate.report import md_table, mib, mp_per_s
from rnncodec.evaluate.results import CodecInfo, Point, Results, point_from_dict, write_json
from rnncodec.evaluate.runner import EvalImage, environment, score
from rnncodec.images import load_image
from rnncodec.zoo import DEFAULT_MODEL

KODAK = Path("../shared/data/kodak/kodim23.png")
GENERATED = "generated:"
QUALITY = {"jpeg-420": 75, "webp": 75, "avif": 60, "jxl": 75}  # mid-rate settings, for context


def synthetic(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like test image: smooth colour gradients, a few sinusoidal textures, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    planes = []
    for c in range(3):
        fx, fy, phase = (float(v) for v in rng.uniform((2, 2, 0), (40, 40, 6)))
        planes.append(0.5 + 0.25 * np.sin(fx * x + fy * y + phase) * x + 0.2 * (y - 0.5) * c)
    a = np.stack(planes, axis=-1) * 255 + rng.normal(0, 4, (height, width, 3)).astype(np.float32)
    return np.clip(a, 0, 255).round().astype(np.uint8)


def load(spec: str) -> EvalImage:
    """'generated:WxH' for a generated image, else a path."""
    if spec.startswith(GENERATED):
        w, h = (int(v) for v in spec.removeprefix(GENERATED).split("x"))
        return EvalImage.of(spec, synthetic(w, h))
    return EvalImage.of(Path(spec).name, load_image(Path(spec))[0])


def build(name: str, model: str, iterations: list[int]) -> tuple[Codec, list[int]]:
    if name == "model":
        return rnn_codec(model, max(iterations)), iterations
    return classic_codec(name, (QUALITY[name],)), [QUALITY[name]]


def worker(spec: dict) -> None:
    """One case in this fresh process; prints its points as JSON on stdout."""
    codec, settings = build(spec["codec"], spec["model"], spec["iterations"])
    image = load(spec["image"])
    codec.warm_up()
    points = [score(codec, image, c, quality=False) for c in codec.run(image.rgb, settings)]
    info = CodecInfo(codec.name, codec.label, codec.setting_name, settings, codec.identity)
    print(json.dumps({"codec": asdict(info), "points": [asdict(p) for p in points]}))


def run_case(spec: dict) -> tuple[CodecInfo, list[Point]]:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    doc = json.loads(out.splitlines()[-1])
    return CodecInfo(**doc["codec"]), [point_from_dict(p) for p in doc["points"]]


def table(points: list[Point]) -> str:
    """A markdown table, one row per point."""
    return "\n".join(md_table(
        ["image", "codec", "setting", "bpp", "encode MP/s", "decode MP/s", "encode MiB",
         "decode MiB"],
        [[p.image, p.codec, str(p.setting), f"{p.bpp:.3f}", mp_per_s(p, p.encode_s),
          mp_per_s(p, p.decode_s), mib(p.encode_peak_rss), mib(p.decode_peak_rss)]
         for p in points]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--image", default=str(KODAK), help="photo to time (skipped if missing)")
    ap.add_argument("--size", default="4000x3000",
                    help="generated image WxH (default 12 MP), or 'none'")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or weights file")
    ap.add_argument("--iterations", default="4,8,16", help="model iterations to report")
    ap.add_argument("--codecs", default=",".join(QUALITY), help="standard codecs to compare")
    ap.add_argument("--out", default="benchmarks/speed_memory.json", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    images = [s for s in (args.image if Path(args.image).exists() else None,
                          None if args.size == "none" else GENERATED + args.size) if s]
    iterations = [int(i) for i in args.iterations.split(",")]
    infos: dict[str, CodecInfo] = {}
    points: list[Point] = []
    for image in images:
        for name in ["model", *args.codecs.split(",")]:
            spec = {"image": image, "codec": name, "model": args.model, "iterations": iterations}
            print(f"timing {name} on {image} ...", file=sys.stderr, flush=True)
            info, new = run_case(spec)
            infos[info.name] = info
            points += new
    print(table(points))
    command = shlex.join(["python", "benchmarks/speed_memory.py", *sys.argv[1:]])
    write_json(Results(command, datetime.now(UTC).isoformat(timespec="seconds"),
                       ", ".join(images), environment(), list(infos.values()), points), args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
