"""Interrupted runs: a killed or interrupted ``rnncodec`` never leaves a half-written output.

The CLI writes to a temporary ``.NAME.XXXX.part`` file beside the output and renames it into
place only once complete. Ctrl-C (SIGINT) at any point removes the temp file and exits with
130 and one ``rnncodec: error: interrupted`` line. SIGKILL cannot be caught: killed while
encoding, nothing has been written yet; killed in the short window after the temp file was
written and before the rename, that ``.part`` file stays behind (the output itself never
appears half-written) — ``test_sigkill_while_writing_leaves_only_a_part_file`` pins that down.

Runs are real subprocesses. "While encoding" is detected from the progress bar, which the CLI
draws only on a terminal: stderr is a pseudo-terminal here. "While writing" is made exact by
a small wrapper that sends the signal from inside ``os.replace``, i.e. after the temp file was
written and before it is renamed.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import (
    ERROR_PREFIX,
    Seeds,
    cli_command,
    cli_env,
    gradient,
    hostile_seeds,
    listing,
)
from PIL import Image

from rnncodec.format import parse

__all__ = ["hostile_seeds"]  # a fixture, imported for pytest

ITERATIONS = 64


@pytest.fixture()
def big_png(tmp_path: Path) -> Path:
    """Large enough that 64 iterations of the tiny model take a few seconds."""
    path = tmp_path / "in.png"
    Image.fromarray(gradient(384, 512, seed=21)).save(path)
    return path


def _drain(fd: int, until: re.Pattern[bytes] | None, proc: subprocess.Popen,
           timeout: float) -> bytes:
    """Read a pty until ``until`` matches (or the process ends and its output is read)."""
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            out += chunk
            if until is not None and until.search(out):
                break
        elif proc.poll() is not None and until is not None:
            break
    return out


def _signal_while_encoding(sig: signal.Signals, png: Path, model: str) -> tuple[int, str]:
    out = png.with_suffix(".rnnc")
    master, slave = pty.openpty()
    # a window size, or tqdm draws a zero-column (empty) bar
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(cli_command() + ["compress", png.name, "-o", out.name, "-n",
                                             str(ITERATIONS), "--model", model],
                            cwd=png.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=cli_env())
    os.close(slave)
    try:
        seen = _drain(master, re.compile(rb"encoding:.*?\b[1-9]\d*/%d\b" % ITERATIONS), proc,
                      timeout=120)
        assert proc.poll() is None, "finished before it could be interrupted: " + repr(seen)
        assert re.search(rb"\b[1-9]\d*/%d" % ITERATIONS, seen), seen
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        seen += _drain(master, None, proc, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        proc.stdout.close()
    return code, seen.decode(errors="replace")


def _error_lines(stderr: str) -> list[str]:
    lines = re.split(r"[\r\n]+", stderr)
    return [line.strip() for line in lines if ERROR_PREFIX in line]


@pytest.mark.parametrize("sig", [
    signal.SIGINT,
    pytest.param(signal.SIGTERM, marks=pytest.mark.slow),  # handled like Ctrl-C
])
def test_interrupt_while_encoding(sig: signal.Signals, big_png: Path,
                                  hostile_seeds: Seeds) -> None:
    code, stderr = _signal_while_encoding(sig, big_png, hostile_seeds.model)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert _error_lines(stderr) == [f"{ERROR_PREFIX}interrupted"], stderr
    assert listing(big_png.parent) == {"in.png"}


def test_kill_while_encoding_leaves_nothing(big_png: Path, hostile_seeds: Seeds) -> None:
    code, stderr = _signal_while_encoding(signal.SIGKILL, big_png, hostile_seeds.model)
    assert code == -signal.SIGKILL, stderr
    assert listing(big_png.parent) == {"in.png"}  # the temp file is made only once encoded


# --- exactly between writing the temp file and renaming it ----------------------------------

WRAPPER = """
import os, signal, sys, time
import rnncodec.cli
real, sig = os.replace, getattr(signal, sys.argv[1])
def replace(src, dst):
    assert os.path.basename(src).endswith(".part") and os.path.getsize(src) > 0
    os.kill(os.getpid(), sig)
    time.sleep(5)  # the signal is handled before this returns
    real(src, dst)
os.replace = replace
sys.argv = ["rnncodec", *sys.argv[2:]]
rnncodec.cli.main(prog_name="rnncodec")
"""


def _run_wrapped(sig: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WRAPPER, sig, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=cli_env(),
                          stdin=subprocess.DEVNULL, check=False)


@pytest.fixture()
def small_inputs(tmp_path: Path, hostile_seeds: Seeds) -> Path:
    Image.fromarray(hostile_seeds.image).save(tmp_path / "in.png")
    (tmp_path / "in.rnnc").write_bytes(hostile_seeds.context)
    return tmp_path


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_sigint_while_writing_removes_the_temp_file(command: str, small_inputs: Path,
                                                    hostile_seeds: Seeds) -> None:
    args = {"compress": ["compress", "in.png", "-o", "out.rnnc", "-n", "2"],
            "decompress": ["decompress", "in.rnnc", "-o", "out.png"]}[command]
    before = listing(small_inputs)
    r = _run_wrapped("SIGINT", [*args, "--model", hostile_seeds.model, "-q"], small_inputs)
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"{ERROR_PREFIX}interrupted"], r.stderr
    assert listing(small_inputs) == before


@pytest.mark.parametrize("command", ["compress", pytest.param("decompress",
                                                              marks=pytest.mark.slow)])
def test_sigkill_while_writing_leaves_only_a_part_file(command: str, small_inputs: Path,
                                                       hostile_seeds: Seeds) -> None:
    """SIGKILL after the temp file is complete but before its rename: the output does not
    exist; one hidden ``.out.*.part`` file is left (nothing can remove it: the process is
    gone). A later run does not trip over it, and does not clean it up either."""
    args = {"compress": ["compress", "in.png", "-o", "out.rnnc", "-n", "2"],
            "decompress": ["decompress", "in.rnnc", "-o", "out.png"]}[command]
    out = args[args.index("-o") + 1]
    before = listing(small_inputs)
    r = _run_wrapped("SIGKILL", [*args, "--model", hostile_seeds.model, "-q"], small_inputs)
    assert r.returncode == -signal.SIGKILL
    left = listing(small_inputs) - before
    assert out not in left
    assert len(left) == 1 and re.fullmatch(rf"\.{re.escape(out)}\.\w+\.part", left.pop()), left
    part = next(small_inputs.glob(f".{out}.*.part"))
    if command == "compress":  # complete, but not where anyone would look for it
        assert parse(part.read_bytes()).header.width == hostile_seeds.image.shape[1]
    # the next run succeeds beside the leftover
    r = subprocess.run(cli_command() + [*args, "--model", hostile_seeds.model, "-q"],
                       cwd=small_inputs, capture_output=True, text=True, timeout=120,
                       env=cli_env(), check=False)
    assert r.returncode == 0, r.stderr
    assert (small_inputs / out).is_file() and part.exists()


def test_big_png_is_big_enough(big_png: Path) -> None:
    """The encoding tests need 64 iterations to outlast the first progress update."""
    assert np.asarray(Image.open(big_png)).shape == (384, 512, 3)
