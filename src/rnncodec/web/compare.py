"""Everything the viewer shows for one image, built while it is coded.

The image is encoded once (at most ``MAX_STEPS`` iterations). After each iteration the file cut
there and its decoded pixels (``compress``'s closed loop: exactly what a decoder makes of that
cut) become a step, published at once, so the page can show it before the next is coded; for an
adaptive file the step also holds which 16×16 blocks its iteration coded (the block map). Then
each step's size is matched by JPEG, WebP, AVIF and JPEG XL (the evaluation's adapters,
``evaluate.codecs``): the highest quality whose file is no larger than the .rnnc file cut there.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from ..codec import Target, compress, truncate
from ..defaults import BLOCK
from ..evaluate.codecs import CodecUnavailable, OneShotCodec, classic_codec
from ..files import coded_blocks
from ..format import parse
from ..images import to_image
from ..metrics import ms_ssim, psnr

MAX_STEPS = 16
# the codecs compared at equal size: the viewer's name, the evaluation's name, the page's label
PEERS = {"jpeg": ("jpeg-420", "JPEG"), "webp": ("webp", "WebP"), "avif": ("avif", "AVIF"),
         "jxl": ("jxl", "JPEG XL")}
# AVIF at speed 8 instead of the evaluation's 6: a few times faster, its files within a few %
QUICKER = {"avif": {"speed": 8}}
MEDIA_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif",
               "jxl": "image/jxl"}
BROWSERS_SHOW = {"jpeg", "webp", "avif"}  # the others are sent as PNG for display
STOPPED_SHADE = (0, 0, 0, 140)  # RGBA laid over the blocks an iteration did not code


@dataclass(frozen=True)
class Peer:
    """A comparison codec, or why this machine cannot run it."""

    name: str
    label: str
    codec: OneShotCodec | None
    reason: str | None = None

    def summary(self) -> dict[str, object]:
        return {"label": self.label, "available": self.codec is not None, "reason": self.reason,
                "shown_as_png": self.name not in BROWSERS_SHOW}


def peers(names: tuple[str, ...] = tuple(PEERS)) -> dict[str, Peer]:
    """The comparison codecs by viewer name; an unavailable one carries the reason."""
    found: dict[str, Peer] = {}
    for name in names:
        key, label = PEERS[name]
        try:
            codec = classic_codec(key)
        except CodecUnavailable as e:
            found[name] = Peer(name, label, None, str(e))
            continue
        assert isinstance(codec, OneShotCodec)
        found[name] = Peer(name, label, replace(codec, options={**codec.options,
                                                          **QUICKER.get(name, {})}))
    return found


@dataclass(frozen=True)
class Coded:
    """One picture as one codec delivers it at one step."""

    data: bytes  # PNG of the decoded .rnnc step, or the peer codec's file
    size: int  # what a receiver downloads: the .rnnc file cut here, or the peer's file
    psnr: float
    ms_ssim: float | None  # None until measured (rnncodec's steps: after they are shown)
    quality: int | None = None  # the peer's quality setting

    def summary(self, pixels: int) -> dict[str, float | int | None]:
        return {"bytes": self.size, "bpp": self.size * 8 / pixels,
                "psnr": self.psnr if math.isfinite(self.psnr) else None,  # JSON has no infinity
                "ms_ssim": self.ms_ssim, "quality": self.quality}


@dataclass
class Step:
    rnnc: Coded
    # filled once matched: None where even the lowest quality is larger than the .rnnc file
    peers: dict[str, Coded | None]
    blocks: np.ndarray | None = None  # adaptive files: the blocks this iteration coded


class Result:
    """One upload's analysis as it grows: its steps, and the events that announced them.

    Written by one worker thread and read by request handlers, under a lock. The events are
    what ``/events`` streams: ``info`` first, then ``step`` and ``peers`` as they come, then
    ``done`` or ``failed``.
    """

    def __init__(self, original: Image.Image, model: str, codecs: dict[str, Peer]) -> None:
        self.width, self.height = original.size
        self.gray = original.mode == "L"
        self.model = model
        self.codecs = codecs
        self.original = png(original)
        self.rnnc = b""  # the file so far, cut after the last step
        self.steps: list[Step] = []
        self.state = "queued"  # then running, then done or failed
        self.detail: str | None = None  # why it failed
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._publish({"event": "info"} | self._info())

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def nbytes(self) -> int:
        with self._lock:
            coded = [c for s in self.steps for c in (s.rnnc, *s.peers.values()) if c]
            return len(self.original) + len(self.rnnc) + sum(len(c.data) for c in coded)

    def _info(self) -> dict[str, object]:
        return {"width": self.width, "height": self.height, "mode": "L" if self.gray else "RGB",
                "model": self.model,
                "codecs": {name: peer.summary() for name, peer in self.codecs.items()}}

    def _publish(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def events(self, start: int) -> tuple[list[dict[str, Any]], bool]:
        """The events from index ``start`` on, and whether the result is finished."""
        with self._lock:
            return self._events[start:], self.finished

    def start(self) -> None:
        with self._lock:
            self.state = "running"
            self._publish({"event": "running"})

    def add_step(self, file: bytes, coded: Coded) -> None:
        *_, (blocks, _) = coded_blocks(parse(file))
        with self._lock:
            self.rnnc = file
            self.steps.append(Step(coded, {}, blocks))
            self._publish({"event": "step", "step": self._step_summary(len(self.steps))})

    def add_peers(self, step: int, rnnc: Coded, coded: dict[str, Coded | None]) -> None:
        """The step's peers, and its own picture measured in full."""
        with self._lock:
            self.steps[step - 1].rnnc = rnnc
            self.steps[step - 1].peers.update(coded)
            self._publish({"event": "peers", "iteration": step,
                           "rnnc": self._rnnc_summary(step)} | {
                name: c.summary(self.pixels) if c else None for name, c in coded.items()})

    def finish(self) -> None:
        with self._lock:
            self.state = "done"
            self._publish({"event": "done", "steps": len(self.steps)})

    def fail(self, detail: str) -> None:
        with self._lock:
            if self.finished:
                return
            self.state, self.detail = "failed", detail
            self._publish({"event": "failed", "detail": detail})

    def file_at(self, step: int) -> bytes:
        return truncate(self.rnnc, iterations=step)

    def blocks_png(self, step: int) -> bytes | None:
        """The image's size, transparent where the step's iteration coded its blocks and shaded
        where they had stopped; None for a uniform file."""
        blocks = self.steps[step - 1].blocks
        if blocks is None:
            return None
        full = blocks.repeat(BLOCK, 0).repeat(BLOCK, 1)[:self.height, :self.width]
        rgba = np.zeros((*full.shape, 4), np.uint8)
        rgba[~full] = STOPPED_SHADE
        return png(Image.fromarray(rgba, "RGBA"))

    def _rnnc_summary(self, step: int) -> dict[str, float | int | None]:
        s = self.steps[step - 1]
        return s.rnnc.summary(self.pixels) | {
            "blocks_coded": None if s.blocks is None else float(s.blocks.mean())}

    def _step_summary(self, step: int) -> dict[str, object]:
        s = self.steps[step - 1]
        return {"iteration": step, "rnnc": self._rnnc_summary(step)} | {
            name: c.summary(self.pixels) if c else None for name, c in s.peers.items()}

    def summary(self) -> dict[str, object]:
        with self._lock:
            steps = [self._step_summary(k) for k in range(1, len(self.steps) + 1)]
            return self._info() | {"state": self.state, "detail": self.detail, "steps": steps}


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # sent to a local page: speed over size
    return buf.getvalue()


