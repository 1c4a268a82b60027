"""Coder 0: the codes as packed bits, no entropy coding (0.125 bpp per iteration exactly; in
adaptive files, 32 bits per coded block)."""

from __future__ import annotations

import numpy as np

from ..defaults import STOPPED
from ..errors import FormatError


class RawCoder:
    coder_id = 0
    name = "raw"

    def encode(self, codes: np.ndarray, previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> bytes:
        sent = codes if coded is None else codes[:, coded]  # channel, then blocks in C order
        return np.packbits(sent.astype(np.uint8).ravel()).tobytes()

    def decode(self, payload: bytes, shape: tuple[int, int, int], previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> np.ndarray:
        n = int(np.prod(shape)) if coded is None else shape[0] * int(coded.sum())
        if len(payload) != (n + 7) // 8:
            raise FormatError(f"raw chunk holds {len(payload)} bytes, expected {(n + 7) // 8}")
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=n)
        if coded is None:
            return bits.reshape(shape)
        codes = np.full(shape, STOPPED, np.uint8)
        codes[:, coded] = bits.reshape(shape[0], -1)
        return codes
