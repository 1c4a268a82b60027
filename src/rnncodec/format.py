"""The .rnnc container: a header, then one checksummed chunk per iteration (see docs/format.md),
and in versions 3 and 4 optionally a filter chunk after the last iteration (postfilter.py).
Version 4 files are adaptive: each chunk's payload starts with the map of the blocks it codes
(``split_adaptive``; entropy/blockmap.py codes the map).

Chunks are self-delimiting and carry no count in the header, so cutting a file after any chunk
leaves a valid, shorter file: the bitstream is embedded (a file cut before its filter chunk
simply has none). A file cut inside a chunk (an interrupted download) still holds its complete
chunks: ``parse(data, allow_cut=True)`` returns those and says where the cut is. Every length
and size is checked against the data actually present before anything is allocated.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

from .defaults import BLOCK, MAX_ITERATIONS, MAX_TILE, MIN_TILE
from .errors import FormatError

MAGIC = b"RNNC"
VERSION = 3  # the newest version of a uniform file; without a filter they are written as 1 or 2
ADAPTIVE_VERSION = 4  # a file whose blocks stop at their own iterations (adaptive.py)
VERSIONS = (1, 2, 3, 4)  # 2 adds the tile side after the weights hash; 3 allows a filter chunk;
# 4 is 3 with a map of the coded blocks at the start of each iteration's payload
MAX_SIDE = 1 << 20
MAX_PIXELS = 1 << 28  # what a header may declare at all; the codec applies its own lower limit
FLAG_GRAY = 1

_FIXED = struct.Struct(">4sBBIIBB")  # magic, version, flags, width, height, coder, name length
_TILE = struct.Struct(">H")  # version 2: tile side in pixels
_CHUNK = struct.Struct(">I")  # payload length
_CRC = struct.Struct(">I")
_MAP = struct.Struct(">I")  # version 4: the length of a payload's map part
FILTER_MARK = 1 << 31  # set in a chunk's length field: the filter chunk (version 3)


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    gray: bool
    coder: int
    model: str
    digest: bytes  # 16 bytes: the model's weights hash
    tile: int = 0  # tile side in pixels (see tiling.py); 0: the image was coded whole
    adaptive: bool = False  # whether blocks stop at their own iterations (version 4)

    def pack(self, filtered: bool = False) -> bytes:
        """Version 4 for an adaptive file, 3 for a file with a filter chunk, else 1 for an
        untiled image (readable by version-1 readers) and 2 for a tiled one."""
        name = self.model.encode()
        version = ADAPTIVE_VERSION if self.adaptive else 3 if filtered else 2 if self.tile else 1
        body = _FIXED.pack(MAGIC, version, FLAG_GRAY if self.gray else 0,
                           self.width, self.height, self.coder, len(name)) + name + self.digest
        if version > 1:
            body += _TILE.pack(self.tile)
        return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class Container:
    header: Header
    header_size: int
    chunks: list[bytes]  # one payload per iteration
    filter: bytes | None = None  # the filter chunk's payload, for the image after all chunks
    cut: str | None = None  # where the data ends inside a chunk (parse's allow_cut), else None

    def size_after(self, iterations: int) -> int:
        """Bytes of a file holding the first ``iterations`` chunks (and the filter, when it holds
        them all: a shorter file loses it)."""
        n = min(iterations, len(self.chunks))
        kept = self.filter if n == len(self.chunks) else None
        size = len(self.header.pack(kept is not None)) + sum(len(c) + _CHUNK.size + _CRC.size
                                                             for c in self.chunks[:n])
        return size + (len(kept) + _CHUNK.size + _CRC.size if kept is not None else 0)


def pack_chunk(index: int, payload: bytes) -> bytes:
    """Length, payload, and a CRC-32 over the iteration index and payload (catches reordering).
    The filter chunk marks its length and takes ``FILTER_MARK | iterations`` for the index, so
    its CRC ties it to the iterations before it."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack(">I", index)))
    return _CHUNK.pack(len(payload) | (index & FILTER_MARK)) + payload + _CRC.pack(crc)