def _measure(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(PSNR, MS-SSIM) against the reference, in the reference's mode (some codecs decode L
    as RGB)."""
    picture = Image.fromarray(decoded).convert("L" if reference.ndim == 2 else "RGB")
    decoded = np.asarray(picture)
    return psnr(reference, decoded), ms_ssim(reference, decoded)


def _pixels(coded: Coded) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(coded.data)))


class SizeMatcher:
    """One image in one codec at the highest quality whose file is no larger than a byte budget.

    Files are memoised and every search starts from the qualities already tried: the closest
    one that fits and the closest above it that does not. Between them it probes where the size,
    interpolated in log bytes, meets the budget (never closer than a quarter of the gap to
    either end, so the gap shrinks fast even where the sizes bend), so that fitting 16 growing
    budgets costs a few dozen encodes.
    """

    def __init__(self, codec: OneShotCodec, reference: np.ndarray) -> None:
        self._codec, self._reference = codec, reference
        self._files: dict[int, bytes] = {}

    def _size(self, quality: int) -> int:
        if quality not in self._files:
            self._files[quality] = self._codec.encode(self._reference, quality)
        return len(self._files[quality])

    def _next_probe(self, lo: int, hi: int, budget: int) -> int:
        """A quality strictly between ``lo`` (fits) and ``hi`` (too large, or 101: untried)."""
        if hi > 100:
            return (lo + hi) // 2
        small, large = math.log(self._size(lo)), math.log(self._size(hi))
        guess = lo + (math.log(budget) - small) / max(large - small, 1e-9) * (hi - lo)
        margin = (hi - lo) // 4
        return min(hi - 1 - margin, max(lo + 1 + margin, round(guess)))

    def fit(self, budget: int) -> Coded | None:
        if self._size(1) > budget:
            return None
        while True:
            lo = max(q for q, f in self._files.items() if len(f) <= budget)
            hi = min((q for q in self._files if q > lo), default=101)
            if hi - lo <= 1:
                break
            self._size(self._next_probe(lo, hi, budget))
        # sizes are not strictly monotone in quality: take the largest fitting file of all tried
        size, best = max((len(f), q) for q, f in self._files.items() if len(f) <= budget)
        data = self._files[best]
        return Coded(data, size, *_measure(self._reference, self._codec.decode(data)),
                     quality=best)


def _rate(target: Target) -> dict[str, Any]:
    """``compress``'s rate arguments for a target, at most ``MAX_STEPS`` iterations."""
    if target.bpp is not None or target.measures_quality:
        return {"bpp": target.bpp, "ms_ssim": target.ms_ssim, "psnr": target.psnr}
    return {"iterations": min(target.iterations or MAX_STEPS, MAX_STEPS)}


