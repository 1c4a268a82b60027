"""Operations on .rnnc files that need no networks: reading, ``info`` and ``truncate``.

They work on the container alone (format.py) and import neither torch nor numpy, so the
commands built on them start fast; ``rnncodec.info`` and ``rnncodec.truncate`` are these.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .entropy import chunk_coders, coder_name
from .errors import InputMissingError
from .format import Container, Header, assemble, parse


def read_bytes(data: bytes | str | Path) -> bytes:
    """The bytes of a file given as bytes or a path (InputMissingError if unreadable)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    path = Path(data)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputMissingError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputMissingError(f"{path} is a directory, not a file") from None
    except OSError as e:
        raise InputMissingError(f"cannot read {path}: {e.strerror}") from None


def truncate(data: bytes | str | Path, *, iterations: int | None = None,
             bpp: float | None = None) -> bytes:
    """A shorter file holding the first iterations of another, without re-encoding (and its
    filter only if it keeps them all: the filter was fitted to the image after the last)."""
    if (iterations is None) == (bpp is None):
        raise ValueError("give exactly one of iterations or bpp")
    container = parse(read_bytes(data))
    n = len(container.chunks)
    if iterations is not None:
        if iterations < 1:
            raise ValueError("iterations must be at least 1")
        n = min(n, iterations)
    else:
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

    def as_dict(self) -> dict[str, object]:
        h = self.header
        return {"width": h.width, "height": h.height, "mode": "L" if h.gray else "RGB",
                "model": h.model, "weights": h.digest.hex(), "coder": coder_name(h.coder),
                "tile": h.tile,
                "iterations": self.iterations, "bytes": self.bytes,
                "bpp": self.bpp_per_iteration[-1] if self.bpp_per_iteration else 0.0,
                "bpp_per_iteration": self.bpp_per_iteration,
                "coder_per_iteration": self.coders, "filter": self.filtered}


def info(data: bytes | str | Path) -> Info:
    """Header fields, iterations present and the bpp after each of them."""
    raw = read_bytes(data)
    c: Container = parse(raw)
    pixels = c.header.width * c.header.height
    bpp = [c.size_after(i + 1) * 8 / pixels for i in range(len(c.chunks))]
    return Info(c.header, len(c.chunks), len(raw), bpp, chunk_coders(c.header.coder, c.chunks),
                c.filter is not None)
