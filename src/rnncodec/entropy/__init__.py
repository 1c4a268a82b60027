"""Entropy coders for the binary codes, registered by the id written in each file's header.

A coder turns one iteration's codes (a 32×h×w array of 0/1 bytes) into a chunk payload and back.
It may use the codes of earlier iterations as context, never later ones, so that a file cut after
any iteration still decodes.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import FormatError
from .raw import RawCoder


class BitCoder(Protocol):
    coder_id: int
    name: str

    def encode(self, codes: np.ndarray, previous: list[np.ndarray]) -> bytes: ...

    def decode(self, payload: bytes, shape: tuple[int, int, int],
               previous: list[np.ndarray]) -> np.ndarray: ...


CODERS: dict[str, BitCoder] = {c.name: c for c in [RawCoder()]}
DEFAULT_CODER = "raw"


def coder_by_name(name: str) -> BitCoder:
    if name not in CODERS:
        raise ValueError(f"unknown entropy coder {name!r}; choose one of {', '.join(CODERS)}")
    return CODERS[name]


def coder_by_id(coder_id: int) -> BitCoder:
    for c in CODERS.values():
        if c.coder_id == coder_id:
            return c
    raise FormatError(f"file uses entropy coder #{coder_id}, which this version does not know")
