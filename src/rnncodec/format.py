"""The .rnnc container: a header, then one checksummed chunk per iteration (see docs/format.md).

Chunks are self-delimiting and carry no count in the header, so cutting a file after any chunk
leaves a valid, shorter file: the bitstream is embedded. Every length and size is checked
against the data actually present before anything is allocated.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import FormatError
from .tiling import BLOCK, MAX_TILE, MIN_TILE

MAGIC = b"RNNC"
VERSION = 2  # the newest version this reader knows; untiled images are still written as 1
VERSIONS = (1, 2)  # version 2 adds the tile side after the weights hash
MAX_SIDE = 1 << 20
MAX_PIXELS = 1 << 28  # what a header may declare at all; the codec applies its own lower limit
MAX_ITERATIONS = 64
FLAG_GRAY = 1

_FIXED = struct.Struct(">4sBBIIBB")  # magic, version, flags, width, height, coder, name length
_TILE = struct.Struct(">H")  # version 2: tile side in pixels
_CHUNK = struct.Struct(">I")  # payload length
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    gray: bool
    coder: int
    model: str
    digest: bytes  # 16 bytes: the model's weights hash
    tile: int = 0  # tile side in pixels (see tiling.py); 0: the image was coded whole

    def pack(self) -> bytes:
        """Version 1 for an untiled image (readable by version-1 readers), else 2."""
        name = self.model.encode()
        body = _FIXED.pack(MAGIC, 2 if self.tile else 1, FLAG_GRAY if self.gray else 0,
                           self.width, self.height, self.coder, len(name)) + name + self.digest
        if self.tile:
            body += _TILE.pack(self.tile)
        return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class Container:
    header: Header
    header_size: int
    chunks: list[bytes]  # one payload per iteration

    def size_after(self, iterations: int) -> int:
        """Bytes of a file holding the first ``iterations`` chunks."""
        return self.header_size + sum(len(c) + _CHUNK.size + _CRC.size
                                      for c in self.chunks[:iterations])


def pack_chunk(index: int, payload: bytes) -> bytes:
    """Length, payload, and a CRC-32 over the iteration index and payload (catches reordering)."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack(">I", index)))
    return _CHUNK.pack(len(payload)) + payload + _CRC.pack(crc)


def parse(data: bytes) -> Container:
    """Validate and split a whole .rnnc file. Raises FormatError with one clear message."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not an .rnnc file (bad magic bytes)")
    if len(data) < _FIXED.size:
        raise FormatError("file truncated inside the header")
    _, version, flags, width, height, coder, name_len = _FIXED.unpack_from(data)
    if version not in VERSIONS:
        raise FormatError(f"unsupported .rnnc version {version} (this reader knows "
                          f"{' and '.join(map(str, VERSIONS))})")
    end = _FIXED.size + name_len + 16 + (_TILE.size if version == 2 else 0)
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
    tile = _TILE.unpack_from(data, end - _TILE.size)[0] if version == 2 else 0
    if version == 2 and not (MIN_TILE <= tile <= MAX_TILE and tile % BLOCK == 0):
        raise FormatError(f"bad tile side {tile} in header (a multiple of {BLOCK} from "
                          f"{MIN_TILE} to {MAX_TILE})")
    digest_end = _FIXED.size + name_len + 16
    header = Header(width, height, bool(flags & FLAG_GRAY), coder, model,
                    data[digest_end - 16:digest_end], tile)
    pos = end + _CRC.size
    chunks: list[bytes] = []
    while pos < len(data):
        i = len(chunks)
        if i >= MAX_ITERATIONS:
            raise FormatError(f"more than {MAX_ITERATIONS} iterations in file")
        if len(data) - pos < _CHUNK.size:
            raise FormatError(f"file truncated inside iteration {i + 1}")
        (n,) = _CHUNK.unpack_from(data, pos)
        if n > len(data) - pos - _CHUNK.size - _CRC.size:
            raise FormatError(f"file truncated inside iteration {i + 1}")
        payload = data[pos + _CHUNK.size:pos + _CHUNK.size + n]
        if pack_chunk(i, payload) != data[pos:pos + _CHUNK.size + n + _CRC.size]:
            raise FormatError(f"checksum mismatch in iteration {i + 1}: the file is corrupt")
        chunks.append(payload)
        pos += _CHUNK.size + n + _CRC.size
    return Container(header, end + _CRC.size, chunks)


def assemble(header: Header, chunks: list[bytes]) -> bytes:
    return header.pack() + b"".join(pack_chunk(i, c) for i, c in enumerate(chunks))