def analyse(result: Result, original: Image.Image, target: Target, model: str,
            check: Callable[[], None]) -> None:
    """Encode to the target, publishing each step as it is coded (its picture, size and PSNR:
    MS-SSIM takes longer, and comes with the peers), then match every step's size with each
    available peer codec. ``check`` raises to stop (between steps)."""
    reference = np.array(original)

    def arrived(cut: bytes, pixels: np.ndarray) -> None:
        check()
        decoded = np.asarray(to_image(pixels, result.gray))
        result.add_step(cut, Coded(png(Image.fromarray(decoded)), len(cut),
                                   psnr(reference, decoded), None))

    compress(original, model=model, postfilter=False, on_iteration=arrived, **_rate(target))
    matchers = {name: SizeMatcher(peer.codec, reference)
                for name, peer in result.codecs.items() if peer.codec is not None}
    for k, step in enumerate(result.steps, 1):
        fitted: dict[str, Coded | None] = {}
        for name, matcher in matchers.items():
            check()
            fitted[name] = matcher.fit(step.rnnc.size)
        measured = replace(step.rnnc, ms_ssim=ms_ssim(reference, _pixels(step.rnnc)))
        result.add_peers(k, measured, fitted)
    result.finish()


def shown(codec: OneShotCodec, data: bytes) -> bytes:
    """A peer's file as PNG, for a format the browser cannot show (JPEG XL)."""
    return png(Image.fromarray(np.asarray(codec.decode(data))))
