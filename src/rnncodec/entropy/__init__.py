"""Entropy coders for the binary codes, registered by the id written in each file's header.

A coder turns one iteration's codes (a 32×h×w array of 0/1 bytes) into a chunk payload and back.
It may use the codes of earlier iterations as context, never later ones, so that a file cut after
any iteration still decodes. In adaptive files (format version 4) an iteration codes only some
blocks (``coded``, h×w bool, known to both sides from the block map): the others hold
``defaults.STOPPED`` in every channel, cost nothing, and read as "no information" in contexts.
Coders that learn from data keep their tables in the model's weights file (keys starting with
``entropy.``), so the weights hash in a file's header pins them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ..errors import ArgumentError, FormatError, ModelError
from .best import chunk_coder

if TYPE_CHECKING:
    import numpy as np
    import torch

# The coders are imported where they are made (``make_coder``): reading a file's names and
# sizes (``rnncodec info``) needs neither numpy's coders nor torch's.


class BitCoder(Protocol):
    coder_id: int
    name: str

    def encode(self, codes: np.ndarray, previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> bytes: ...

    def decode(self, payload: bytes, shape: tuple[int, int, int], previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> np.ndarray: ...


PRIOR_KEY = "entropy.context.prior"
NEURAL_PREFIX = "entropy.neural."  # the keys of the neural coder's tables
# name → the id written in the header; each coder class carries the same pair
CODER_NAMES = {"raw": 0, "context": 1, "neural": 2, "best": 3}
BEST = "best"
AUTO = "auto"  # what files get unless asked otherwise: the best coder per iteration
SINGLE = ("raw", "context", "neural")


def resolve(name: str) -> str:
    return BEST if name == AUTO else name


def ships_neural(tables: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(NEURAL_PREFIX) for k in tables)


def make_coder(name: str, tables: Mapping[str, torch.Tensor]) -> BitCoder:
    """The coder called ``name``, set up with the model's learned tables (if it has any)."""
    if name == BEST:  # all single coders this model can run
        from .best import BestCoder

        return BestCoder([make_coder(n, tables) for n in SINGLE
                          if n != "neural" or ships_neural(tables)])
    if name == "raw":
        from .raw import RawCoder

        return RawCoder()
    if name == "context":
        import numpy as np

        from .context import ContextCoder

        prior = tables.get(PRIOR_KEY)
        return ContextCoder(None if prior is None else prior.numpy().astype(np.int64))
    if name == "neural":
        if not ships_neural(tables):
            raise ModelError("this model ships no neural entropy coder; use --coder context")
        from .neural import NeuralCoder

        return NeuralCoder(tables)
    raise ArgumentError(f"unknown entropy coder {name!r}; choose one of {', '.join(CODER_NAMES)}")


def coder_name(coder_id: int) -> str:
    for name, i in CODER_NAMES.items():
        if i == coder_id:
            return name
    raise FormatError(f"file uses entropy coder #{coder_id}, which this version does not know")


def chunk_coders(coder_id: int, chunks: list[bytes]) -> list[str]:
    """The coder of each chunk: the file's, or for the best coder the one each chunk names."""
    if coder_id != CODER_NAMES[BEST]:
        return [coder_name(coder_id)] * len(chunks)
    return [coder_name(chunk_coder(c)) for c in chunks]
