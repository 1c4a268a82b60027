"""Rate control: what an encode aims for, and the adaptive files' block-threshold searches.

A ``Target`` says when ``codec.encode`` stops adding iterations. Adaptive files (format
version 4) also need the PSNR at which a block stops receiving codes; for a rate or quality
target that threshold is found here by bisection over whole encodes, each made by a callback
so that this module knows nothing of the networks or the format's chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .adaptive import SEARCH_STOP_DB, SEARCH_TRIALS
from .defaults import DEFAULT_ITERATIONS, MAX_ITERATIONS
from .errors import ArgumentError
from .files import truncate
from .format import parse
from .metrics import ms_ssim, psnr


@dataclass(frozen=True)
class Target:
    """When to stop adding iterations. Exactly one of the fields may be set (else: iterations)."""

    iterations: int | None = None
    bpp: float | None = None
    ms_ssim: float | None = None
    psnr: float | None = None

    def __post_init__(self) -> None:
        set_ = [k for k, v in vars(self).items() if v is not None]
        if len(set_) > 1:
            raise ArgumentError(f"give only one rate target, not {' and '.join(set_)}")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise ArgumentError(f"iterations must be between 1 and {MAX_ITERATIONS}")
        if self.bpp is not None and not self.bpp > 0:
            raise ArgumentError("bpp must be positive")
        if self.ms_ssim is not None and not 0 < self.ms_ssim < 1:
            raise ArgumentError("ms_ssim must be between 0 and 1")
        if self.psnr is not None and not self.psnr > 0:
            raise ArgumentError("psnr must be positive")

    @property
    def max_iterations(self) -> int:
        return self.iterations or DEFAULT_ITERATIONS

    @property
    def measures_quality(self) -> bool:
        return self.ms_ssim is not None or self.psnr is not None

    @property
    def quality(self) -> float | None:
        """The quality asked for (MS-SSIM or PSNR in dB), None without a quality target."""
        return self.ms_ssim if self.ms_ssim is not None else self.psnr

    def measure(self, original: np.ndarray, decoded: np.ndarray) -> float | None:
        """The decoded image's quality on the target's metric (None without a quality target)."""
        if self.ms_ssim is not None:
            return ms_ssim(original, decoded)
        if self.psnr is not None:
            return psnr(original, decoded)
        return None

    def met_by(self, encoded: Encoded) -> bool:
        """Whether a file ``encode`` made for this quality target reaches it (False for the
        other targets)."""
        value = encoded.ms_ssim if self.ms_ssim is not None else encoded.psnr
        return value is not None and self.quality is not None and value >= self.quality


@dataclass(frozen=True)
class Encoded:
    """What ``encode`` made: the file, its iterations, and for a quality target the quality
    its decoded image reaches on the target's metric (the other is None)."""

    data: bytes
    iterations: int
    ms_ssim: float | None = None
    psnr: float | None = None


# one adaptive encode: (the target it stops at, the block threshold in dB, whether it reports
# progress to the caller) → the file
EncodeAt = Callable[[Target, float, bool], Encoded]


def fit_rate(encode_at: EncodeAt, target: Target, pixels: int) -> Encoded:
    """The adaptive file within ``target.bpp`` whose block threshold is highest: bisection
    over ``SEARCH_STOP_DB``, each trial a whole encode up to the iteration limit; when even
    the lowest threshold's file is too large, that file cut to the rate."""
    budget = (target.bpp or 0) * pixels
    free = Target(iterations=target.max_iterations)
    low, high = SEARCH_STOP_DB
    best = None
    for trial in range(SEARCH_TRIALS):
        if trial == 0:
            stop_db = high  # the best file there is: when it fits, there is nothing to search
        elif trial == SEARCH_TRIALS - 1 and best is None:
            stop_db = low  # none fitted yet: the smallest file
        else:
            stop_db = (low + high) / 2
        result = encode_at(free, stop_db, False)
        if len(result.data) * 8 <= budget:
            best, low = result, stop_db
            if trial == 0:
                break
        else:
            high = stop_db
    if best is not None:
        return best
    data = truncate(result.data, bpp=target.bpp)
    return Encoded(data, len(parse(data).chunks))


def fit_quality(encode_at: EncodeAt, target: Target) -> Encoded:
    """The smallest adaptive file whose image reaches the quality target, its block threshold
    the lowest of a bisection: from the target itself for ``psnr`` (one encode when that
    reaches it), else from the low end of ``SEARCH_STOP_DB``, up to its high end (whose file
    is returned when even it falls short). Only the first encode reports progress."""
    low, high = target.psnr or SEARCH_STOP_DB[0], max(SEARCH_STOP_DB[1], target.psnr or 0)
    first = encode_at(target, low, True)
    if target.met_by(first):
        return first
    best: Encoded | None = None
    for trial in range(1, SEARCH_TRIALS):
        stop_db = high if trial == 1 else (low + high) / 2
        result = encode_at(target, stop_db, False)
        if target.met_by(result):
            best = result if best is None or len(result.data) < len(best.data) else best
            high = stop_db
        elif trial == 1:
            return result  # even the highest threshold falls short: the best there is
        else:
            low = stop_db
    return best or first
