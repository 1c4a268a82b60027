"""Encode/decode speed (megapixels per second) and peak memory of a model and standard codecs.

    python benchmarks/speed_memory.py                      # Kodak image (if present) + 12 MP
    python benchmarks/speed_memory.py --size 2000x1500     # a smaller generated image
    python benchmarks/speed_memory.py --size none          # the Kodak image only
    python benchmarks/speed_memory.py --tile 0             # the model without tiling

Each (image, codec) case runs in a fresh Python process, so memory freed by an earlier case
cannot hide a later one's allocations. Inside it the codec is warmed up once on a small image
(model weights loaded, libraries initialised), then the image is encoded and decoded once per
setting. The model is encoded once at the highest iteration count and read after 4, 8 and 16
iterations (the same work a shorter encode does); peak RSS is the growth over the process's RSS
after warm-up — interpreter, torch and weights excluded (see rnncodec.evaluate.measure). Runs on
the CPU with torch's thread setting (set OMP_NUM_THREADS to pin it). Prints a table and writes
the points in the results format of docs/results-schema.md (quality metrics left null).

Images the codec tiles (over about 2 megapixels by default, or as --tile says) are coded the
way ``rnncodec compress`` and ``decompress`` do it, one tile at a time, with the compress (from
a PNG file) and the decompress each in a fresh process; the table after the main one gives each
process's whole peak RSS (VmHWM: interpreter, torch, weights and PNG decoding included). Their
readings after k < 16 iterations are taken when k/16 of the tile work is done: the network work
of a k-iteration encode or decode (the encode's entropy coding, which follows, left out; the
decode's, which comes first, included).

The 12-megapixel model case is slow on a small CPU. On the 2-core development box (2 torch
threads; the networks run on one thread per tile, two tiles at a time), with the stage-12
weights and the default `best` coder (which tries every coder on each iteration), the tiled
16-iteration encode took 160 s and the decode 90 s; the compress process peaked at 1,438 MiB
in all (1,172 MiB over its RSS after warm-up), the decompress one at 1,151 MiB (886 MiB).
Earlier measurements, with the stage-2 weights and the neural coder alone: tiled, 127 s and
86 s; one tile at a time with intra-op threads (before pixels were made independent of the
thread count), 139 s and 102 s at 936 and 793 MiB; untiled (--tile 0; one torch thread, the
CPU shared with a training run), 528 s and 350 s with 6.5 GB of extra RSS. Use --size for a
smaller generated image (or 'none').
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from rnncodec import codec as rnn
from rnncodec.evaluate.codecs import Codec, classic_codec, rnn_codec
from rnncodec.evaluate.measure import Meter
from rnncodec.evaluate.report import md_table, mib, mp_per_s
from rnncodec.evaluate.results import CodecInfo, Point, Results, point_from_dict, write_json
from rnncodec.evaluate.runner import EvalImage, environment, score
from rnncodec.images import load_image
from rnncodec.tiling import choose_tile
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


def size_of(spec: str) -> tuple[int, int]:
    """Width and height of an image spec, without decoding it."""
    if spec.startswith(GENERATED):
        w, h = (int(v) for v in spec.removeprefix(GENERATED).split("x"))
        return w, h
    with Image.open(spec) as img:
        return img.size


def build(name: str, model: str, iterations: list[int]) -> tuple[Codec, list[int]]:
    if name == "model":
        return rnn_codec(model, max(iterations)), iterations
    return classic_codec(name, (QUALITY[name],)), [QUALITY[name]]


def vm_hwm() -> int:
    """This process's peak resident memory in bytes (Linux's VmHWM, which a ``Meter`` resets).

    Not ru_maxrss: after fork and exec that also holds the parent's peak at the fork."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, "VmHWM missing from /proc/self/status (Linux only)"
    return int(match.group(1)) * 1024


