"""Encode/decode time and peak memory of rnncodec next to standard codecs, and of its command.

Run from the repository root on a quiet machine (no training, no tests beside it):

    python benchmarks/speed_memory.py                       # kodim23: 2/4/8/16 iterations, the
                                                            # other codecs, 1 and 2 threads, CLI
    python benchmarks/speed_memory.py --repeats 9 --pin     # more repeats; pin each case's CPUs
    python benchmarks/speed_memory.py --size 4000x3000      # also a generated 12 MP image, tiled
    python benchmarks/speed_memory.py --crop 256x256 --iterations 2 --repeats 1 --threads 1 \\
        --codecs jpeg-420 --cli-iterations 2 --out /tmp/speed.json    # a smoke run

What it measures, on the same images in the same run:

- Codecs, side by side: rnncodec (the shipped model unless --model; default entropy coder) at
  each of --iterations, and JPEG 4:2:0, WebP, AVIF, JPEG XL and JPEG 2000 at one mid-rate
  setting each (``QUALITY``; JPEG 2000's setting is the PSNR in dB OpenJPEG aims at). A codec
  whose library is missing is listed as unavailable, and one whose case fails as failed; the
  others go on. Each (image, codec, thread count) case runs in a fresh Python process, so memory
  freed by an earlier case cannot hide a later one's allocations. There the codec is warmed up
  once on a small image (weights loaded, libraries initialised), then the image is encoded and
  decoded --repeats times; each point holds the median of the repeats (time and memory).
- rnncodec's k-iteration encode is read off one encode of the most iterations after its k-th
  iteration (entropy coding of those k included: what ``compress(iterations=k)`` does); its
  k-iteration decode is a ``decompress`` of that file cut after k iterations.
- Threads (--threads, default 1 and 2): the case's process gets OMP_NUM_THREADS and
  ``torch.set_num_threads``, AVIF libavif's ``max_threads``, JPEG XL and JPEG 2000 the
  libraries' ``numthreads``; Pillow's JPEG and WebP coders are single-threaded whatever the
  setting. rnncodec runs each network step on one intra-op thread (decoded pixels must not
  depend on the thread count); more threads run the tiles of tiled images (over about 2
  megapixels) at once, or row bands of one image's steps (rnncodec/bands.py).
  --pin also restricts each process to its first N CPUs (os.sched_setaffinity).
- Peak RSS: the growth over the process's RSS after warm-up (interpreter, torch and weights
  excluded; see rnncodec.evaluate.measure).
- Ratios: each codec's encode and decode time over JPEG 4:2:0's on the same image with the same
  thread count.
- The command as a user runs it (on the first image; --no-cli skips it), wall clock from start
  to exit (interpreter start-up, imports and weights included) and the whole process's peak RSS
  (VmHWM, sampled every 5 ms): ``rnncodec --help``, ``rnncodec compress -n N IMAGE`` (N:
  --cli-iterations, default 8) and ``rnncodec decompress IMAGE.rnnc``, each --repeats times at
  each thread count (OMP_NUM_THREADS), medians. The console script beside this Python is run
  (with its PYTHONPATH), else ``python -c 'from rnncodec.cli import main; main()'``.
- Targets (issue 30, for kodim23, 768×512): compress -n 8 ≤ 5 s, decompress ≤ 2 s and --help
  ≤ 0.6 s on 2 threads, and an 8-iteration decode (``decompress`` in-process) ≤ 3 s on one; a
  table says which are met.

Images the codec tiles (over about 2 megapixels by default, or as --tile says) are coded the
way ``rnncodec compress`` and ``decompress`` do it, one tile at a time, with the compress (from
a PNG file) and the decompress each in a fresh process per repeat; a further table gives each
process's whole peak RSS (VmHWM). Their readings after k iterations are taken when k/N of the
tile work of an N-iteration encode or decode is done (the encode's entropy coding, which
follows, left out; the decode's, which comes first, included).

Output: tables on stdout, and JSON (--out, default beside this script) in the results format
of docs/results-schema.md, quality metrics left null, codecs named ``<codec>@threads<N>``;
the keys this benchmark adds (``run``, ``samples``, ``unavailable``, ``failed``,
``process_peaks``, ``cli``, ``targets``) are described there too. Measured figures belong in
the JSON and in README/docs, not here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import rnncodec as rnn
from rnncodec.evaluate.codecs import (
    Codec,
    CodecUnavailable,
    Coded,
    JxlCodec,
    OneShotCodec,
    RnnCodec,
    classic_codec,
    imagecodecs_version,
    rnn_codec,
)
from rnncodec.evaluate.measure import Meter
from rnncodec.evaluate.report import md_table, mib
from rnncodec.evaluate.results import CodecInfo, Point, Results, point_from_dict, write_json
from rnncodec.evaluate.runner import EvalImage, environment, score
from rnncodec.images import load_image
from rnncodec.tiling import choose_tile
from rnncodec.zoo import DEFAULT_MODEL

KODAK = Path("../shared/data/kodak/kodim23.png")
GENERATED = "generated:"
MODEL = "model"
ANCHOR = "jpeg-420"  # the codec the ratios are taken to
JPEG2000 = "jpeg2000"
# one mid-rate setting per standard codec, for context (JPEG 2000: target PSNR in dB)
QUALITY = {"jpeg-420": 75, "webp": 75, "avif": 60, "jxl": 75, JPEG2000: 38}
THREADING = {  # what a thread count means to each codec (in its JSON ``version``)
    MODEL: "torch threads; one per network step, tiles in parallel",
    "jpeg-420": "single-threaded (libjpeg-turbo in Pillow)",
    "webp": "single-threaded (Pillow does not expose libwebp's threads)",
    "avif": "libavif max_threads",
    "jxl": "libjxl numthreads",
    JPEG2000: "OpenJPEG numthreads",
}
TIMED = ("encode_s", "decode_s", "encode_peak_rss", "decode_peak_rss")
SAMPLE_EVERY_S = 0.005  # how often the command's VmHWM is read


@dataclass(frozen=True)
class Target:
    """One of issue 30's speed goals: a CLI step's or an in-process decode's median time."""

    label: str
    step: str  # "help", "compress", "decompress" (the command), or "decode" (in-process)
    threads: int
    limit_s: float


