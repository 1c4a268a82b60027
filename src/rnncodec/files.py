"""Operations on .rnnc files that need no networks: reading, ``info`` and ``truncate``.

They work on the container alone (format.py) and import neither torch nor numpy, so the
commands built on them start fast; ``rnncodec.info`` and ``rnncodec.truncate`` are these (``info``
of an adaptive file imports numpy, to read its block maps).
A file cut inside a chunk (an interrupted download) is a FormatError, or with ``allow_cut``
the file of its complete iterations (format.parse).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .defaults import BLOCK
from .entropy import chunk_coders, coder_name
from .errors import ArgumentError, FormatError, InputMissingError
from .format import Container, Header, assemble, parse, split_adaptive

if TYPE_CHECKING:
    import numpy as np


def check_readable(path: Path) -> None:
    """Raise InputMissingError unless ``path`` is a regular file, naming what it is instead: a
    FIFO or device is refused rather than read, which could block for ever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputMissingError(f"no such file: {path}") from None
    except OSError as e:
        raise InputMissingError(f"cannot read {path}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise InputMissingError(f"{path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
            "a device"
        raise InputMissingError(f"{path} is {kind}, not a regular file (to read a pipe, give - "
                                "and redirect it to stdin)")


def read_bytes(data: bytes | str | Path) -> bytes:
    """The bytes of a file given as bytes or a path (InputMissingError if unreadable)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    path = Path(data)
    check_readable(path)
    try:
        return path.read_bytes()
    except OSError as e:
        check_readable(path)  # gone or changed kind since: say so
        raise InputMissingError(f"cannot read {path}: {e.strerror}") from None


def holds(container: Container) -> str:
    """How many iterations a file holds, in words (for errors)."""
    n = len(container.chunks)
    noun = "iteration" if n == 1 else "iterations"
    if container.cut:
        return f"the file holds {n} complete {noun} ({container.cut})"
    return f"the file holds {n} {noun}"


def truncate(data: bytes | str | Path, *, iterations: int | None = None,
             bpp: float | None = None, allow_cut: bool = False) -> bytes:
    """A shorter file holding at most the first ``iterations`` of another, or the most within
    ``bpp``, without re-encoding (and its filter only if it keeps them all: the filter was
    fitted to the image after the last). ``allow_cut``: a file cut inside a chunk gives a
    valid one of its complete iterations instead of a FormatError."""
    if (iterations is None) == (bpp is None):
        raise ArgumentError("give exactly one of iterations or bpp")
    if iterations is not None and iterations < 1:
        raise ArgumentError("iterations must be at least 1")
    container = parse(read_bytes(data), allow_cut=allow_cut)
    if container.cut and not container.chunks:
        raise FormatError(container.cut)
    n = len(container.chunks)
    if iterations is not None:
        n = min(n, iterations)
    elif bpp is not None:
        budget = bpp * container.header.width * container.header.height
        if container.size_after(n) * 8 > budget:  # the filter goes before any iteration does
            container = replace(container, filter=None)
        while n > 1 and container.size_after(n) * 8 > budget:
            n -= 1
    return assemble(container.header, container.chunks[:n],
                    container.filter if n == len(container.chunks) else None)


@dataclass(frozen=True)
class Info:
    """What ``info`` tells of a file."""

    header: Header
    iterations: int
    bytes: int
    bpp_per_iteration: list[float]  # bits per pixel of the file cut after each iteration
    coders: list[str]  # the entropy coder of each iteration (they differ under "best")
    filtered: bool  # whether the file holds a filter for the image after its last iteration
    cut: str | None = None  # where a file cut inside a chunk ends (info's allow_cut)
    # adaptive files: the fraction of the image's blocks each iteration codes; else None
    active_per_iteration: list[float] | None = None

    def as_dict(self) -> dict[str, object]:
        h = self.header
        return {"width": h.width, "height": h.height, "mode": "L" if h.gray else "RGB",
                "model": h.model, "weights": h.digest.hex(), "coder": coder_name(h.coder),
                "tile": h.tile,
                "iterations": self.iterations, "bytes": self.bytes,
                "bpp": self.bpp_per_iteration[-1] if self.bpp_per_iteration else 0.0,
                "bpp_per_iteration": self.bpp_per_iteration,
                "coder_per_iteration": self.coders, "filter": self.filtered,
                "cut": self.cut, "adaptive": self.active_per_iteration is not None,
                "active_per_iteration": self.active_per_iteration}


def info(data: bytes | str | Path, *, allow_cut: bool = False) -> Info:
    """Header fields, iterations present and the bpp after each of them. ``allow_cut``: a file
    cut inside a chunk reports its complete iterations and where the cut is (``Info.cut``)
    instead of raising FormatError."""
    raw = read_bytes(data)
    c: Container = parse(raw, allow_cut=allow_cut)
    pixels = c.header.width * c.header.height
    bpp = [c.size_after(i + 1) * 8 / pixels for i in range(len(c.chunks))]
    codes, active = c.chunks, None
    if c.header.adaptive:
        blocks = list(coded_blocks(c))
        codes = [payload for _, payload in blocks]
        active = [float(coded.mean()) for coded, _ in blocks if coded is not None]
    return Info(c.header, len(c.chunks), len(raw), bpp, chunk_coders(c.header.coder, codes),
                c.filter is not None, c.cut, active)


def coded_blocks(c: Container) -> Iterator[tuple[np.ndarray | None, bytes]]:
    """Per iteration: the blocks it codes (h×w bool, from an adaptive file's block map; None in
    a uniform file, where every iteration codes every block) and its codes' payload. A map that
    cannot be read is a FormatError when its iteration is reached."""
    if not c.header.adaptive:
        yield from ((None, chunk) for chunk in c.chunks)
        return
    import numpy as np  # only here: info and truncate of uniform files start without it

    from .entropy import blockmap

    coded = np.ones((-(-c.header.height // BLOCK), -(-c.header.width // BLOCK)), bool)
    for i, chunk in enumerate(c.chunks, 1):
        block_map, payload = split_adaptive(chunk, i)
        coded = blockmap.decode(block_map, coded, i)
        yield coded, payload
