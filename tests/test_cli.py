"""The command line, end to end: CliRunner for the details, one real subprocess run."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import gradient_image
from PIL import Image

from rnncodec import codec
from rnncodec.cli import main
from rnncodec.entropy import CODER_NAMES
from rnncodec.format import Header, assemble, parse
from rnncodec.zoo import DEFAULT_MODEL

ERROR_PREFIX = "rnncodec: error: "


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: object) -> Result:
    r = cli(*args)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "Traceback" not in r.output
    return r


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (hidden ones too) with its content."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def assert_one_error_line(r: Result, code: int, match: str | None = None) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert "Traceback" not in r.output
    assert r.stdout == ""
    if match:
        assert match in lines[0], lines[0]
    return lines[0]


# --- the happy path -------------------------------------------------------------------------


@pytest.fixture()
def png(tmp_path: Path, rgb: np.ndarray) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    return path


def test_compress_info_truncate_decompress(png: Path, rgb: np.ndarray, tiny_model: str,
                                           tmp_path: Path) -> None:
    r = ok("compress", png, "-n", 4, "--model", tiny_model)
    out = png.with_suffix(".rnnc")  # default output name
    data = out.read_bytes()
    assert data == codec.compress(rgb, iterations=4, model=tiny_model)
    assert r.stderr.startswith(f"{out}: 4 iterations, {len(data)} bytes")

    r = ok("info", out)
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert lines["width"] == "56" and lines["height"] == "40" and lines["mode"] == "RGB"
    assert lines["model"] == "tiny" and lines["iterations"] == "4"
    assert lines["bytes"] == str(len(data))
    assert len(lines["bpp"].split()) == 4
    d = json.loads(ok("info", out, "--json").stdout)
    assert d == json.loads(json.dumps(codec.info(data).as_dict()))
    runs = lines["coder"].removeprefix("best (").removesuffix(")").split(", ")
    assert sum(int(r.split("×")[1]) for r in runs) == 4  # runs of the coders, in order
    assert [r.split("×")[0] for r in runs] == [n for n, _ in
                                                itertools.groupby(d["coder_per_iteration"])]

    short = tmp_path / "short.rnnc"
    ok("truncate", out, "-n", 2, "-o", short)
    assert short.read_bytes() == codec.truncate(data, iterations=2)
    by_rate = tmp_path / "rate.rnnc"
    ok("truncate", out, "--bpp", 0.5, "-o", by_rate)
    assert by_rate.read_bytes() == codec.truncate(data, bpp=0.5)

    r = ok("decompress", short, "--model", tiny_model)
    decoded = short.with_suffix(".png")  # default output name
    assert r.stderr.startswith(f"{decoded}: 56×40 RGB, 2 iterations")
    img = Image.open(decoded)
    assert img.size == (56, 40) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img),
                          np.asarray(codec.decompress(data, iterations=2, model=tiny_model)))

    first = tmp_path / "first.png"
    ok("decompress", out, "-n", 1, "-o", first, "--model", tiny_model, "-q")
    assert np.array_equal(np.asarray(Image.open(first)),
                          np.asarray(codec.decompress(data, iterations=1, model=tiny_model)))
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_other_output_formats_and_gray(tmp_path: Path, tiny_model: str) -> None:
    g = tmp_path / "gray.png"
    Image.fromarray(gradient_image(20, 24, channels=0), "L").save(g)
    ok("compress", g, "-o", tmp_path / "g.rnnc", "-n", 2, "--model", tiny_model, "-q")
    for suffix, fmt in ((".bmp", "BMP"), (".tif", "TIFF"), (".jpg", "JPEG"), (".webp", "WEBP")):
        out = tmp_path / f"g{suffix}"
        ok("decompress", tmp_path / "g.rnnc", "-o", out, "--model", tiny_model, "-q")
        img = Image.open(out)
        assert img.format == fmt and img.size == (24, 20)
        assert img.mode == ("RGB" if fmt == "WEBP" else "L")  # WebP has no gray mode


def test_rate_options(png: Path, rgb: np.ndarray, tiny_model: str, tmp_path: Path) -> None:
    for opts in (["--bpp", "0.7"], ["--psnr", "1"], ["--ms-ssim", "0.999999"],
                 ["-n", "2", "--effort", "1"], ["-n", "3", "--coder", "raw"]):
        out = tmp_path / "r.rnnc"
        ok("compress", png, "-o", out, "--model", tiny_model, "-q", "--force", *opts)
        kw = {"bpp": 0.7} if opts[0] == "--bpp" else {"psnr": 1.0} if opts[0] == "--psnr" else \
            {"ms_ssim": 0.999999} if opts[0] == "--ms-ssim" else \
            {"iterations": 2, "effort": 1} if "--effort" in opts else \
            {"iterations": 3, "coder": "raw"}
        assert out.read_bytes() == codec.compress(rgb, model=tiny_model, **kw)
    assert codec.info(out).as_dict()["coder"] == "raw"


def test_force_replaces(png: Path, tiny_model: str) -> None:
    out = png.with_suffix(".rnnc")
    out.write_bytes(b"old")
    ok("compress", png, "-n", 1, "--model", tiny_model, "--force", "-q")
    assert codec.info(out).iterations == 1
    dec = png.parent / "d.png"
    dec.write_bytes(b"old")
    ok("decompress", out, "-o", dec, "--model", tiny_model, "-f", "-q")
    assert Image.open(dec).size == (56, 40)


def test_default_model(tmp_path: Path) -> None:
    src = tmp_path / "small.png"
    Image.fromarray(gradient_image(16, 24, seed=9)).save(src)
    ok("compress", src, "-n", 1, "-q")
    assert parse(src.with_suffix(".rnnc").read_bytes()).header.model == DEFAULT_MODEL
    ok("decompress", src.with_suffix(".rnnc"), "-o", tmp_path / "back.png", "-q")
    assert Image.open(tmp_path / "back.png").size == (24, 16)


def test_models_version_help() -> None:
    r = ok("models")
    line = next(x for x in r.stdout.splitlines() if DEFAULT_MODEL in x)
    assert line.startswith("*") and "weights missing" not in line
    assert "0.1.0" in ok("--version").stdout
    for cmd in ("compress", "decompress", "truncate", "info", "models", "train"):
        assert "Usage:" in ok(cmd, "--help").stdout


# --- bad inputs -----------------------------------------------------------------------------


@pytest.fixture()
def work(tmp_path: Path, rgb: np.ndarray, tiny_model: str, other_model: str) -> Path:
    """A folder holding good and bad inputs of every kind."""
    Image.fromarray(rgb).save(tmp_path / "in.png")
    good = codec.compress(rgb, iterations=4, model=tiny_model)
    (tmp_path / "good.rnnc").write_bytes(good)
    bad = bytearray(good)
    bad[len(good) // 2] ^= 0x40
    (tmp_path / "corrupt.rnnc").write_bytes(bytes(bad))
    (tmp_path / "cut.rnnc").write_bytes(good[:-5])
    (tmp_path / "empty.rnnc").write_bytes(b"")
    (tmp_path / "header.rnnc").write_bytes(good[: parse(good).header_size])
    (tmp_path / "other.rnnc").write_bytes(codec.compress(rgb, iterations=1, model=other_model))
    (tmp_path / "junk.png").write_bytes(b"this is not a PNG")
    from test_format import INVALID_RANGE_CODE

    h = parse(good).header
    garbage = Header(64, 64, False, CODER_NAMES["context"], h.model, h.digest)
    (tmp_path / "garbage.rnnc").write_bytes(assemble(garbage, [INVALID_RANGE_CODE]))
    (tmp_path / "folder").mkdir()
    (tmp_path / "taken.png").write_bytes(b"keep me")
    (tmp_path / "taken.rnnc").write_bytes(b"keep me too")
    return tmp_path


BAD = [
    # compress
    ("compress missing", ["compress", "nope.png", "--model", "{tiny}"], 66, "nope.png"),
    ("compress directory", ["compress", "folder", "--model", "{tiny}"], 66, "folder"),
    ("compress corrupt", ["compress", "junk.png", "--model", "{tiny}"], 65, "junk.png"),
    ("compress foreign", ["compress", "good.rnnc", "-o", "x.rnnc", "--model", "{tiny}"], 65,
     "good.rnnc"),
    ("compress exists", ["compress", "in.png", "-o", "taken.rnnc", "--model", "{tiny}"], 73,
     "--force"),
    ("compress out dir missing", ["compress", "in.png", "-o", "no/x.rnnc", "--model", "{tiny}"],
     73, "does not exist"),
    ("compress out is dir", ["compress", "in.png", "-o", "folder", "-f", "--model", "{tiny}"],
     73, "directory"),
    ("compress unknown model", ["compress", "in.png", "--model", "no-such-model"], 65,
     "no-such-model"),
    ("compress two targets", ["compress", "in.png", "--bpp", "1", "--psnr", "30", "--model",
                              "{tiny}"], 2, "only one"),
    # decompress
    ("decompress missing", ["decompress", "nope.rnnc", "--model", "{tiny}"], 66, "nope.rnnc"),
    ("decompress directory", ["decompress", "folder", "-o", "f.png"], 66, "folder"),
    ("decompress corrupt", ["decompress", "corrupt.rnnc", "--model", "{tiny}"], 65, "corrupt"),
    ("decompress truncated", ["decompress", "cut.rnnc", "--model", "{tiny}"], 65, "truncated"),
    ("decompress empty", ["decompress", "empty.rnnc", "--model", "{tiny}"], 65, "magic"),
    ("decompress header only", ["decompress", "header.rnnc", "--model", "{tiny}"], 65,
     "no iterations"),
    ("decompress garbage payload", ["decompress", "garbage.rnnc", "--model", "{tiny}"], 65,
     "corrupt"),
    ("decompress foreign", ["decompress", "in.png", "-o", "x.png", "--model", "{tiny}"], 65,
     "not an .rnnc file"),
    ("decompress other model", ["decompress", "other.rnnc", "--model", "{tiny}"], 65,
     "'tiny-other'"),
    ("decompress model not installed", ["decompress", "good.rnnc"], 65, "'tiny'"),
    ("decompress exists", ["decompress", "good.rnnc", "-o", "taken.png", "--model", "{tiny}"],
     73, "--force"),
    ("decompress out dir missing", ["decompress", "good.rnnc", "-o", "no/x.png", "--model",
                                    "{tiny}"], 73, "does not exist"),
    ("decompress unknown suffix", ["decompress", "good.rnnc", "-o", "x.xyz", "--model", "{tiny}"],
     73, "suffix"),
    ("decompress no suffix", ["decompress", "good.rnnc", "-o", "plain", "--model", "{tiny}"],
     73, "suffix"),
    # truncate
    ("truncate missing", ["truncate", "nope.rnnc", "-n", "1", "-o", "t.rnnc"], 66, "nope.rnnc"),
    ("truncate corrupt", ["truncate", "corrupt.rnnc", "-n", "1", "-o", "t.rnnc"], 65, "corrupt"),
    ("truncate truncated", ["truncate", "cut.rnnc", "-n", "1", "-o", "t.rnnc"], 65, "truncated"),
    ("truncate foreign", ["truncate", "in.png", "-n", "1", "-o", "t.rnnc"], 65, "magic"),
    ("truncate exists", ["truncate", "good.rnnc", "-n", "1", "-o", "taken.rnnc"], 73, "--force"),
    ("truncate out dir missing", ["truncate", "good.rnnc", "-n", "1", "-o", "no/t.rnnc"], 73,
     "does not exist"),
    ("truncate no amount", ["truncate", "good.rnnc", "-o", "t.rnnc"], 2, "exactly one"),
    ("truncate two amounts", ["truncate", "good.rnnc", "-n", "1", "--bpp", "1", "-o", "t.rnnc"],
     2, "exactly one"),
    # info
    ("info missing", ["info", "nope.rnnc"], 66, "nope.rnnc"),
    ("info directory", ["info", "folder"], 66, "directory"),
    ("info corrupt", ["info", "corrupt.rnnc"], 65, "checksum"),
    ("info truncated", ["info", "cut.rnnc"], 65, "truncated"),
    ("info foreign", ["info", "in.png"], 65, "magic"),
]


@pytest.mark.parametrize("args, code, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gives_one_error_line_and_no_output(args: list[str], code: int, match: str,
                                                      work: Path, tiny_model: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    before = listing(work)
    r = cli(*[a.replace("{tiny}", tiny_model) for a in args])
    assert_one_error_line(r, code, match)
    assert listing(work) == before  # nothing written, no .part left, existing files untouched


@pytest.mark.parametrize("args", [
    ["compress", "in.png", "-n", "0"], ["compress", "in.png", "-n", "65"],
    ["compress", "in.png", "--bpp", "-1"], ["compress", "in.png", "--ms-ssim", "1"],
    ["compress", "in.png", "--psnr", "0"], ["compress", "in.png", "--coder", "zip"],
    ["decompress", "good.rnnc", "-n", "0"], ["truncate", "good.rnnc", "-n", "1"],
    ["compress"], ["frobnicate"],
])
def test_usage_errors_exit_2(args: list[str], work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    before = listing(work)
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "Error" in r.stderr or ERROR_PREFIX in r.stderr
    assert listing(work) == before


def test_interrupt_leaves_no_partial_file(work: Path, tiny_model: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during encoding: exit 130, one line, no output and no temporary file."""
    monkeypatch.chdir(work)

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(codec, "compress", interrupted)
    before = listing(work)
    r = cli("compress", "in.png", "-o", "fresh.rnnc", "--model", tiny_model)
    assert_one_error_line(r, 130, "interrupted")
    assert listing(work) == before