TARGETS = (
    Target("rnncodec compress -n 8", "compress", 2, 5.0),
    Target("rnncodec decompress (8 iterations)", "decompress", 2, 2.0),
    Target("rnncodec --help", "help", 2, 0.6),
    Target("8-iteration decode, in-process", "decode", 1, 3.0),
)
TARGET_ITERATIONS = 8


# --- images ------------------------------------------------------------------------------


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


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' → (W, H)."""
    w, h = (int(v) for v in text.lower().split("x"))
    if w < 1 or h < 1:
        raise ValueError(f"bad size {text!r}")
    return w, h


def center_crop(rgb: np.ndarray, crop: str | None) -> np.ndarray:
    """The central W×H of an image (all of it where it is smaller), for --crop."""
    if not crop:
        return rgb
    w, h = parse_size(crop)
    y0, x0 = max(0, (rgb.shape[0] - h) // 2), max(0, (rgb.shape[1] - w) // 2)
    return np.ascontiguousarray(rgb[y0:y0 + h, x0:x0 + w])


def image_name(spec: str, crop: str | None) -> str:
    base = spec if spec.startswith(GENERATED) else Path(spec).name
    return f"{base}:crop{crop}" if crop else base


def load(spec: str, crop: str | None = None) -> EvalImage:
    """'generated:WxH' for a generated image, else a path; ``crop`` 'WxH' keeps its centre."""
    if spec.startswith(GENERATED):
        rgb = synthetic(*parse_size(spec.removeprefix(GENERATED)))
    else:
        rgb = load_image(Path(spec))[0]
    return EvalImage.of(image_name(spec, crop), center_crop(rgb, crop))


def size_of(spec: str, crop: str | None = None) -> tuple[int, int]:
    """Width and height of an image spec (after any crop), without decoding it."""
    if spec.startswith(GENERATED):
        w, h = parse_size(spec.removeprefix(GENERATED))
    else:
        with Image.open(spec) as img:
            w, h = img.size
    if crop:
        cw, ch = parse_size(crop)
        w, h = min(w, cw), min(h, ch)
    return w, h


# --- codecs with a thread count ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Jpeg2000Codec(OneShotCodec):
    """JPEG 2000 (a .jp2 file) through imagecodecs (OpenJPEG); the setting is the PSNR in dB its
    fixed-quality mode aims at, not a 0–100 quality."""

    threads: int = 1

    def encode(self, rgb: np.ndarray, setting: int) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpeg2k_encode(rgb, level=setting, numthreads=self.threads,
                                               **self.options))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return np.asarray(imagecodecs.jpeg2k_decode(data, numthreads=self.threads))


