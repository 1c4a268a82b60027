"""Optional parts: ``pip install rnncodec`` gets the codec, extras add the rest, and a command
whose extra is missing says which pip command installs it (exit status 69, no traceback)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hostile_helpers import cli_env
from PIL import Image

from rnncodec import extras
from rnncodec.cli import main
from rnncodec.errors import MissingExtraError, RnncError

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def _one_error_line(args: list[str]) -> str:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 69, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_serve_without_the_web_extra_names_the_pip_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed: imports fail
    line = _one_error_line(["serve", "--port", "0"])
    assert line == ("rnncodec: error: rnncodec serve needs fastapi, which is not installed: "
                    "pip install 'rnncodec[web]'")


def test_evaluate_without_the_eval_extra_names_the_pip_command(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for module in ("bjontegaard", "psnr_hvsm"):
        monkeypatch.setitem(sys.modules, module, None)
    line = _one_error_line(["evaluate", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "bjontegaard, psnr-hvsm, which are not installed" in line
    assert line.endswith("pip install 'rnncodec[eval]'")
    assert not (tmp_path / "out").exists()


def test_either_module_of_python_multipart_will_do(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extras.missing("web") == []
    monkeypatch.setattr(extras, "_found", lambda module: module != "python_multipart")
    assert extras.missing("web") == []  # the older name, multipart, is found
    monkeypatch.setattr(extras, "_found", lambda module: "multipart" not in module)
    assert extras.missing("web") == ["python-multipart"]


def test_the_error_is_an_rnnc_error_and_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingExtraError) as caught:
        extras.require("train", "logging to TensorBoard")
    assert isinstance(caught.value, RnncError) and isinstance(caught.value, ImportError)
    assert str(caught.value).endswith("pip install 'rnncodec[train]'")


def test_pyproject_declares_each_extra_as_extras_lists_it() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
                for r in requirements}

    core = names(project["dependencies"])
    for extra, distributions in extras.EXTRAS.items():
        assert set(distributions) <= names(optional[extra]), extra
        assert not set(distributions) & core, f"{extra}'s packages are in the core install"
    assert "rnncodec[web,eval,train]" in optional["test"]


# Hides the extras' modules (and the test tools), as on a plain ``pip install rnncodec``
CORE_ONLY = """
import sys

for name in sys.argv[1].split(","):
    sys.modules[name] = None  # imports of it and its submodules fail, find_spec finds none
import numpy as np
import rnncodec
rgb = np.load(sys.argv[2])
data = rnncodec.compress(rgb, iterations=2, model=sys.argv[3])
image = rnncodec.decompress(data, model=sys.argv[3])
assert image.size == (rgb.shape[1], rgb.shape[0])
rnncodec.compress(rgb, model=sys.argv[3], psnr=12, postfilter=True)
print("OK", rnncodec.info(data).iterations)
"""


def test_the_codec_runs_without_any_extra(tiny_model: str, tmp_path: Path,
                                          make_image) -> None:
    """Compressing (quality targets and the filter too) and decompressing import nothing that
    an extra installs."""
    blocked = {m for d in extras.EXTRAS.values() for ms in d.values() for m in ms}
    blocked |= {"pytest", "hypothesis", "httpx", "playwright"}
    image = tmp_path / "image.npy"
    np.save(image, make_image(168, 176, seed=1))  # large enough for the filter
    r = subprocess.run([sys.executable, "-c", CORE_ONLY, ",".join(sorted(blocked)), str(image),
                        tiny_model], capture_output=True, text=True, timeout=300,
                       env=cli_env(), check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["OK", "2"]


def test_a_missing_extra_does_not_stop_the_core_commands(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: str) -> None:
    for module in ("fastapi", "uvicorn", "bjontegaard", "matplotlib", "tensorboard"):
        monkeypatch.setitem(sys.modules, module, None)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    r = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-n", "1", "--model",
                                  tiny_model, "-q"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert (tmp_path / "a.rnnc").exists()
