"""Coder 3: each iteration with whichever coder makes it smallest, named in its first byte.

No one coder wins everywhere: the neural coder, which learned what early codes look like, tends
to win at the first iterations, and the adaptive context coder, whose per-image counts pay off,
at later ones (benchmarks/entropy_coders.py measures them). The encoder tries every coder it has
on an iteration's codes and keeps the shortest payload, so a file is never larger than with any
single one of them, for one byte per iteration. The decoder needs no
choice of its own: the byte says which coder reads the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FormatError

if TYPE_CHECKING:
    import numpy as np

    from . import BitCoder


def chunk_coder(payload: bytes) -> int:
    """The id of the coder that wrote a best-coder chunk: its first byte."""
    if not payload:
        raise FormatError("empty chunk: the coder byte is missing")
    return payload[0]


class BestCoder:
    coder_id = 3
    name = "best"

    def __init__(self, coders: list[BitCoder]) -> None:
        """``coders``: BitCoders with distinct ids below 256 (raw, context, neural if shipped)."""
        self.coders = {c.coder_id: c for c in coders}

    def encode(self, codes: np.ndarray, previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> bytes:
        payloads = [bytes([i]) + c.encode(codes, previous, coded)
                    for i, c in self.coders.items()]
        return min(payloads, key=len)  # ties go to the first: the cheaper coder to decode

    def decode(self, payload: bytes, shape: tuple[int, int, int], previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> np.ndarray:
        coder_id = chunk_coder(payload)
        coder = self.coders.get(coder_id)
        if coder is None:
            raise FormatError(f"chunk names entropy coder #{coder_id}, which this model or "
                              "version cannot decode")
        return coder.decode(payload[1:], shape, previous, coded)
