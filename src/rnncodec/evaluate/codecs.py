"""Codec adapters with one small interface: ``run(rgb, settings)`` yields a ``Coded`` per setting.

Each adapter encodes an H×W×3 uint8 image to the bytes of a complete file (so rates count
headers and containers), decodes those bytes back to H×W×3 uint8, and times both with a
``Meter``. The RNN codec is progressive: it is compressed once at the highest iteration count,
and every lower count is the real file cut with ``truncate``, decoded by one progressive pass.
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from .. import codec as rnn
from .. import engine, refine
from .. import postfilter as filters
from ..zoo import load_model
from .measure import Meter

QUALITIES = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
JXL_EFFORT = 7  # libjxl's default
AVIF_SPEED = 6  # Pillow's default (0 slowest and best ... 10 fastest)
CLASSIC = ("jpeg-420", "jpeg-444", "webp", "avif", "jxl")
WARM_UP_SIDE = 64


class CodecUnavailable(Exception):
    """A codec whose library is not installed here; the evaluation goes on without it."""


@dataclass(frozen=True)
class Coded:
    """One encoded file, its decoded pixels, and what encoding and decoding cost."""

    setting: int
    data: bytes
    decoded: np.ndarray
    encode_s: float
    decode_s: float
    encode_peak_rss: int | None
    decode_peak_rss: int | None


@dataclass(frozen=True)
class Codec(ABC):
    name: str  # key in results files, e.g. "jpeg-420"
    label: str  # for tables and plots
    version: str  # libraries or weights; any change invalidates cached points
    settings: tuple[int, ...]  # the default sweep
    setting_name: str = "quality"

    @property
    def identity(self) -> str:
        return self.version

    @abstractmethod
    def run(self, rgb: np.ndarray, settings: Sequence[int]) -> Iterator[Coded]:
        """Encode and decode ``rgb`` at each setting."""

    def warm_up(self) -> None:
        """Run once on a small image, so one-off library set-up is not timed on the first image."""
        for _ in self.run(np.zeros((WARM_UP_SIDE, WARM_UP_SIDE, 3), np.uint8), self.settings[:1]):
            pass


@dataclass(frozen=True)
class OneShotCodec(Codec):
    """A codec that encodes each setting from scratch."""

    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        return f"{self.version}; " + ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))

    @abstractmethod
    def encode(self, rgb: np.ndarray, setting: int) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray: ...

    def run(self, rgb: np.ndarray, settings: Sequence[int]) -> Iterator[Coded]:
        for setting in settings:
            meter = Meter()
            data = self.encode(rgb, setting)
            encode_s, encode_peak = meter.seconds(), meter.peak_rss()
            meter = Meter()
            decoded = self.decode(data)
            yield Coded(setting, data, decoded, encode_s, meter.seconds(), encode_peak,
                        meter.peak_rss())


@dataclass(frozen=True, kw_only=True)
class PillowCodec(OneShotCodec):
    format: str

    def encode(self, rgb: np.ndarray, setting: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=self.format, quality=setting, **self.options)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as img:
            return np.array(img.convert("RGB"))


@dataclass(frozen=True)
class JxlCodec(OneShotCodec):
    """JPEG XL through imagecodecs (libjxl); the setting is its quality ``level``."""

    def encode(self, rgb: np.ndarray, setting: int) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(rgb, level=setting, **self.options))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data))


@dataclass(frozen=True, kw_only=True)
class RnnCodec(Codec):
    """A model of this package; ``model`` is a registered name or a weights file, ``effort``
    the number of first iterations whose bits the encoder searches (``compress``). One file is
    encoded, without a filter, and cut after each iteration: the embedded bitstream."""

    model: str
    effort: int = 0

    def encode_timed(self, rgb: np.ndarray, iterations: int
                     ) -> tuple[bytes, list[tuple[float, int | None]]]:
        """One encode of ``iterations`` without a filter, and (seconds, peak RSS) so far after
        each iteration: the encode time and memory of every shorter file."""
        meter = Meter()
        laps: list[tuple[float, int | None]] = []
        data = rnn.compress(rgb, iterations=iterations, model=self.model, effort=self.effort,
                            postfilter=False,
                            progress=lambda _: laps.append((meter.seconds(), meter.peak_rss())))
        return data, laps

    def run(self, rgb: np.ndarray, settings: Sequence[int]) -> Iterator[Coded]:
        data, laps = self.encode_timed(rgb, max(settings))
        slot = {k: i for i, k in enumerate(sorted(settings))}
        # Written once now, so that filling it during the pass adds no resident memory.
        decoded = np.full((len(slot), *rgb.shape), 0, np.uint8)
        decode_laps = []
        meter = Meter()
        for k, image in enumerate(rnn.decode_iterations(data, model=self.model), 1):
            decode_laps.append((meter.seconds(), meter.peak_rss()))
            if k in slot:
                with meter.paused():
                    a = np.asarray(image)
                    decoded[slot[k]] = a[..., None] if a.ndim == 2 else a
        for k in settings:
            (encode_s, encode_peak), (decode_s, decode_peak) = laps[k - 1], decode_laps[k - 1]
            yield Coded(k, rnn.truncate(data, iterations=k), decoded[slot[k]], encode_s,
                        decode_s, encode_peak, decode_peak)


@dataclass(frozen=True, kw_only=True)
class FilteredRnnCodec(RnnCodec):
    """A model with its per-image filter (postfilter.py). A filter fits only the iterations it
    was made for, so each setting's file is the embedded one cut there with a filter fitted
    anew (``add_filter``): the file ``compress`` makes for that many iterations, for one encode
    (the slow bit search runs once). Encode time: the encode up to the setting plus
    ``add_filter``'s fit, given the pixels the progressive pass decoded (``compress`` has them
    from its own closed loop), those of the setting before too when it is one iteration less."""

    def run(self, rgb: np.ndarray, settings: Sequence[int]) -> Iterator[Coded]:
        shorter: Coded | None = None
        for plain in super().run(rgb, settings):
            meter = Meter()
            previous = shorter.decoded if shorter and shorter.setting == plain.setting - 1 \
                else None
            data = rnn.add_filter(plain.data, rgb, model=self.model, decoded=plain.decoded,
                                  previous=previous)
            shorter = plain
            fit_s, fit_peak = meter.seconds(), meter.peak_rss()
            meter = Meter()
            decoded = np.asarray(rnn.decompress(data, model=self.model))
            yield Coded(plain.setting, data, decoded[..., None] if decoded.ndim == 2 else decoded,
                        plain.encode_s + fit_s, meter.seconds(),
                        _larger(plain.encode_peak_rss, fit_peak), meter.peak_rss())


def _larger(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(a, b)


def probe_image() -> np.ndarray:
    """A fixed test card (gradients, flat blocks, seeded noise), just large enough for a filter:
    what ``behaviour`` codes."""
    rng = np.random.default_rng(2026)
    y, x = np.mgrid[:filters.MIN_SIDE, :filters.MIN_SIDE]
    card = np.stack([x * 1.5, y * 1.5, (x + y) * 0.7], axis=-1)
    for y0, x0, h, w in rng.integers(8, 100, (12, 4)):
        card[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    return (card + rng.normal(0, 3, card.shape)).clip(0, 255).astype(np.uint8)


def behaviour(model: str, effort: int, postfilter: bool) -> tuple[bytes, str]:
    """(a file of the probe image, a digest of what the codec makes of that image).

    The digest covers the encoder's codes and reconstructions (floats, not pixels) for two
    iterations of the probe's 64×64 corner, the first searched when ``effort`` is set; the file
    of the whole probe, two iterations (entropy coders and format); and, with ``postfilter``,
    the filter fitted to that file's image, whether or not it would pay. It is in the cache key,
    so a change to any of these re-runs the points although the weights and options stay the
    same. The reconstruction's floats are in it because a change in the encoder's arithmetic
    can move a large image's bits while leaving every file of a probe this small as it was.
    """
    card = probe_image()
    digest = hashlib.sha256()
    steps = engine.iterate_codes(load_model(model), card[:64, :64], effort=min(effort, 1))
    for _ in range(2):
        codes, recon = next(steps)
        digest.update(codes.tobytes() + recon.numpy().tobytes())
    data = rnn.compress(card, iterations=2, model=model, postfilter=False)
    digest.update(data)
    if postfilter:
        decoded = np.asarray(rnn.decompress(data, model=model))  # the card is colour: RGB
        digest.update(filters.fit(card, decoded, load_model(model).tune).pack())
    return data, digest.hexdigest()[:12]


def rnn_codec(model: str, iterations: int = rnn.DEFAULT_ITERATIONS, effort: int = 0,
              postfilter: bool = False) -> RnnCodec | FilteredRnnCodec:
    """The adapter for one model, named after it (and the effort, when not 0, and the filter)
    and identified by the weights digest and the entropy coder its files use (read from the
    probe's file, as the codec picks the coder per model), and by its ``behaviour``."""
    data, probe = behaviour(model, effort, postfilter)
    name, digest, coder = (rnn.info(data).as_dict()[k] for k in ("model", "weights", "coder"))
    tag, label = (f"@effort{effort}", f" (effort {effort})") if effort else ("", "")
    search = (f"; search: {refine.STEPS} steps, look-ahead {refine.LOOKAHEAD}, rate weight "
              f"{refine.RATE_WEIGHT}") if effort else ""  # in the cache key: retuning re-runs
    settings = tuple(range(1, iterations + 1))
    kind = FilteredRnnCodec if postfilter else RnnCodec
    tag, label = (f"{tag}+filter", f"{label} + filter") if postfilter else (tag, label)
    fit = (f"; filter {filters.FITS[load_model(model).tune]}, fitted to each cut (add_filter)"
           if postfilter else "")
    return kind(f"rnncodec:{name}{tag}", f"rnncodec {name}{label}",
                f"weights {digest}, coder {coder}{label}{search}{fit}; probe {probe}",
                settings, "iterations", model=model, effort=effort)


def _pillow_version(feature: str) -> str:
    return f"Pillow {PIL.__version__}, {feature} {features.version(feature)}"


def _avif_version() -> str:
    """Pillow's own AVIF support (Pillow ≥ 11), else the pillow-avif-plugin package."""
    if features.check("avif"):
        return _pillow_version("avif")
    try:
        import pillow_avif
    except ImportError:
        raise CodecUnavailable("AVIF needs Pillow ≥ 11 built with libavif, or the "
                               "pillow-avif-plugin package") from None
    return f"Pillow {PIL.__version__}, pillow-avif-plugin {pillow_avif.__version__}"


def imagecodecs_version(codec: str, label: str) -> str:
    """imagecodecs' version and that of its ``codec`` library ("jpegxl", "jpeg2k"), or
    CodecUnavailable saying what is missing."""
    try:
        import imagecodecs
    except ImportError:
        raise CodecUnavailable(f"{label} needs the imagecodecs package") from None
    if not getattr(imagecodecs, codec.upper()).available:
        raise CodecUnavailable(f"this imagecodecs build has no {label} support")
    return f"imagecodecs {imagecodecs.__version__}, {getattr(imagecodecs, f'{codec}_version')()}"


def _jxl_version() -> str:
    return imagecodecs_version("jpegxl", "JPEG XL")


def _jpeg(name: str, label: str, subsampling: int, q: tuple[int, ...]) -> Codec:
    """Baseline JPEG with optimized Huffman tables; subsampling 2 is 4:2:0, 0 is 4:4:4."""
    lib = "libjpeg_turbo" if features.check("libjpeg_turbo") else "jpg"
    return PillowCodec(name, label, _pillow_version(lib), q, format="JPEG",
                       options={"subsampling": subsampling, "optimize": True})


def classic_codec(name: str, qualities: Sequence[int] = QUALITIES) -> Codec:
    """A standard codec by name (see ``CLASSIC``); raises CodecUnavailable if it cannot run."""
    q = tuple(qualities)
    if not q or not all(0 <= v <= 100 for v in q):
        raise ValueError(f"qualities must be between 0 and 100, not {q}")
    if name == "jpeg-420":
        return _jpeg(name, "JPEG 4:2:0", 2, q)
    if name == "jpeg-444":
        return _jpeg(name, "JPEG 4:4:4", 0, q)
    if name == "webp":
        if not features.check("webp"):
            raise CodecUnavailable("this Pillow has no WebP support")
        return PillowCodec(name, "WebP", _pillow_version("webp"), q, format="WEBP",
                           options={"method": 6})
    if name == "avif":
        return PillowCodec(name, "AVIF", _avif_version(), q, format="AVIF",
                           options={"speed": AVIF_SPEED})
    if name == "jxl":
        return JxlCodec(name, "JPEG XL", _jxl_version(), q, options={"effort": JXL_EFFORT})
    raise ValueError(f"unknown codec {name!r}; choose from {', '.join(CLASSIC)}")
