"""Shared by the hostile-input suites (fuzzing, crafted files, determinism, inputs, interrupts).

Everything here is built from generated images and tiny networks (width 0.03) written into a
session temp folder, so nothing depends on the shipped model or on ../shared. The fixtures are
imported by name into the test modules that use them (pytest picks them up from there).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from rnncodec import codec
from rnncodec.entropy import CODER_NAMES
from rnncodec.errors import RnncError
from rnncodec.format import MAGIC, assemble, pack_chunk, parse
from rnncodec.frameworks import ModelConfig, RNNCompressor
from rnncodec.zoo import save_weights

ERROR_PREFIX = "rnncodec: error: "
FUZZ_MAX_PIXELS = 1 << 16  # decoder limit under fuzzing: bounds the work per example
TIME_LIMIT_S = float(os.environ.get("RNNCODEC_FUZZ_TIME_LIMIT", "20"))  # "never a hang"


# --- images and models ----------------------------------------------------------------------


def gradient(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Smooth gradients plus noise as uint8 H×W×3 (or H×W for channels=0)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    a = np.stack([x, y, 0.5 * (x + y)], axis=-1) * 255 + rng.normal(0, 10, (height, width, 3))
    a = np.clip(a, 0, 255).round().astype(np.uint8)
    return a[..., 0] if channels == 0 else a


def neural_tables(seed: int = 0) -> dict[str, torch.Tensor]:
    """Quantized tables of an untrained neural context model (empty if this version has none)."""
    if "neural" not in CODER_NAMES:
        return {}
    from rnncodec.entropy.neural import ContextNet, quantize

    torch.manual_seed(seed)
    return quantize(ContextNet())


def write_tiny(path: Path, name: str = "tiny", seed: int = 0, cell: str = "residual-gru",
               framework: str = "residual-scaling", width: float = 0.03) -> str:
    """A tiny model (with the entropy tables every registered coder needs) as safetensors."""
    torch.manual_seed(seed)
    net = RNNCompressor(ModelConfig(cell, framework, width))
    save_weights(net, path, name=name, tables=neural_tables(seed))
    return str(path)


@dataclass(frozen=True)
class Seeds:
    """Valid files to mutate: one per registered coder (RGB), plus a gray one."""

    model: str  # path of the tiny model they were made with
    other_model: str  # a second tiny model with other weights
    files: dict[str, bytes]  # "raw", "context", ..., "context-gray" and "context-tiled"
    image: np.ndarray

    @property
    def raw(self) -> bytes:
        return self.files["raw"]

    @property
    def context(self) -> bytes:
        return self.files["context"]


@pytest.fixture(scope="session")
def hostile_seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    folder = tmp_path_factory.mktemp("hostile-models")
    model = write_tiny(folder / "tiny.safetensors", "tiny", seed=0)
    other = write_tiny(folder / "other.safetensors", "tiny-other", seed=1, cell="gru",
                       framework="additive")
    image = gradient(20, 36, seed=5)  # 2×3 blocks of 16×16
    uniform = {"model": model, "adaptive": False}  # version-4 files have their own seeds
    files = {name: codec.compress(image, iterations=3, coder=name, **uniform)
             for name in CODER_NAMES}
    files["context-tiled"] = codec.compress(gradient(20, 80, seed=7), iterations=2,
                                            coder="context", tile=64, **uniform)  # version 2
    files["context-gray"] = codec.compress(gradient(17, 16, seed=6, channels=0), iterations=2,
                                           coder="context", **uniform)
    return Seeds(model, other, files, image)


# --- byte surgery ---------------------------------------------------------------------------


def header_end(data: bytes) -> int:
    """Offset of the header CRC (the header's body length); version 2 adds the tile side."""
    return 16 + data[15] + 16 + (2 if data[4] == 2 else 0)


def header_size(data: bytes) -> int:
    return header_end(data) + 4


def recrc_header(data: bytes | bytearray) -> bytes:
    """Recompute the header CRC after editing header bytes, so later checks are reached."""
    end = header_end(data)
    return bytes(data[:end]) + struct.pack(">I", zlib.crc32(data[:end])) + bytes(data[end + 4:])


def patch_header(data: bytes, **fields: int) -> bytes:
    """Overwrite fixed header fields (version, flags, width, height, coder) and fix the CRC."""
    b = bytearray(data)
    spots = {"version": (4, ">B"), "flags": (5, ">B"), "width": (6, ">I"), "height": (10, ">I"),
             "coder": (14, ">B")}
    for key, value in fields.items():
        offset, fmt = spots[key]
        struct.pack_into(fmt, b, offset, value)
    return recrc_header(b)


def raw_header(*, version: int = 1, flags: int = 0, width: int = 20, height: int = 20,
               coder: int = 0, name: bytes = b"tiny", digest: bytes = bytes(16)) -> bytes:
    """Header bytes with any field values (valid CRC), including ones Header refuses."""
    body = struct.pack(">4sBBIIBB", MAGIC, version, flags, width, height, coder,
                       len(name)) + name + digest
    return body + struct.pack(">I", zlib.crc32(body))


def chunk_offsets(data: bytes) -> list[int]:
    """Start offsets of the chunks of a valid file."""
    pos, out = header_size(data), []
    while pos < len(data):
        out.append(pos)
        pos += 8 + struct.unpack_from(">I", data, pos)[0]
    return out


def with_chunks(data: bytes, payloads: list[bytes]) -> bytes:
    """The file's header followed by these payloads as chunks with valid CRCs."""
    return data[:header_size(data)] + b"".join(pack_chunk(i, p) for i, p in enumerate(payloads))


def with_header(data: bytes, **changes: object) -> bytes:
    """Same chunks under a header with some dataclass fields replaced (valid CRC)."""
    from dataclasses import replace

    c = parse(data)
    return assemble(replace(c.header, **changes), c.chunks)


def declaring(data: bytes, width: int, height: int, tile: int = 0, iterations: int = 1) -> bytes:
    """A valid file under ``data``'s model declaring ``width``×``height`` pixels (raw coder, all
    codes zero, ``tile`` in the header): chunks of exactly the size that image needs."""
    from dataclasses import replace

    header = replace(parse(data).header, width=width, height=height, tile=tile,
                     coder=CODER_NAMES["raw"])
    size = -(-32 * -(-height // 16) * -(-width // 16) // 8)
    return assemble(header, [bytes(size)] * iterations)


def flip_bit(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(b)


def png_bytes(width: int, height: int, idat: bytes = b"", mode_byte: int = 2) -> bytes:
    """A PNG whose IHDR declares width×height (8-bit, colour type mode_byte) over any IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- the property every hostile input must satisfy ------------------------------------------


def check_message(e: BaseException) -> str:
    message = str(e)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    return message


def decode_or_refuse(data: bytes, model: str | None, max_pixels: int = FUZZ_MAX_PIXELS,
                     details: bool = False) -> str:
    """Decode ``data``: it yields an image of the declared size and mode, or an RnncError.

    Any other exception propagates (and fails the caller). Also runs ``info`` and ``truncate``,
    which must obey the same rule, and checks that the whole takes bounded time. Returns the
    outcome ("ok" or the error's class name, with the gist of its message if ``details``).
    """
    start = time.perf_counter()
    try:
        image = codec.decompress(data, model=model, max_pixels=max_pixels)
    except RnncError as e:
        check_message(e)
        outcome = type(e).__name__
        detail = f"{outcome}: {kind_of(e)}"
    else:
        header = parse(data).header
        assert image.size == (header.width, header.height)
        assert image.mode == ("L" if header.gray else "RGB")
        assert header.width * header.height <= max_pixels
        outcome = detail = "ok"
    try:
        i = codec.info(data)
        d = i.as_dict()
        assert d["iterations"] == len(i.bpp_per_iteration) and d["bytes"] == len(data)
        shorter = codec.truncate(data, iterations=1)
        assert len(shorter) <= len(data)
    except RnncError as e:
        check_message(e)
        assert outcome != "ok", "decoded a file that info or truncate refuse"
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.1f} s"
    return detail if details else outcome


def kind_of(e: BaseException) -> str:
    """The gist of an error message, without the numbers and names in it (for statistics)."""
    words = re.sub(r"'[^']*'|\S*\d\S*|\(.*\)", "", str(e).split(":")[0]).split()
    return " ".join(words[:6])


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the command line -----------------------------------------------------------------------


def cli_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m rnncodec.cli``."""
    script = Path(sys.executable).with_name("rnncodec")
    if script.exists():
        return [str(script)]
    found = shutil.which("rnncodec")
    return [found] if found else [sys.executable, "-m", "rnncodec.cli"]


def cli_env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    # PASSIVE: OpenMP threads sleep instead of spinning when they wait; with the cores busy
    # (CI, a training run) spinning threads make 2-thread torch 50-100x slower
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0",
               OMP_WAIT_POLICY="PASSIVE")
    env.pop("PYTHONWARNINGS", None)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command() + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), stdin=subprocess.DEVNULL, check=False)


def invoke(args: list[str]) -> Result:
    """The CLI in-process (click's runner: stderr kept apart from stdout)."""
    from rnncodec.cli import main

    return CliRunner().invoke(main, args)


def listing(folder: Path) -> set[str]:
    """Every entry under ``folder``, hidden ones (temp files) included."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_one_error_line(stderr: str, stdout: str = "") -> str:
    assert "Traceback" not in stderr + stdout, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert len(lines[0]) > len(ERROR_PREFIX)
    return lines[0][len(ERROR_PREFIX):]

