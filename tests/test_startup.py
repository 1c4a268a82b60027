"""Fast start: the commands that need no networks (``--help``, ``info``, ``truncate``,
``models``) import neither torch nor numpy (numpy only to read an adaptive file's block maps),
and the torch-free names they use agree with the modules they stand for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import cli_env

import rnncodec
from rnncodec import codec, files
from rnncodec.cells import CELLS
from rnncodec.entropy import CODER_NAMES, NEURAL_PREFIX, SINGLE
from rnncodec.entropy.best import BestCoder
from rnncodec.entropy.context import ContextCoder
from rnncodec.entropy.neural import PREFIX, NeuralCoder
from rnncodec.entropy.raw import RawCoder
from rnncodec.registry import CELL_NAMES

# Runs the command in-process, then reports which heavy modules it imported
PROBE = """
import sys
from rnncodec.cli import main
try:
    main(sys.argv[1:], prog_name="rnncodec")
except SystemExit as e:
    code = e.code
heavy = [m for m in ("torch", "numpy", "PIL", "rnncodec.codec") if m in sys.modules]
print("HEAVY:" + ",".join(heavy), "EXIT:" + str(code), file=sys.stderr)
"""


def _probe(args: list[str], cwd: Path) -> tuple[str, str, int]:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True,
                       text=True, timeout=60, env=cli_env(), check=False)
    last = r.stderr.strip().splitlines()[-1]
    heavy, code = last.split()
    return heavy.removeprefix("HEAVY:"), r.stdout, int(code.removeprefix("EXIT:") or 0)


@pytest.fixture(scope="module")
def small_file(rnnc: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("startup") / "a.rnnc"
    path.write_bytes(rnnc)
    return path


@pytest.fixture(scope="module")
def adaptive_file(rgb: np.ndarray, tiny_model: str, small_file: Path) -> Path:
    path = small_file.parent / "adaptive.rnnc"
    path.write_bytes(codec.compress(rgb, iterations=3, adaptive=True, model=tiny_model))
    return path


@pytest.mark.parametrize("args", [["info", "{file}"], ["info", "--json", "{file}"],
                                  ["truncate", "{file}", "-n", "2", "-o", "cut-a.rnnc"]])
def test_adaptive_files_are_read_without_torch(args: list[str], adaptive_file: Path) -> None:
    """Their block maps are range coded (numpy and constriction); the networks stay unloaded."""
    heavy, out, code = _probe([a.format(file=adaptive_file) for a in args], adaptive_file.parent)
    assert code == 0
    assert heavy == "numpy", f"{' '.join(args)} imported {heavy}"


@pytest.mark.parametrize("args", [["--help"], ["compress", "--help"], ["models"],
                                  ["info", "{file}"], ["info", "--json", "{file}"],
                                  ["truncate", "{file}", "-n", "2", "-o", "cut.rnnc"]])
def test_light_commands_do_not_import_torch(args: list[str], small_file: Path) -> None:
    heavy, out, code = _probe([a.format(file=small_file) for a in args], small_file.parent)
    assert code == 0
    assert out or (small_file.parent / "cut.rnnc").stat().st_size < small_file.stat().st_size
    assert heavy == "", f"{' '.join(args)} imported {heavy}"


def test_coding_commands_still_load_the_codec(small_file: Path) -> None:
    heavy, _, code = _probe(["decompress", str(small_file), "-o", "b.png", "--model", "x"],
                            small_file.parent)
    assert code != 0 and "rnncodec.codec" in heavy  # refused for the model, after loading it


def test_importing_the_package_is_light_and_its_api_complete() -> None:
    probe = "import sys, rnncodec; print('torch' in sys.modules, 'numpy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=60, env=cli_env(), check=True)
    assert r.stdout.split() == ["False", "False"]
    for name in rnncodec.__all__:
        assert getattr(rnncodec, name) is not None
        assert name in dir(rnncodec)
    assert rnncodec.compress is codec.compress and rnncodec.info is files.info is codec.info
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rnncodec.nope  # noqa: B018


def test_torch_free_names_agree_with_the_modules_they_stand_for() -> None:
    assert {c.name: c.coder_id
            for c in (RawCoder, ContextCoder, NeuralCoder, BestCoder)} == CODER_NAMES
    assert (RawCoder.name, ContextCoder.name, NeuralCoder.name) == SINGLE
    assert NEURAL_PREFIX == PREFIX
    assert tuple(CELLS) == CELL_NAMES
