"""Coder 1: an adaptive binary context coder — the fast, non-neural baseline and fallback.

Each bit b[c, y, x] of iteration t is coded with a probability chosen by its context:
its channel c, the iteration t (capped at 16), the same bit in the previous iteration, and its
left and upper neighbours in the current iteration (outside the grid, before the first
iteration or a block not coded in an adaptive file counts as a third value). The probability
of a context starts from a prior table fitted on training photos and shipped in the model file
(uniform when a model has none) and adapts to the image with counts. In adaptive files only
the coded blocks' bits are sent.

Bits are visited along anti-diagonals (y + x = k): the left and upper neighbours of every bit on
a diagonal lie on the previous one, so the decoder handles a whole diagonal of all 32 channels at
a time (h + w - 1 steps per iteration instead of 32·h·w).

Probabilities are integers in 1 … 4095 (12 bits) computed with integer arithmetic only, so the
encoder and decoder agree exactly on every machine; the range coder is `constriction`'s.
A CRC-32 of the decoded codes ends each payload and turns any desync into an error.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..defaults import STOPPED
from .rangecoding import ONE, PROB_BITS, BitReader, encode_bits

MAX_T = 16
CHANNELS = 32
N_CONTEXTS = CHANNELS * MAX_T * 27
PRIOR_WEIGHT = 24  # pseudo-counts behind the prior table when mixing it with image counts
OUTSIDE = 2
assert OUTSIDE == STOPPED  # a block an adaptive file does not code is a neighbour "outside"


def context_index(c: np.ndarray, t: int, prev: np.ndarray, left: np.ndarray,
                  up: np.ndarray) -> np.ndarray:
    """Context ids in [0, N_CONTEXTS) from channel, iteration and three ternary neighbours."""
    return (((c * MAX_T + min(t, MAX_T - 1)) * 3 + prev) * 3 + left) * 3 + up


def diagonals(h: int, w: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ys, xs) of each anti-diagonal y + x = k, k = 0 … h + w - 2."""
    for k in range(h + w - 1):
        ys = np.arange(max(0, k - w + 1), min(h - 1, k) + 1)
        yield ys, k - ys


def _neighbours(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and upper values (OUTSIDE off the grid) of positions on one diagonal, per channel."""
    left = np.where(xs > 0, grid[:, ys, np.maximum(xs - 1, 0)], OUTSIDE)
    up = np.where(ys > 0, grid[:, np.maximum(ys - 1, 0), xs], OUTSIDE)
    return left, up


class ContextModel:
    """Prior table plus per-image counts; yields integer probabilities of a 1 bit."""

    def __init__(self, prior: np.ndarray | None) -> None:
        self.prior = (np.full(N_CONTEXTS, ONE // 2, np.int64) if prior is None
                      else prior.astype(np.int64))
        self.ones = np.zeros(N_CONTEXTS, np.int64)
        self.seen = np.zeros(N_CONTEXTS, np.int64)

    def probability(self, ctx: np.ndarray) -> np.ndarray:
        num = (self.ones[ctx] << PROB_BITS) + PRIOR_WEIGHT * self.prior[ctx]
        return np.clip(num // (self.seen[ctx] + PRIOR_WEIGHT), 1, ONE - 1)

    def update(self, ctx: np.ndarray, bits: np.ndarray) -> None:
        np.add.at(self.ones, ctx, bits)
        np.add.at(self.seen, ctx, 1)


def _walk(shape: tuple[int, int, int], previous: list[np.ndarray],
          prior: np.ndarray | None) -> Iterator[tuple[tuple[np.ndarray, np.ndarray], np.ndarray,
                                                       np.ndarray, ContextModel]]:
    """Shared by encoder and decoder: per diagonal, the grid being filled and the contexts.

    The caller must write the diagonal's bits into ``grid`` before asking for the next one.
    """
    _, h, w = shape
    t = len(previous)
    prev_grid = previous[-1].astype(np.int64) if previous else None
    grid = np.full(shape, OUTSIDE, np.int64)
    model = ContextModel(prior)
    c = np.arange(CHANNELS)[:, None]
    for ys, xs in diagonals(h, w):
        left, up = _neighbours(grid, ys, xs)
        prev = prev_grid[:, ys, xs] if prev_grid is not None else np.full_like(left, OUTSIDE)
        yield (ys, xs), grid, context_index(c, t, prev, left, up), model


class ContextCoder:
    coder_id = 1
    name = "context"

    def __init__(self, prior: np.ndarray | None = None) -> None:
        self.prior = prior

    def encode(self, codes: np.ndarray, previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> bytes:
        symbols, probs = [], []
        for (ys, xs), grid, ctx, model in _walk(codes.shape, previous, self.prior):
            bits = codes[:, ys, xs].astype(np.int64)
            keep = slice(None) if coded is None else coded[ys, xs]
            symbols.append(bits[:, keep].ravel())
            probs.append(model.probability(ctx[:, keep]).ravel())
            model.update(ctx[:, keep].ravel(), bits[:, keep].ravel())
            grid[:, ys, xs] = bits  # blocks not coded hold STOPPED, i.e. OUTSIDE
        return encode_bits(codes, np.concatenate(symbols), np.concatenate(probs))

    def decode(self, payload: bytes, shape: tuple[int, int, int], previous: list[np.ndarray],
               coded: np.ndarray | None = None) -> np.ndarray:
        reader = BitReader(payload)
        grid = np.zeros(shape, np.int64)
        for (ys, xs), grid, ctx, model in _walk(shape, previous, self.prior):
            keep = slice(None) if coded is None else coded[ys, xs]
            bits = reader.read(model.probability(ctx[:, keep]))
            model.update(ctx[:, keep].ravel(), bits.ravel())
            grid[:, ys[keep], xs[keep]] = bits  # the others stay OUTSIDE, i.e. STOPPED
        return reader.verify(grid.astype(np.uint8))


def fit_prior(samples: list[tuple[np.ndarray, list[np.ndarray]]]) -> np.ndarray:
    """A prior table (uint16 probabilities) from (codes, previous codes) pairs of training
    images."""
    ones = np.zeros(N_CONTEXTS, np.int64)
    seen = np.zeros(N_CONTEXTS, np.int64)
    for codes, previous in samples:
        for (ys, xs), grid, ctx, _ in _walk(codes.shape, previous, None):
            bits = codes[:, ys, xs].astype(np.int64)
            np.add.at(ones, ctx.ravel(), bits.ravel())
            np.add.at(seen, ctx.ravel(), 1)
            grid[:, ys, xs] = bits
    p = ((ones << PROB_BITS) + ONE // 2) // (seen + 1)
    return np.clip(p, 1, ONE - 1).astype(np.uint16)