def test_failed_write_removes_the_temporary_file(work: Path, tiny_model: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while the temporary output is being written: 73, and no .part left."""
    monkeypatch.chdir(work)

    def broken_save(self, fp, *a, **kw):
        Path(fp).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    before = listing(work)
    r = cli("decompress", "good.rnnc", "-o", "new.png", "--model", tiny_model)
    assert_one_error_line(r, 73, "No space left on device")
    assert listing(work) == before


# --- a real process -------------------------------------------------------------------------


def _script() -> Path:
    path = Path(sys.executable).parent / "rnncodec"
    if not path.exists():
        pytest.skip("the rnncodec console script is not installed")
    return path


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path: Path, rgb: np.ndarray, tiny_model: str) -> None:
    exe = str(_script())
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    Image.fromarray(rgb).save(tmp_path / "in.png")
    p = run("compress", "in.png", "-n", "3", "--model", tiny_model, "-o", "in.rnnc")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "in.rnnc").read_bytes() == codec.compress(rgb, iterations=3,
                                                                  model=tiny_model)
    p = run("info", "in.rnnc", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["iterations"] == 3
    p = run("truncate", "in.rnnc", "-n", "2", "-o", "two.rnnc")
    assert p.returncode == 0, p.stderr
    p = run("decompress", "two.rnnc", "-o", "out.png", "--model", tiny_model, "-q")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    img = Image.open(tmp_path / "out.png")
    assert img.size == (56, 40)
    assert np.array_equal(np.asarray(img), np.asarray(
        codec.decompress(tmp_path / "in.rnnc", iterations=2, model=tiny_model)))
    # and a failure, as a user sees it
    data = bytearray((tmp_path / "in.rnnc").read_bytes())
    data[-2] ^= 1
    (tmp_path / "bad.rnnc").write_bytes(bytes(data))
    p = run("decompress", "bad.rnnc", "-o", "bad.png", "--model", tiny_model)
    assert p.returncode == 65
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(ERROR_PREFIX)
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "bad.png").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == [
        "bad.rnnc", "in.png", "in.rnnc", "out.png", "two.rnnc"]


def test_outputs_follow_the_umask_not_the_private_temp_file(tmp_path) -> None:
    import os
    import stat

    from rnncodec.cli import _write

    old = os.umask(0o022)
    try:
        _write(tmp_path / "out.bin", b"x", force=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644