@dataclass(frozen=True, kw_only=True)
class ThreadedJxl(JxlCodec):
    """The evaluation's JPEG XL adapter with libjxl's thread count set for encode and decode."""

    threads: int = 1

    def encode(self, rgb: np.ndarray, setting: int) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(rgb, level=setting, numthreads=self.threads,
                                               **self.options))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data, numthreads=self.threads))


@dataclass(frozen=True, kw_only=True)
class RnnSpeed(RnnCodec):
    """The model as a user runs it: one encode of the most iterations, read after each k (the
    k-iteration encode), and for each k a ``decompress`` of the file cut after k iterations."""

    def run(self, rgb: np.ndarray, settings: Sequence[int]) -> Iterator[Coded]:
        data, laps = self.encode_timed(rgb, max(settings))
        for k in settings:
            cut = rnn.truncate(data, iterations=k)
            meter = Meter()
            decoded = np.asarray(rnn.decompress(cut, model=self.model))
            decode_s, decode_peak = meter.seconds(), meter.peak_rss()
            yield Coded(k, cut, decoded, laps[k - 1][0], decode_s, laps[k - 1][1], decode_peak)


def _jpeg2000_version() -> str:
    return imagecodecs_version("jpeg2k", "JPEG 2000 (OpenJPEG)")


def _copy(codec: Codec, kind: type[Codec], **extra: Any) -> Codec:
    """``codec``'s fields in an adapter of another (sub)class, plus ``extra``."""
    return kind(**{f.name: getattr(codec, f.name) for f in fields(codec)}, **extra)


def standard_codec(name: str, threads: int) -> Codec:
    """A standard codec at its ``QUALITY`` setting, told the thread count where it takes one
    (CodecUnavailable where its library is missing)."""
    if name == JPEG2000:
        return Jpeg2000Codec(JPEG2000, "JPEG 2000", _jpeg2000_version(), (QUALITY[name],),
                             "psnr_db", options={"codecformat": "jp2"}, threads=threads)
    codec = classic_codec(name, (QUALITY[name],))
    if name == "avif":  # the decoder's through the plugin's default (set_threads)
        return replace(codec, options={**codec.options, "max_threads": threads})
    if name == "jxl":
        return _copy(codec, ThreadedJxl, threads=threads)
    return codec


def build(name: str, model: str, iterations: Sequence[int], threads: int,
          ) -> tuple[Codec, list[int]]:
    """The adapter for one case, named ``<codec>@threads<N>``, and the settings to run."""
    if name == MODEL:
        codec, settings = _copy(rnn_codec(model, max(iterations)), RnnSpeed), list(iterations)
    else:
        codec, settings = standard_codec(name, threads), [QUALITY[name]]
    s = "" if threads == 1 else "s"
    return replace(codec, name=f"{codec.name}@threads{threads}",
                   label=f"{codec.label}, {threads} thread{s}",
                   version=f"{codec.version}; threads {threads}: "
                           f"{THREADING.get(name, 'as the library does')}"), settings


def availability(name: str) -> str | None:
    """Why a standard codec cannot run here, or None when it can."""
    try:
        standard_codec(name, 1)
    except CodecUnavailable as e:
        return str(e)
    return None


# --- one case in a fresh process ---------------------------------------------------------


def median(values: Sequence[float | int | None]) -> float | int | None:
    """The median, None if any value is None (memory not measurable), ints kept whole."""
    if not values or any(v is None for v in values):
        return None
    m = statistics.median(values)  # type: ignore[type-var]
    return round(m) if all(isinstance(v, int) for v in values) else m


