"""Entropy coders for the binary codes, registered by the id written in each file's header.

A coder turns one iteration's codes (a 32×h×w array of 0/1 bytes) into a chunk payload and back.
It may use the codes of earlier iterations as context, never later ones, so that a file cut after
any iteration still decodes. Coders that learn from data keep their tables in the model's
weights file (keys starting with ``entropy.``), so the weights hash in a file's header pins them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch

from ..errors import ArgumentError, FormatError, ModelError
from .best import BestCoder, chunk_coder
from .context import ContextCoder
from .neural import PREFIX as NEURAL_PREFIX
from .neural import NeuralCoder
from .raw import RawCoder


class BitCoder(Protocol):
    coder_id: int
    name: str

    def encode(self, codes: np.ndarray, previous: list[np.ndarray]) -> bytes: ...

    def decode(self, payload: bytes, shape: tuple[int, int, int],
               previous: list[np.ndarray]) -> np.ndarray: ...


PRIOR_KEY = "entropy.context.prior"
CODER_NAMES = {c.name: c.coder_id for c in (RawCoder, ContextCoder, NeuralCoder, BestCoder)}
AUTO = "auto"  # what files get unless asked otherwise: the best coder per iteration
SINGLE = (RawCoder.name, ContextCoder.name, NeuralCoder.name)


def resolve(name: str) -> str:
    return BestCoder.name if name == AUTO else name


def ships_neural(tables: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(NEURAL_PREFIX) for k in tables)


def make_coder(name: str, tables: Mapping[str, torch.Tensor]) -> BitCoder:
    """The coder called ``name``, set up with the model's learned tables (if it has any)."""
    if name == BestCoder.name:  # all single coders this model can run
        return BestCoder([make_coder(n, tables) for n in SINGLE
                          if n != NeuralCoder.name or ships_neural(tables)])
    if name == RawCoder.name:
        return RawCoder()
    if name == ContextCoder.name:
        prior = tables.get(PRIOR_KEY)
        return ContextCoder(None if prior is None else prior.numpy().astype(np.int64))
    if name == NeuralCoder.name:
        if not ships_neural(tables):
            raise ModelError("this model ships no neural entropy coder; use --coder context")
        return NeuralCoder(tables)
    raise ArgumentError(f"unknown entropy coder {name!r}; choose one of {', '.join(CODER_NAMES)}")


def coder_name(coder_id: int) -> str:
    for name, i in CODER_NAMES.items():
        if i == coder_id:
            return name
    raise FormatError(f"file uses entropy coder #{coder_id}, which this version does not know")


def chunk_coders(coder_id: int, chunks: list[bytes]) -> list[str]:
    """The coder of each chunk: the file's, or for the best coder the one each chunk names."""
    if coder_id != BestCoder.coder_id:
        return [coder_name(coder_id)] * len(chunks)
    return [coder_name(chunk_coder(c)) for c in chunks]