def tiled_phase(spec: dict) -> dict:
    """Compress spec["png"] to spec["file"] (phase "encode") or decompress that file ("decode")
    in this fresh process, as the command line does; the time and RSS growth after each setting,
    and the process's whole peak."""
    settings, model, top = spec["iterations"], spec["model"], max(spec["iterations"])
    rnn.decompress(rnn.compress(np.zeros((64, 64, 3), np.uint8), iterations=1, model=model),
                   model=model)  # warm-up: weights loaded, libraries initialised
    start_peak = vm_hwm()
    meter, laps = Meter(), dict[int, tuple[float, int | None]]()

    def lap(k: int) -> None:
        laps.setdefault(k, (meter.seconds(), meter.peak_rss()))

    out: dict = {}
    if spec["phase"] == "encode":
        data = rnn.compress(spec["png"], iterations=top, model=model, tile=spec["tile"],
                            progress=lap)
        laps[top] = (meter.seconds(), meter.peak_rss())  # entropy coding included
        Path(spec["file"]).write_bytes(data)
        out = {"tile": rnn.info(data).header.tile,
               "bytes": [len(rnn.truncate(data, iterations=k)) for k in settings]}
    else:
        rnn.decompress(spec["file"], model=model, progress=lap)
        laps[top] = (meter.seconds(), meter.peak_rss())
    peak = max(start_peak, vm_hwm())
    return out | {"laps": [laps[k] for k in settings], "process_peak_rss": peak}


def run_tiled(spec: dict, tile: int) -> tuple[CodecInfo, list[Point], tuple[int, int]]:
    """The model on one image, tiled: compress (from a PNG file) and decompress, each in a
    fresh process."""
    image = load(spec["image"])
    with tempfile.TemporaryDirectory() as folder:
        png, file = str(Path(folder) / "image.png"), str(Path(folder) / "image.rnnc")
        Image.fromarray(image.rgb).save(png, compress_level=1)
        enc = run_worker(spec | {"phase": "encode", "png": png, "file": file, "tile": tile})
        dec = run_worker(spec | {"phase": "decode", "file": file})
    base = rnn_codec(spec["model"], max(spec["iterations"]))
    name = f"{base.name}:tile{enc['tile']}"
    info = CodecInfo(name, f"{base.label}, {enc['tile']}-px tiles", "iterations",
                     spec["iterations"], f"{base.version}, tile {enc['tile']}")
    h, w = image.rgb.shape[:2]
    points = [Point(name, k, image.name, image.sha256, w, h, n, n * 8 / (w * h),
                    encode_s=e[0], decode_s=d[0], encode_peak_rss=e[1], decode_peak_rss=d[1])
              for k, n, e, d in zip(spec["iterations"], enc["bytes"], enc["laps"], dec["laps"],
                                    strict=True)]
    return info, points, (enc["process_peak_rss"], dec["process_peak_rss"])


def worker(spec: dict) -> None:
    """One case in this fresh process; prints its points as JSON on stdout."""
    if "phase" in spec:
        print(json.dumps(tiled_phase(spec)))
        return
    codec, settings = build(spec["codec"], spec["model"], spec["iterations"])
    image = load(spec["image"])
    codec.warm_up()
    points = [score(codec, image, c, quality=False) for c in codec.run(image.rgb, settings)]
    info = CodecInfo(codec.name, codec.label, codec.setting_name, settings, codec.identity)
    print(json.dumps({"codec": asdict(info), "points": [asdict(p) for p in points]}))


def run_worker(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.splitlines()[-1])


def run_case(spec: dict) -> tuple[CodecInfo, list[Point]]:
    doc = run_worker(spec)
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
    ap.add_argument("--tile", type=int, default=None,
                    help="model tile side in pixels, 0 for none (default: as compress picks)")
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
    peaks: list[list[str]] = []
    for image in images:
        for name in ["model", *filter(None, args.codecs.split(","))]:
            spec = {"image": image, "codec": name, "model": args.model, "iterations": iterations}
            tile = choose_tile(args.tile, *size_of(image)) if name == "model" else 0
            print(f"timing {name} on {image}{f' in {tile}-px tiles' if tile else ''} ...",
                  file=sys.stderr, flush=True)
            if tile:
                info, new, (enc, dec) = run_tiled(spec, tile)
                peaks.append([image, info.name, mib(enc), mib(dec)])
            else:
                info, new = run_case(spec)
            infos[info.name] = info
            points += new
    print(table(points))
    if peaks:
        print("\nWhole-process peak RSS (VmHWM) of the tiled compress and decompress, "
              f"{max(iterations)} iterations:\n")
        print("\n".join(md_table(["image", "codec", "compress MiB", "decompress MiB"], peaks)))
    command = shlex.join(["python", "benchmarks/speed_memory.py", *sys.argv[1:]])
    write_json(Results(command, datetime.now(UTC).isoformat(timespec="seconds"),
                       ", ".join(images), environment(), list(infos.values()), points), args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