def set_threads(threads: int) -> None:
    """This process's thread count for torch and for Pillow's AVIF decoder."""
    import torch

    torch.set_num_threads(threads)
    try:
        from PIL import AvifImagePlugin
    except ImportError:  # Pillow < 11.2: AVIF, if at all, from pillow-avif-plugin
        return
    AvifImagePlugin.DEFAULT_MAX_THREADS = threads


def measure_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up the case's codec, run it ``repeats`` times on the image; its codec, points
    (medians) and per-repeat samples, as JSON-ready dicts."""
    threads = spec["threads"]
    set_threads(threads)
    codec, settings = build(spec["codec"], spec["model"], spec["iterations"], threads)
    image = load(spec["image"], spec.get("crop"))
    codec.warm_up()
    first: dict[int, Point] = {}
    runs: dict[int, dict[str, list]] = {s: {k: [] for k in TIMED} for s in settings}
    for _ in range(spec["repeats"]):
        for coded in codec.run(image.rgb, settings):
            first.setdefault(coded.setting, score(codec, image, coded, quality=False))
            for k in TIMED:
                runs[coded.setting][k].append(getattr(coded, k))
    points = [replace(first[s], **{k: median(runs[s][k]) for k in TIMED}) for s in settings]
    samples = [{"codec": codec.name, "image": image.name, "setting": s, "threads": threads,
                **runs[s]} for s in settings]
    info = CodecInfo(codec.name, codec.label, codec.setting_name, settings, codec.identity)
    return {"codec": asdict(info), "points": [asdict(p) for p in points], "samples": samples}


def vm_hwm(pid: int | str = "self") -> int | None:
    """A process's peak resident memory in bytes (Linux's VmHWM, which a ``Meter`` resets), None
    once it has exited. Not ru_maxrss: after fork and exec that also holds the parent's peak
    at the fork."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def tiled_phase(spec: dict[str, Any]) -> dict[str, Any]:
    """Compress spec["png"] to spec["file"] (phase "encode") or decompress that file ("decode")
    in this fresh process, as the command line does; the time and RSS growth after each setting,
    and the process's whole peak."""
    set_threads(spec["threads"])
    settings, model, top = spec["iterations"], spec["model"], max(spec["iterations"])
    rnn.decompress(rnn.compress(np.zeros((64, 64, 3), np.uint8), iterations=1, model=model),
                   model=model)  # warm-up: weights loaded, libraries initialised
    start_peak = vm_hwm() or 0
    meter, laps = Meter(), dict[int, tuple[float, int | None]]()

    def lap(k: int) -> None:
        laps.setdefault(k, (meter.seconds(), meter.peak_rss()))

    out: dict[str, Any] = {}
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
    peak = max(start_peak, vm_hwm() or 0)
    return out | {"laps": [laps[k] for k in settings], "process_peak_rss": peak}


def worker(spec: dict[str, Any]) -> None:
    """One case in this fresh process; prints its result as JSON on the last line of stdout."""
    print(json.dumps(tiled_phase(spec) if "phase" in spec else measure_case(spec)))


# --- running cases -----------------------------------------------------------------------


def child_env(threads: int) -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


@contextmanager
def pinned(threads: int, pin: bool) -> Iterator[None]:
    """With ``pin``, this thread restricted to its first ``threads`` CPUs, so that a child
    started meanwhile inherits that (only the calling thread's affinity changes)."""
    if not pin:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(saved)[:threads])
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def run_worker(spec: dict[str, Any], pin: bool = False) -> dict[str, Any]:
    """A case in a fresh process with its thread count (RuntimeError with its stderr if it
    fails)."""
    threads = spec["threads"]
    with pinned(threads, pin):
        r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                           capture_output=True, text=True, env=child_env(threads), check=False)
    if r.returncode:
        raise RuntimeError(f"exit status {r.returncode}: {_tail(r.stderr)}")
    return json.loads(r.stdout.splitlines()[-1])


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


