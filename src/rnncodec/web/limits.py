"""Bounds on what one request to the web viewer may cost; the server refuses anything past them."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Upload size, pixel count, result-cache size and the encoding pool, each settable with
    ``rnncodec serve``."""

    max_upload_bytes: int = 20 * MB
    max_pixels: int = 1_000_000  # encoding is CPU-bound: about 10 s per megapixel on one core
    cache_bytes: int = 256 * MB  # recent results, evicted least recently used first
    workers: int = 2  # images coded at once, each on one core (engine.network_step)
    queue: int = 8  # images waiting for a worker; past that the server answers 503

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"{name} must be positive")
