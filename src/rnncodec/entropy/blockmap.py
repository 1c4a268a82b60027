"""The block map of an adaptive file (format version 4): which blocks an iteration codes.

A block that stops never restarts, so an iteration's map holds one binary decision, "coded
again", for each block the previous iteration coded (every block, for the first iteration) and
none for the blocks stopped before: a map cannot restart a block. An empty map means every such
block is coded again, so iterations before the first stop cost nothing but the length field.

Otherwise the decisions are range coded (constriction, as the codes are, without a CRC: the
codes' CRC that follows catches a map read differently) anti-diagonal by anti-diagonal
(y + x = k), each diagonal in row order, so that the left and upper neighbours of every decision
are known. Its context is the state of those two blocks in this iteration (coded, not coded, or
outside the image): nine contexts whose probabilities start even and adapt to the counts of
this map (a Krichevsky–Trofimov estimate in integer arithmetic).

A reader accepts only the bytes this encoder writes for the decisions it read (it re-encodes
them): trailing data, a spelled-out map where nothing stops, or a map read against other
blocks than it was written for are refused rather than decoded into some other map.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import FormatError
from .context import OUTSIDE, diagonals
from .rangecoding import ONE, PROB_BITS, BitReader, range_code

CONTEXTS = 9


class _Counts:
    """Per-context counts of decisions and of those that were "coded again"."""

    def __init__(self) -> None:
        self.ones = np.zeros(CONTEXTS, np.int64)
        self.seen = np.zeros(CONTEXTS, np.int64)

    def probability(self, ctx: np.ndarray) -> np.ndarray:
        num = (2 * self.ones[ctx] + 1) << PROB_BITS
        return np.clip(num // (2 * self.seen[ctx] + 2), 1, ONE - 1)

    def update(self, ctx: np.ndarray, bits: np.ndarray) -> None:
        np.add.at(self.ones, ctx, bits)
        np.add.at(self.seen, ctx, 1)


def _walk(was_coded: np.ndarray) -> Iterator[tuple[tuple[np.ndarray, np.ndarray], np.ndarray,
                                                     np.ndarray, _Counts]]:
    """Per diagonal: the positions that take a decision, the map being filled (0 not coded,
    1 coded) and their contexts. The caller writes the decisions into the map before asking
    for the next diagonal."""
    h, w = was_coded.shape
    grid = np.zeros((h, w), np.int64)
    counts = _Counts()
    for ys, xs in diagonals(h, w):
        keep = was_coded[ys, xs]
        ys, xs = ys[keep], xs[keep]
        left = np.where(xs > 0, grid[ys, np.maximum(xs - 1, 0)], OUTSIDE)
        up = np.where(ys > 0, grid[np.maximum(ys - 1, 0), xs], OUTSIDE)
        yield (ys, xs), grid, left * 3 + up, counts


def encode(coded: np.ndarray, was_coded: np.ndarray) -> bytes:
    """The map saying which of the ``was_coded`` blocks (h×w bool) are ``coded`` (h×w bool,
    within ``was_coded``) in this iteration."""
    if np.any(coded & ~was_coded):
        raise ValueError("a stopped block cannot restart")
    if np.array_equal(coded, was_coded):
        return b""
    symbols, probs = [], []
    for (ys, xs), grid, ctx, counts in _walk(was_coded):
        bits = coded[ys, xs].astype(np.int64)
        symbols.append(bits)
        probs.append(counts.probability(ctx))
        counts.update(ctx, bits)
        grid[ys, xs] = bits
    return range_code(np.concatenate(symbols), np.concatenate(probs))


def decode(payload: bytes, was_coded: np.ndarray, iteration: int) -> np.ndarray:
    """The blocks an iteration codes (h×w bool), from its map and the blocks the previous one
    coded. FormatError for a map other than the one ``encode`` writes for what it says, or
    one that codes no block (no writer sends an iteration without codes); ``iteration``
    counts from 1, for the messages."""
    if not payload:
        coded = was_coded.copy()
    else:
        reader = BitReader(payload, checked=False)
        for (ys, xs), grid, ctx, counts in _walk(was_coded):
            bits = reader.read(counts.probability(ctx))
            counts.update(ctx, bits)
            grid[ys, xs] = bits
        coded = grid.astype(bool)
        if encode(coded, was_coded) != payload:
            raise FormatError(f"iteration {iteration}'s block map is malformed: the file is "
                              "corrupt")
    if not coded.any():
        raise FormatError(f"iteration {iteration}'s block map codes no block: the file is "
                          "corrupt")
    return coded