@dataclass
class Collected:
    """What the cases measured: codecs in order, points, per-repeat samples, codecs that could
    not run, and the tiled cases' whole-process peaks."""

    infos: dict[str, CodecInfo]
    points: list[Point]
    samples: list[dict[str, Any]]
    unavailable: dict[str, str]
    failed: dict[str, str]
    process_peaks: list[dict[str, Any]]

    @classmethod
    def empty(cls) -> Collected:
        return cls({}, [], [], {}, {}, [])

    def add(self, doc: dict[str, Any]) -> None:
        info = CodecInfo(**doc["codec"])
        self.infos[info.name] = info
        self.points += [point_from_dict(p) for p in doc["points"]]
        self.samples += doc["samples"]


def run_tiled(spec: dict[str, Any], tile: int, repeats: int, pin: bool) -> dict[str, Any]:
    """The model on one image, tiled: compress (from a PNG file) and decompress, each in a
    fresh process per repeat; a case document like ``measure_case``'s, plus the processes'
    whole peaks."""
    image = load(spec["image"], spec.get("crop"))
    encodes, decodes = [], []
    with tempfile.TemporaryDirectory() as folder:
        png, file = str(Path(folder) / "image.png"), str(Path(folder) / "image.rnnc")
        Image.fromarray(image.rgb).save(png, compress_level=1)
        for _ in range(repeats):
            encodes.append(run_worker(spec | {"phase": "encode", "png": png, "file": file,
                                              "tile": tile}, pin))
            decodes.append(run_worker(spec | {"phase": "decode", "file": file}, pin))
    base, threads, its = rnn_codec(spec["model"], max(spec["iterations"])), spec["threads"], \
        spec["iterations"]
    t = encodes[0]["tile"]
    name = f"{base.name}:tile{t}@threads{threads}"
    info = CodecInfo(name, f"{base.label}, {t}-px tiles, {threads} thread{'s' * (threads > 1)}",
                     "iterations", its, f"{base.version}, tile {t}; threads {threads}: "
                                        f"{THREADING[MODEL]}")
    h, w = image.rgb.shape[:2]
    points, samples = [], []
    for i, (k, n) in enumerate(zip(its, encodes[0]["bytes"], strict=True)):
        runs = {"encode_s": [e["laps"][i][0] for e in encodes],
                "decode_s": [d["laps"][i][0] for d in decodes],
                "encode_peak_rss": [e["laps"][i][1] for e in encodes],
                "decode_peak_rss": [d["laps"][i][1] for d in decodes]}
        points.append(Point(name, k, image.name, image.sha256, w, h, n, n * 8 / (w * h),
                            **{key: median(v) for key, v in runs.items()}))
        samples.append({"codec": name, "image": image.name, "setting": k, "threads": threads,
                        **runs})
    peaks = {"image": image.name, "codec": name, "threads": threads,
             "compress_peak_rss": median([e["process_peak_rss"] for e in encodes]),
             "decompress_peak_rss": median([d["process_peak_rss"] for d in decodes])}
    return {"codec": asdict(info), "points": [asdict(p) for p in points], "samples": samples,
            "process_peak": peaks}


def run_cases(images: Sequence[str], crop: str | None, codecs: Sequence[str], model: str,
              iterations: Sequence[int], threads: Sequence[int], repeats: int, tile: int | None,
              pin: bool, log: Callable[[str], None]) -> Collected:
    """Every image × codec × thread count, each in fresh processes."""
    out = Collected.empty()
    for name in codecs:
        if name != MODEL and (why := availability(name)):
            out.unavailable[name] = why
            log(f"{name} unavailable: {why}")
    for image in images:
        for name in [c for c in codecs if c not in out.unavailable]:
            for t in threads:
                spec = {"image": image, "crop": crop, "codec": name, "model": model,
                        "iterations": list(iterations), "threads": t, "repeats": repeats}
                side = choose_tile(tile, *size_of(image, crop)) if name == MODEL else 0
                log(f"timing {name} on {image_name(image, crop)}, {t} thread(s)"
                    f"{f' in {side}-px tiles' if side else ''}, {repeats} repeat(s) ...")
                try:
                    doc = run_tiled(spec, side, repeats, pin) if side else run_worker(spec, pin)
                except RuntimeError as e:
                    out.failed[f"{name}@threads{t} on {image_name(image, crop)}"] = str(e)
                    log(f"{name} failed: {e}")
                    continue
                out.add(doc)
                if "process_peak" in doc:
                    out.process_peaks.append(doc["process_peak"])
    return out


