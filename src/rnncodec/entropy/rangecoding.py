"""The shared wire format of the learned coders: a CRC-32 of the codes, then a range-coded
stream of bits (constriction's queue range coder) under 12-bit integer probabilities.

The CRC is of the decoded codes, not of the payload: it catches a decoder whose probabilities
differ from the encoder's (a desync), which a payload checksum cannot.
"""

from __future__ import annotations

import struct
import zlib

import constriction
import numpy as np

from ..errors import FormatError

PROB_BITS = 12
ONE = 1 << PROB_BITS
_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)


def codes_crc(codes: np.ndarray) -> bytes:
    return struct.pack(">I", zlib.crc32(np.packbits(codes.astype(np.uint8).ravel()).tobytes()))


def range_code(symbols: np.ndarray, probs: np.ndarray) -> bytes:
    """``symbols`` (0/1) in order with P(1) = probs / 4096, as the range coder's words."""
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(symbols.astype(np.int32), _BERNOULLI, probs.astype(np.float64) / ONE)
    return enc.get_compressed().astype("<u4").tobytes()


def encode_bits(codes: np.ndarray, symbols: np.ndarray, probs: np.ndarray) -> bytes:
    """Payload for ``codes``, sent as ``symbols`` (0/1) in order with P(1) = probs / 4096."""
    return codes_crc(codes) + range_code(symbols, probs)


class BitReader:
    """Decodes a payload written by ``encode_bits``, a batch of bits at a time (or with
    ``checked=False`` one written by ``range_code``, which has no CRC)."""

    def __init__(self, payload: bytes, checked: bool = True) -> None:
        start = 4 if checked else 0
        if len(payload) < start or len(payload) % 4:
            raise FormatError("entropy-coded chunk has an impossible length")
        self.crc = payload[:start]
        self.dec = constriction.stream.queue.RangeDecoder(
            np.frombuffer(payload[start:], dtype="<u4").astype(np.uint32))

    def read(self, probs: np.ndarray) -> np.ndarray:
        """The next bits (int64 0/1, shaped like ``probs``), given their integer probabilities."""
        try:
            bits = self.dec.decode(_BERNOULLI, probs.ravel().astype(np.float64) / ONE)
        except (AssertionError, ValueError):  # constriction's "invalid compressed data"
            raise FormatError("entropy decoder desync: the chunk is corrupt") from None
        return np.asarray(bits, dtype=np.int64).reshape(probs.shape)

    def verify(self, codes: np.ndarray) -> np.ndarray:
        if codes_crc(codes) != self.crc:
            raise FormatError("entropy decoder desync: decoded codes fail their checksum")
        return codes
