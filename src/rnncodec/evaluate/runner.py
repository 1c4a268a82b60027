"""Score every image × codec × setting once, caching each point so a rerun only does new work.

The cache is a JSON-lines file, one point per line, keyed by codec name, codec identity (library
versions and options, or model weights digest, entropy coder and a digest of the encoder's
behaviour on a test card), setting, and a SHA-256 of the image's pixels: adding a model or an
image reruns only that, and retrained weights, a changed encoder or another library version are
never mixed with old numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..codec import DEFAULT_ITERATIONS
from ..errors import InputMissingError
from ..images import IMAGE_SUFFIXES, load_image
from ..images import list_images as find_images  # this module's list_images adds checks
from ..metrics import luma, ms_ssim, psnr, psnr_hvs
from ..zoo import MODELS
from .codecs import QUALITIES, Codec, CodecUnavailable, Coded, classic_codec, rnn_codec
from .results import SCHEMA, CodecInfo, Point, Results, point_from_dict, point_to_dict

DEFAULT_DATASET = Path("../shared/data/kodak")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnncodec" / \
    "evaluate.jsonl"


@dataclass(frozen=True)
class EvalImage:
    name: str  # path relative to the dataset folder
    rgb: np.ndarray  # H×W×3 uint8 (grayscale images as three equal channels)
    sha256: str  # of the shape and pixels, so a re-saved file keeps its cached points

    @classmethod
    def of(cls, name: str, rgb: np.ndarray) -> EvalImage:
        return cls(name, rgb, hashlib.sha256(f"{rgb.shape}".encode() + rgb.tobytes()).hexdigest())


def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    """The dataset's image files, sorted by name (the first ``limit`` of them)."""
    if not folder.is_dir():
        raise InputMissingError(f"dataset folder {folder} does not exist")
    paths = find_images(folder)
    if not paths:
        raise InputMissingError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return paths[:limit]


def read_image(path: Path, folder: Path) -> EvalImage:
    return EvalImage.of(path.relative_to(folder).as_posix(), np.array(load_image(path)[0]))


class Cache:
    """Scored points by key, read from and appended to a JSON-lines file (None: memory only).

    A later line for the same key wins."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.points: dict[str, Point] = {}
        text = path.read_text() if path and path.exists() else ""
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                self.points[entry["key"]] = point_from_dict(entry["point"])
            except (ValueError, KeyError, TypeError):
                continue  # a blank or cut-off line, say from an interrupted run
        if path and text and not text.endswith("\n"):
            with path.open("a") as f:
                f.write("\n")  # so the next point starts a line of its own

    @staticmethod
    def key(codec: Codec, setting: int, image: EvalImage) -> str:
        return f"{SCHEMA}|{codec.name}|{codec.identity}|{setting}|{image.sha256}"

    def get(self, key: str) -> Point | None:
        return self.points.get(key)

    def put(self, key: str, point: Point) -> None:
        self.points[key] = point
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "point": point_to_dict(point)},
                                   allow_nan=False) + "\n")


def score(codec: Codec, image: EvalImage, coded: Coded, quality: bool = True) -> Point:
    """Rate from the file's full size; quality of the decoded pixels against the original
    (left null with ``quality=False``, for speed runs on images too large to score quickly)."""
    a, b = image.rgb, coded.decoded
    h, w = a.shape[:2]
    metrics = {"ms_ssim": ms_ssim(a, b), "ms_ssim_luma": ms_ssim(luma(a), luma(b)),
               "psnr": psnr(a, b), "psnr_hvs": psnr_hvs(a, b)} if quality else {}
    return Point(codec.name, coded.setting, image.name, image.sha256, w, h, len(coded.data),
                 len(coded.data) * 8 / (w * h), encode_s=coded.encode_s, decode_s=coded.decode_s,
                 encode_peak_rss=coded.encode_peak_rss, decode_peak_rss=coded.decode_peak_rss,
                 **metrics)


def _image_points(codec: Codec, image: EvalImage, cache: Cache,
                  warmed: set[str]) -> Iterator[Point]:
    """The codec's points for one image: cached ones as they are, the missing ones computed."""
    keys = {s: Cache.key(codec, s, image) for s in codec.settings}
    missing = [s for s in codec.settings if cache.get(keys[s]) is None]
    if missing:
        if codec.name not in warmed:
            codec.warm_up()
            warmed.add(codec.name)
        for coded in codec.run(image.rgb, missing):
            cache.put(keys[coded.setting], score(codec, image, coded))
    for s in codec.settings:
        cached = cache.get(keys[s])
        assert cached is not None
        yield replace(cached, image=image.name)  # the same pixels may come under a new name


def evaluate(paths: Sequence[Path], folder: Path, codecs: Sequence[Codec], cache: Cache,
             quiet: bool = False) -> list[Point]:
    """Every point of every codec on every image, with a progress bar on stderr."""
    points: list[Point] = []
    warmed: set[str] = set()
    total = len(paths) * sum(len(c.settings) for c in codecs)
    with tqdm(total=total, unit="pt", disable=quiet or None, file=sys.stderr) as bar:
        for path in paths:
            image = read_image(path, folder)
            for codec in codecs:
                bar.set_description(f"{image.name} {codec.name}")
                for point in _image_points(codec, image, cache, warmed):
                    points.append(point)
                    bar.update()
    order = {c.name: i for i, c in enumerate(codecs)}
    return sorted(points, key=lambda p: (order[p.codec], p.image, p.setting))


def environment() -> dict[str, str]:
    """What the timings depend on."""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if
                line.startswith("model name")), platform.processor())
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": str(os.cpu_count()), "torch": torch.__version__,
            "torch_threads": str(torch.get_num_threads()), "numpy": np.__version__}


def _cpuinfo() -> Iterable[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def default_models() -> list[str]:
    """Every registered model whose weights are installed."""
    return [s.name for s in MODELS.values() if s.path.exists()]


def build_codecs(models: Sequence[str], classic: Sequence[str],
                 qualities: Sequence[int] = QUALITIES, iterations: int = DEFAULT_ITERATIONS,
                 warn: Callable[[str], None] = print, efforts: Sequence[int] = (0,),
                 filtered: int = 0, filter_efforts: Sequence[int] = (0,)) -> list[Codec]:
    """Adapters for the models (one per encoder effort; with ``filtered``, also one per effort
    of ``filter_efforts`` with the filter, over iterations 1 to ``filtered``) and the named
    standard codecs; unavailable ones are skipped."""
    codecs: list[Codec] = [rnn_codec(m, iterations, e) for m in models for e in efforts]
    if filtered:
        codecs += [rnn_codec(m, filtered, e, postfilter=True) for m in models
                   for e in filter_efforts]
    for name in classic:
        try:
            codecs.append(classic_codec(name, qualities))
        except CodecUnavailable as e:
            warn(f"{name} skipped: {e}")
    return codecs


def run(folder: Path, codecs: Sequence[Codec], cache: Cache, command: str,
        limit: int | None = None, quiet: bool = False) -> Results:
    """Evaluate the codecs on the folder's images and describe the run."""
    points = evaluate(list_images(folder, limit), folder, codecs, cache, quiet)
    infos = [CodecInfo(c.name, c.label, c.setting_name, list(c.settings), c.identity)
             for c in codecs]
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return Results(command, created, str(folder), environment(), infos, points)