# --- the command line as a user runs it ----------------------------------------------------


def cli_argv() -> list[str]:
    """The ``rnncodec`` console script beside this Python, else the same entry point via -c."""
    script = Path(sys.executable).with_name("rnncodec")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from rnncodec.cli import main; main(prog_name='rnncodec')"]


def timed_command(argv: list[str], cwd: Path, threads: int, pin: bool) -> tuple[float, int | None]:
    """Wall seconds from start to exit of one command, and its peak RSS (VmHWM sampled every
    ``SAMPLE_EVERY_S``; None if never read). RuntimeError if it fails."""
    with tempfile.TemporaryFile("w+") as err:
        with pinned(threads, pin):
            start = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
                                    env=child_env(threads))
        peak: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                v = vm_hwm(proc.pid)
                if v:
                    peak.append(v)
                done.wait(SAMPLE_EVERY_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        if code:
            err.seek(0)
            raise RuntimeError(f"{shlex.join(argv)} exited with {code}: {_tail(err.read())}")
    return seconds, max(peak) if peak else None


def stage_image(spec: str, crop: str | None, folder: Path) -> Path:
    """The image as a user's PNG file in ``folder``: the file itself when it is used whole."""
    if not crop and not spec.startswith(GENERATED):
        return Path(shutil.copy(spec, folder))
    stem = "generated-" + spec.removeprefix(GENERATED) if spec.startswith(GENERATED) \
        else Path(spec).stem
    path = folder / f"{stem}{f'-{crop}' if crop else ''}.png"
    Image.fromarray(load(spec, crop).rgb).save(path)
    return path


@dataclass(frozen=True)
class CliStep:
    """One command to time: its name, arguments after the program, the folder it runs in, and
    the output it writes (deleted before each run, so that it never exists already)."""

    step: str
    args: list[str]
    cwd: Path
    output: Path | None = None


def cli_steps(png: Path, iterations: int) -> list[CliStep]:
    """--help, compress and decompress, as a user types them. The decompress runs in a folder
    of its own, so that its PNG does not meet the input."""
    rnnc, decoded = png.with_suffix(".rnnc"), png.parent / "decoded"
    return [CliStep("help", ["--help"], png.parent),
            CliStep("compress", ["compress", "-n", str(iterations), png.name], png.parent, rnnc),
            CliStep("decompress", ["decompress", rnnc.name], decoded, decoded / png.name)]


def time_cli(spec: str, crop: str | None, iterations: int, threads: Sequence[int],
             repeats: int, pin: bool, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Medians of ``rnncodec --help``, ``compress -n N`` and ``decompress`` on one image, run as
    a user runs them, at each thread count."""
    argv, rows = cli_argv(), []
    with tempfile.TemporaryDirectory() as folder:
        png = stage_image(spec, crop, Path(folder))
        (png.parent / "decoded").mkdir()
        steps = cli_steps(png, iterations)
        for t in threads:
            log(f"timing the rnncodec command on {png.name}, {t} thread(s) ...")
            runs: dict[str, list[tuple[float, int | None]]] = {s.step: [] for s in steps}
            for _ in range(repeats):
                for s in steps:
                    if s.output:
                        s.output.unlink(missing_ok=True)
                    runs[s.step].append(timed_command([*argv, *s.args], s.cwd, t, pin))
                    if s.step == "compress" and s.output:  # the file decompress reads
                        shutil.copy(s.output, png.parent / "decoded")
            for s in steps:
                times = [r[0] for r in runs[s.step]]
                rows.append({"step": s.step, "command": shlex.join(["rnncodec", *s.args]),
                             "argv": [*argv, *s.args], "image": image_name(spec, crop),
                             "iterations": None if s.step == "help" else iterations,
                             "threads": t, "seconds": median(times), "samples_s": times,
                             "peak_rss": median([r[1] for r in runs[s.step]])})
    return rows


# --- tables and targets ------------------------------------------------------------------


def split_name(codec: str) -> tuple[str, int]:
    """'jpeg-420@threads2' → ('jpeg-420', 2)."""
    base, _, t = codec.rpartition("@threads")
    return (base, int(t)) if base else (codec, 0)


def anchor_times(points: Sequence[Point]) -> dict[tuple[str, int], Point]:
    """JPEG 4:2:0's point per (image, threads)."""
    return {(p.image, split_name(p.codec)[1]): p for p in points
            if split_name(p.codec)[0] == ANCHOR}


def ratio(value: float | None, anchor: float | None) -> str:
    if not value or not anchor:
        return "–"
    r = value / anchor
    return f"{r:.0f}×" if r >= 100 else f"{r:.1f}×" if r >= 10 else f"{r:.2f}×"


def seconds(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def table(points: Sequence[Point], labels: dict[str, str] | None = None) -> str:
    """A markdown table, one row per point, with time ratios to JPEG 4:2:0."""
    anchors = anchor_times(points)
    labels = labels or {}
    rows = []
    for p in points:
        base, t = split_name(p.codec)
        a = anchors.get((p.image, t))
        label = labels.get(p.codec, base).rsplit(", ", 1)[0]  # less the thread count
        rows.append([p.image, label, str(t), str(p.setting),
                     f"{p.bpp:.3f}", seconds(p.encode_s), seconds(p.decode_s),
                     ratio(p.encode_s, a and a.encode_s), ratio(p.decode_s, a and a.decode_s),
                     mib(p.encode_peak_rss), mib(p.decode_peak_rss)])
    return "\n".join(md_table(
        ["image", "codec", "threads", "setting", "bpp", "encode s", "decode s", "encode ×JPEG",
         "decode ×JPEG", "encode MiB", "decode MiB"], rows))


def cli_table(rows: Sequence[dict[str, Any]]) -> str:
    return "\n".join(md_table(
        ["command", "image", "threads", "wall s", "peak MiB"],
        [[f"`{r['command']}`", r["image"], str(r["threads"]), seconds(r["seconds"]),
          mib(r["peak_rss"])] for r in rows]))


def model_point(points: Sequence[Point], image: str, iterations: int,
                threads: int) -> Point | None:
    """The model's untiled point for an image, iteration count and thread count."""
    for p in points:
        base, t = split_name(p.codec)
        if (base.startswith("rnncodec:") and ":tile" not in base and p.image == image
                and p.setting == iterations and t == threads):
            return p
    return None


def check_targets(points: Sequence[Point], cli: Sequence[dict[str, Any]],
                  image: str) -> list[dict[str, Any]]:
    """Each target's measured median on ``image`` and whether it is met (None: not measured)."""
    rows = []
    for target in TARGETS:
        if target.step == "decode":
            p = model_point(points, image, TARGET_ITERATIONS, target.threads)
            value = p.decode_s if p else None
        else:  # compress and decompress count only with -n 8
            value = next((r["seconds"] for r in cli if r["step"] == target.step
                          and r["threads"] == target.threads and r["image"] == image
                          and r["iterations"] in (None, TARGET_ITERATIONS)), None)
        rows.append(asdict(target) | {"image": image, "seconds": value,
                                      "met": None if value is None else value <= target.limit_s})
    return rows


def targets_table(rows: Sequence[dict[str, Any]]) -> str:
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    return "\n".join(md_table(
        ["target", "threads", "limit s", "measured s", "met"],
        [[r["label"], str(r["threads"]), f"{r['limit_s']:g}", seconds(r["seconds"]),
          verdict[r["met"]]] for r in rows]))


# --- the run -----------------------------------------------------------------------------


def write_results(results: Results, extras: dict[str, Any], path: Path) -> None:
    """The results file (docs/results-schema.md) with this benchmark's keys added."""
    write_json(results, path)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(doc | extras, indent=1, allow_nan=False) + "\n")


def choose_images(image: str, size: str) -> list[str]:
    """The photo if it exists, and the generated image unless --size is 'none' (a 768×512 one
    when there would be nothing else)."""
    images = [image] if Path(image).exists() else []
    if size != "none":
        images.append(GENERATED + size)
    return images or [GENERATED + "768x512"]


def ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="See the module docstring for what is measured.")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--image", default=str(KODAK), help="photo to time (skipped if missing)")
    ap.add_argument("--size", default="none",
                    help="also a generated image of WxH (4000x3000: 12 MP, tiled), or 'none'")
    ap.add_argument("--crop", help="time the central WxH of each image (smoke runs)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or weights file")
    ap.add_argument("--iterations", type=ints, default=[2, 4, 8, 16],
                    help="model iterations to report (default 2,4,8,16)")
    ap.add_argument("--threads", type=ints, default=[1, 2],
                    help="thread counts to run every case at (default 1,2)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per case; medians (default 5)")
    ap.add_argument("--pin", action="store_true",
                    help="restrict each case's process to its first N CPUs")
    ap.add_argument("--tile", type=int, default=None,
                    help="model tile side in pixels, 0 for none (default: as compress picks)")
    ap.add_argument("--codecs", default=",".join(QUALITY),
                    help="standard codecs to compare (default: all); '' for none")
    ap.add_argument("--no-model", action="store_true", help="leave rnncodec's own cases out")
    ap.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True,
                    help="time the rnncodec command on the first image (default: yes)")
    ap.add_argument("--cli-iterations", type=int, default=TARGET_ITERATIONS,
                    help="compress -n for the command's timing (default 8)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"),
                    help="JSON to write (default: beside this script)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    unknown = set(filter(None, args.codecs.split(","))) - set(QUALITY)
    if unknown:
        ap.error(f"unknown codecs {', '.join(sorted(unknown))}; choose from {', '.join(QUALITY)}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    images = choose_images(args.image, args.size)
    codecs = [*([] if args.no_model else [MODEL]), *filter(None, args.codecs.split(","))]
    got = run_cases(images, args.crop, codecs, args.model, args.iterations, args.threads,
                    args.repeats, args.tile, args.pin, log)
    cli: list[dict[str, Any]] = []
    if args.cli:
        try:
            cli = time_cli(images[0], args.crop, args.cli_iterations, args.threads,
                           args.repeats, args.pin, log)
        except RuntimeError as e:  # the codecs' figures are still worth writing
            got.failed["rnncodec command"] = str(e)
            log(f"the rnncodec command failed: {e}")
    first = image_name(images[0], args.crop)
    targets = check_targets(got.points, cli, first)
    print(table(got.points, {c.name: c.label for c in got.infos.values()}))
    if got.process_peaks:
        print("Whole-process peak RSS (VmHWM) of the tiled compress and decompress, "
              f"{max(args.iterations)} iterations (MiB):\n")
        print("\n".join(md_table(["image", "codec", "compress", "decompress"],
                                 [[r["image"], r["codec"], mib(r["compress_peak_rss"]),
                                   mib(r["decompress_peak_rss"])] for r in got.process_peaks])))
    if cli:
        print(cli_table(cli))
    w, h = size_of(images[0], args.crop)
    print(f"Targets (issue 30; set for kodim23, 768×512), on {first} ({w}×{h}):\n")
    print(targets_table(targets))
    for name, why in {**got.unavailable, **got.failed}.items():
        print(f"not measured: {name}: {why}")
    command = shlex.join(["python", "benchmarks/speed_memory.py",
                          *(sys.argv[1:] if argv is None else argv)])
    results = Results(command, datetime.now(UTC).isoformat(timespec="seconds"),
                      ", ".join(image_name(i, args.crop) for i in images), environment(),
                      list(got.infos.values()), got.points)
    extras = {"run": {"threads": args.threads, "repeats": args.repeats, "statistic": "median",
                      "pin": args.pin, "iterations": args.iterations,
                      "cli_iterations": args.cli_iterations if args.cli else None},
              "samples": got.samples, "unavailable": got.unavailable, "failed": got.failed,
              "process_peaks": got.process_peaks, "cli": cli, "targets": targets}
    write_results(results, extras, args.out)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