def parse(data: bytes, *, allow_cut: bool = False) -> Container:
    """Validate and split a whole .rnnc file. Raises FormatError with one clear message.

    With ``allow_cut``, data that ends inside a chunk is not an error: the container holds the
    complete chunks before the cut, and ``cut`` says where it is. Whatever is present must still
    be valid (a damaged length field that points past the end cannot be told from a cut).
    """
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not an .rnnc file (bad magic bytes)")
    if len(data) < _FIXED.size:
        raise FormatError("file truncated inside the header")
    _, version, flags, width, height, coder, name_len = _FIXED.unpack_from(data)
    if version not in VERSIONS:
        raise FormatError(f"unsupported .rnnc version {version} (this reader knows "
                          f"{' and '.join(map(str, VERSIONS))})")
    end = _FIXED.size + name_len + 16 + (_TILE.size if version > 1 else 0)
    if len(data) < end + _CRC.size:
        raise FormatError("file truncated inside the header")
    if zlib.crc32(data[:end]) != _CRC.unpack_from(data, end)[0]:
        raise FormatError("header checksum mismatch: the file is corrupt")
    if flags & ~FLAG_GRAY:
        raise FormatError(f"unknown header flags {flags:#x}")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise FormatError(f"implausible image size {width}×{height} in header")
    try:
        model = data[_FIXED.size:_FIXED.size + name_len].decode()
    except UnicodeDecodeError:
        raise FormatError("model name in header is not UTF-8") from None
    tile = _TILE.unpack_from(data, end - _TILE.size)[0] if version > 1 else 0
    untiled_ok = version >= 3 and tile == 0  # versions 3 and 4 write 0 for an untiled image
    if version > 1 and not untiled_ok and not (MIN_TILE <= tile <= MAX_TILE
                                               and tile % BLOCK == 0):
        raise FormatError(f"bad tile side {tile} in header (a multiple of {BLOCK} from "
                          f"{MIN_TILE} to {MAX_TILE})")
    digest_end = _FIXED.size + name_len + 16
    header = Header(width, height, bool(flags & FLAG_GRAY), coder, model,
                    data[digest_end - 16:digest_end], tile, version == ADAPTIVE_VERSION)
    pos = end + _CRC.size
    chunks: list[bytes] = []
    container = Container(header, pos, chunks)
    while pos < len(data):
        i = len(chunks)
        if len(data) - pos < _CHUNK.size:
            return _cut(container, f"file truncated inside iteration {i + 1}", allow_cut)
        (n,) = _CHUNK.unpack_from(data, pos)
        if version >= 3 and n & FILTER_MARK:
            return _filter_chunk(data, pos, container, allow_cut)
        if i >= MAX_ITERATIONS:
            raise FormatError(f"more than {MAX_ITERATIONS} iterations in file")
        if n > len(data) - pos - _CHUNK.size - _CRC.size:
            return _cut(container, f"file truncated inside iteration {i + 1}", allow_cut)
        payload = data[pos + _CHUNK.size:pos + _CHUNK.size + n]
        if pack_chunk(i, payload) != data[pos:pos + _CHUNK.size + n + _CRC.size]:
            raise FormatError(f"checksum mismatch in iteration {i + 1}: the file is corrupt")
        chunks.append(payload)
        pos += _CHUNK.size + n + _CRC.size
    return container


def _cut(container: Container, message: str, allow_cut: bool) -> Container:
    """The complete chunks of data that ends inside a chunk, or FormatError(message) unless
    ``allow_cut``."""
    if not allow_cut:
        raise FormatError(message)
    return replace(container, cut=message)


def _filter_chunk(data: bytes, pos: int, container: Container, allow_cut: bool) -> Container:
    """The container with the filter chunk at ``pos``, which must follow an iteration and end
    the file (a cut one: the container without it, when ``allow_cut``)."""
    n = _CHUNK.unpack_from(data, pos)[0] & ~FILTER_MARK
    if not container.chunks:
        raise FormatError("filter chunk before any iteration")
    if n > len(data) - pos - _CHUNK.size - _CRC.size:
        return _cut(container, "file truncated inside the filter chunk", allow_cut)
    end = pos + _CHUNK.size + n + _CRC.size
    payload = data[pos + _CHUNK.size:pos + _CHUNK.size + n]
    if pack_chunk(FILTER_MARK | len(container.chunks), payload) != data[pos:end]:
        raise FormatError("checksum mismatch in the filter chunk: the file is corrupt")
    if end != len(data):
        raise FormatError("data after the filter chunk")
    return Container(container.header, container.header_size, container.chunks, payload)


def pack_adaptive(block_map: bytes, codes: bytes) -> bytes:
    """A version-4 iteration payload: the map's length, the map, then the blocks' codes."""
    return _MAP.pack(len(block_map)) + block_map + codes


def split_adaptive(payload: bytes, iteration: int) -> tuple[bytes, bytes]:
    """The (map, codes) parts of a version-4 iteration payload (``iteration`` counts from 1,
    for the message of the FormatError a map length that overruns the payload raises)."""
    if len(payload) < _MAP.size:
        raise FormatError(f"iteration {iteration} is too short to hold its block map")
    (n,) = _MAP.unpack_from(payload)
    if n > len(payload) - _MAP.size:
        raise FormatError(f"iteration {iteration}'s block map ({n} bytes) overruns its chunk "
                          f"({len(payload)} bytes)")
    return payload[_MAP.size:_MAP.size + n], payload[_MAP.size + n:]


def assemble(header: Header, chunks: list[bytes], filter: bytes | None = None) -> bytes:
    """A whole file: version 1 or 2 without a filter, 3 with one (after the last chunk);
    4 for an adaptive header either way."""
    body = header.pack(filter is not None) + b"".join(pack_chunk(i, c)
                                                       for i, c in enumerate(chunks))
    return body if filter is None else body + pack_chunk(FILTER_MARK | len(chunks), filter)
