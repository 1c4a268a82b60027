"""Coder 0: the codes as packed bits, no entropy coding (0.125 bpp per iteration exactly)."""

from __future__ import annotations

import numpy as np

from ..errors import FormatError


class RawCoder:
    coder_id = 0
    name = "raw"

    def encode(self, codes: np.ndarray, previous: list[np.ndarray]) -> bytes:
        return np.packbits(codes.astype(np.uint8).ravel()).tobytes()

    def decode(self, payload: bytes, shape: tuple[int, int, int],
               previous: list[np.ndarray]) -> np.ndarray:
        n = int(np.prod(shape))
        if len(payload) != (n + 7) // 8:
            raise FormatError(f"raw chunk holds {len(payload)} bytes, expected {(n + 7) // 8}")
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=n)
        return bits.reshape(shape)
