"""The command line, end to end: CliRunner for the details, one real subprocess run."""

from __future__ import annotations

import io
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

from rnncodec import codec, ratecontrol
from rnncodec.cli import main
from rnncodec.entropy import CODER_NAMES
from rnncodec.format import Header, assemble, parse
from rnncodec.registry import TUNES, model_for
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


@pytest.mark.parametrize("tune", TUNES)
def test_tune_picks_the_model_and_decoding_follows_the_file(tmp_path: Path, tune: str) -> None:
    src = tmp_path / "small.png"
    Image.fromarray(gradient_image(16, 24, seed=9)).save(src)
    ok("compress", src, "-n", 1, "-q", "--tune", tune)
    assert parse(src.with_suffix(".rnnc").read_bytes()).header.model == model_for(tune)
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
    ("compress over its input", ["compress", "in.png", "-o", "in.png", "-f", "--model",
                                 "{tiny}"], 73, "in.png is an input"),
    ("compress several to a file", ["compress", "in.png", "junk.png", "-o", "x.rnnc"], 2,
     "directory"),
    ("compress into a missing directory", ["compress", "in.png", "-o", "no/", "--model",
                                           "{tiny}"], 73, "does not exist"),
    ("compress stdin among others", ["compress", "-", "in.png"], 2, "only input"),
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
    ("decompress truncated strict", ["decompress", "cut.rnnc", "--strict", "--model", "{tiny}"],
     65, "truncated inside iteration 4"),
    ("decompress more than cut holds", ["decompress", "cut.rnnc", "-n", "4", "--model",
                                        "{tiny}"], 2, "holds 3 complete iterations"),
    ("decompress more than held", ["decompress", "good.rnnc", "-n", "5", "--model", "{tiny}"],
     2, "holds 4 iterations"),
    ("decompress over its input", ["decompress", "good.rnnc", "-o", "good.rnnc", "-f",
                                   "--model", "{tiny}", "--format", "png"], 73, "is an input"),
    ("decompress unknown format", ["decompress", "good.rnnc", "--format", "nope"], 2,
     "unknown image format"),
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
    ("truncate truncated strict", ["truncate", "cut.rnnc", "-n", "1", "-o", "t.rnnc",
                                   "--strict"], 65, "truncated"),
    ("truncate over its input", ["truncate", "good.rnnc", "-n", "1", "-o", "good.rnnc", "-f"],
     73, "is an input"),
    ("truncate foreign", ["truncate", "in.png", "-n", "1", "-o", "t.rnnc"], 65, "magic"),
    ("truncate exists", ["truncate", "good.rnnc", "-n", "1", "-o", "taken.rnnc"], 73, "--force"),
    ("truncate out dir missing", ["truncate", "good.rnnc", "-n", "1", "-o", "no/t.rnnc"], 73,
     "does not exist"),
    ("compress tune and model", ["compress", "in.png", "--tune", "psnr", "--model", "{tiny}"], 2,
     "not both"),
    ("truncate no amount", ["truncate", "good.rnnc", "-o", "t.rnnc"], 2, "exactly one"),
    ("truncate two amounts", ["truncate", "good.rnnc", "-n", "1", "--bpp", "1", "-o", "t.rnnc"],
     2, "exactly one"),
    # info
    ("info missing", ["info", "nope.rnnc"], 66, "nope.rnnc"),
    ("info directory", ["info", "folder"], 66, "directory"),
    ("info corrupt", ["info", "corrupt.rnnc"], 65, "checksum"),
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
    ["compress", "in.png", "--tune", "ssim"],
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

    monkeypatch.setattr(codec, "encode", interrupted)
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


# --- stdin and stdout -----------------------------------------------------------------------


def piped(*args: object, stdin: bytes = b"") -> Result:
    """The command with ``stdin`` as its standard input (stdout kept apart as bytes)."""
    r = CliRunner().invoke(main, [str(a) for a in args], input=stdin)
    assert r.exit_code == 0, (r.stderr, r.exception)
    return r


def test_stdin_to_stdout_both_ways(png: Path, rgb: np.ndarray, tiny_model: str,
                                   tmp_path: Path) -> None:
    """compress - -o - < a.png > a.rnnc, then decompress - -o - < a.rnnc > a.png: the same
    bytes as from files; an image to stdout is PNG unless --format names another."""
    before = listing(tmp_path)
    r = piped("compress", "-", "-o", "-", "-n", 2, "--model", tiny_model,
              stdin=png.read_bytes())
    data = r.stdout_bytes
    assert data == codec.compress(rgb, iterations=2, model=tiny_model)
    assert r.stderr.startswith(f"<stdout>: 2 iterations, {len(data)} bytes")
    r = piped("decompress", "-", "-o", "-", "--model", tiny_model, stdin=data)
    assert r.stdout_bytes.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.stdout_bytes))),
                          np.asarray(codec.decompress(data, model=tiny_model)))
    assert r.stderr.startswith("<stdout>: 56×40 RGB, 2 iterations")
    r = piped("decompress", "-", "--format", "jpeg", "--model", tiny_model, "-q", stdin=data)
    assert Image.open(io.BytesIO(r.stdout_bytes)).format == "JPEG" and r.stderr == ""
    assert listing(tmp_path) == before  # stdin's default output is stdout: no file
    # stdin to a file, a file to stdout, and truncate both ways
    r = piped("compress", "-", "-o", tmp_path / "s.rnnc", "-n", 2, "--model", tiny_model,
              "-q", "-f", stdin=png.read_bytes())
    assert (tmp_path / "s.rnnc").read_bytes() == data
    assert piped("truncate", tmp_path / "s.rnnc", "-n", 1, "-o", "-", "-q").stdout_bytes == \
        codec.truncate(data, iterations=1)
    r = piped("truncate", "-", "-n", 1, "-o", "-", stdin=data)
    assert r.stdout_bytes == codec.truncate(data, iterations=1)
    assert r.stderr.startswith("<stdout>: 1 iteration, ")
    assert json.loads(piped("info", "-", "--json", stdin=data).stdout)["iterations"] == 2


def test_stdin_problems_are_one_line(tiny_model: str, png: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    r = CliRunner().invoke(main, ["compress", "-", "--model", tiny_model], input=b"")
    assert_one_error_line(r, 66, "stdin is empty")
    r = CliRunner().invoke(main, ["decompress", "-", "--model", tiny_model], input=b"junk")
    assert_one_error_line(r, 65, "not an .rnnc file")
    # a terminal: neither read from (it would wait for typing) nor written binary data to
    from rnncodec import cli_io

    real = cli_io.std

    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(cli_io, "std", lambda mode: Terminal() if mode == "rb" else real(mode))
    assert_one_error_line(cli("compress", "-", "-o", "x.rnnc", "--model", tiny_model), 66,
                          "terminal")
    monkeypatch.setattr(cli_io, "std", lambda mode: Terminal() if mode == "wb" else real(mode))
    before = listing(png.parent)
    assert_one_error_line(cli("compress", png, "-o", "-", "--model", tiny_model), 73,
                          "terminal")
    assert listing(png.parent) == before


# --- several inputs -------------------------------------------------------------------------


def test_several_inputs_each_to_its_default_output(tmp_path: Path, rgb: np.ndarray,
                                                    tiny_model: str) -> None:
    """compress a.png b.png -n 2 writes a.rnnc and b.rnnc; decompress *.rnnc -o DIR/ writes
    into DIR under each input's name."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(rgb).save(a)
    Image.fromarray(rgb[:24, :32]).save(b)
    r = ok("compress", a, b, "-n", 2, "--model", tiny_model)
    assert [line.split(":")[0] for line in r.stderr.splitlines()] == [
        str(a.with_suffix(".rnnc")), str(b.with_suffix(".rnnc"))]
    assert a.with_suffix(".rnnc").read_bytes() == codec.compress(rgb, iterations=2,
                                                                  model=tiny_model)
    assert codec.info(b.with_suffix(".rnnc")).header.width == 32
    out = tmp_path / "decoded"
    out.mkdir()
    ok("decompress", a.with_suffix(".rnnc"), b.with_suffix(".rnnc"), "-o", f"{out}/",
       "--format", "webp", "--model", tiny_model, "-q")
    assert sorted(p.name for p in out.iterdir()) == ["a.webp", "b.webp"]
    assert Image.open(out / "b.webp").size == (32, 24)
    ok("compress", a, b, "-o", out, "-n", 1, "--model", tiny_model, "-q")  # a directory: into it
    assert codec.info(out / "a.rnnc").iterations == 1


def test_several_inputs_go_on_past_failures(tmp_path: Path, rgb: np.ndarray, tiny_model: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each failure is one line naming its input; the others are written; the exit status is
    the first failure's."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(rgb).save("a.png")
    Image.fromarray(rgb).save("c.png")
    Path("junk.png").write_bytes(b"not an image")
    Path("a.jpg").write_bytes(b"")  # a.jpg's default output is a.png's too
    r = cli("compress", "a.png", "missing.png", "junk.png", "c.png", "a.jpg", "-n", 1,
            "--model", tiny_model, "-f")
    assert r.exit_code == 66, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 3, r.stderr
    assert "missing.png" in errors[0] and "junk.png" in errors[1]
    assert "a.rnnc is also the output of an earlier input" in errors[2]
    assert codec.info("a.rnnc").iterations == 1 and codec.info("c.rnnc").iterations == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.jpg", "a.png", "a.rnnc", "c.png", "c.rnnc", "junk.png"]
    assert "Traceback" not in r.output
    # a message that does not name its input gets the name in front
    Path("bad.rnnc").write_bytes(b"nope")
    r = cli("decompress", "bad.rnnc", "a.rnnc", "-o", "./", "--format", "bmp", "--model",
            tiny_model, "-q")
    assert r.exit_code == 65
    assert r.stderr == f"{ERROR_PREFIX}bad.rnnc: not an .rnnc file (bad magic bytes)\n"
    assert Image.open("a.bmp").size == (56, 40) and not Path("bad.bmp").exists()


# --- inputs that are not files --------------------------------------------------------------


@pytest.mark.parametrize("command", ["compress", "decompress", "truncate", "info"])
def test_fifo_and_directory_inputs_are_named(command: str, tmp_path: Path,
                                             tiny_model: str) -> None:
    """Never read (a FIFO would block): refused at once, saying what the input is."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    extra = {"compress": ["-o", str(tmp_path / "out.rnnc"), "--model", tiny_model],
             "decompress": ["-o", str(tmp_path / "out.png"), "--model", tiny_model],
             "truncate": ["-n", "1", "-o", str(tmp_path / "t.rnnc")], "info": []}[command]
    for path, what in ((fifo, "is a FIFO"), (tmp_path, "is a directory")):
        r = cli(command, path, *extra)
        assert_one_error_line(r, 66, f"{path} {what}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.png"]


# --- a cut file -----------------------------------------------------------------------------


def test_a_cut_file_decodes_its_complete_iterations(work: Path, tiny_model: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """cut.rnnc ends inside its 4th iteration: decompress warns and decodes the 3 before it
    (exit 0); --strict refuses it (see BAD); info says how many are complete; truncate makes
    a whole file of them."""
    monkeypatch.chdir(work)
    good = Path("good.rnnc").read_bytes()
    r = ok("decompress", "cut.rnnc", "--model", tiny_model)
    warning, summary = r.stderr.splitlines()
    assert warning == ("rnncodec: warning: cut.rnnc: file truncated inside iteration 4; using "
                       "the 3 complete iterations before it")
    assert summary == "cut.png: 56×40 RGB, 3 iterations"
    assert np.array_equal(np.asarray(Image.open("cut.png")),
                          np.asarray(codec.decompress(good, iterations=3, model=tiny_model)))
    r = ok("decompress", "cut.rnnc", "-n", 2, "-o", "two.png", "--model", tiny_model, "-q")
    assert r.stderr == ""  # -q: errors only
    lines = dict(line.split(None, 1) for line in ok("info", "cut.rnnc").stdout.splitlines())
    assert lines["iterations"] == "3"
    assert lines["cut"].startswith("file truncated inside iteration 4")
    assert len(lines["bpp"].split()) == 3
    assert json.loads(ok("info", "cut.rnnc", "--json").stdout)["cut"] == \
        "file truncated inside iteration 4"
    assert json.loads(ok("info", "good.rnnc", "--json").stdout)["cut"] is None
    r = ok("truncate", "cut.rnnc", "-n", 9, "-o", "fixed.rnnc")
    assert "3 complete iterations" in r.stderr
    assert Path("fixed.rnnc").read_bytes() == codec.truncate(good, iterations=3)


# --- what compress and truncate say ---------------------------------------------------------


def test_compress_names_the_quality_reached(png: Path, tiny_model: str) -> None:
    out = png.with_suffix(".rnnc")
    r = ok("compress", png, "--psnr", 10, "--model", tiny_model)
    reached = codec.encode(png, psnr=10, model=tiny_model).psnr
    assert r.stderr.splitlines() == [f"{_summary(out)}, PSNR {reached:.2f} dB"]
    r = ok("compress", png, "--ms-ssim", 0.3, "--model", tiny_model, "-f")
    assert r.stderr.startswith(f"{out}: ") and ", MS-SSIM 0." in r.stderr
    # out of reach: a warning naming what was reached; the file is still written
    r = ok("compress", png, "--psnr", 60, "--model", tiny_model, "-f")
    summary, warning = r.stderr.splitlines()
    assert summary.startswith(f"{out}: 16 iterations")
    assert warning.startswith(f"rnncodec: warning: {png}: PSNR 60 dB not reached: PSNR ")
    assert warning.endswith(" dB after 16 iterations, the most a quality target uses")
    r = ok("compress", png, "--bpp", 0.01, "--model", tiny_model, "-f")
    assert "0.01 bpp not reached: its first iteration takes" in r.stderr.splitlines()[1]
    assert ok("compress", png, "--psnr", 60, "--model", tiny_model, "-f", "-q").stderr == ""


def _summary(path: Path) -> str:
    i = codec.info(path)
    return f"{path}: {i.iterations} iteration{'s' * (i.iterations != 1)}" + (
        ", filtered" if i.filtered else "") + f", {i.bytes} bytes, " \
        f"{i.bpp_per_iteration[-1]:.4f} bpp"


def test_truncate_says_what_it_wrote(work: Path) -> None:
    out = work / "two.rnnc"
    r = ok("truncate", work / "good.rnnc", "-n", 2, "-o", out)
    assert r.stderr.splitlines() == [_summary(out)]
    assert ok("truncate", work / "good.rnnc", "-n", 1, "-o", out, "-f", "-q").stderr == ""


def test_dropped_transparency_is_a_warning(tmp_path: Path, rgb: np.ndarray,
                                           tiny_model: str) -> None:
    a = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    a[0, 0, 3] = 10
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    r = ok("compress", tmp_path / "t.png", "-n", 1, "--model", tiny_model)
    warning, summary = r.stderr.splitlines()
    assert warning.startswith(f"rnncodec: warning: {tmp_path / 't.png'}: the image's "
                              "transparency is dropped")
    assert summary.startswith(str(tmp_path / "t.rnnc"))
    a[0, 0, 3] = 255  # opaque: nothing to say
    Image.fromarray(a, "RGBA").save(tmp_path / "o.png")
    assert "warning" not in ok("compress", tmp_path / "o.png", "-n", 1, "--model",
                               tiny_model).stderr


@pytest.mark.slow
def test_pipes_in_a_real_process(png: Path, rgb: np.ndarray, tiny_model: str,
                                 tmp_path: Path) -> None:
    """rnncodec compress - -o - < a.png > a.rnnc, and decompress - -o - < a.rnnc > a.png."""
    exe = str(_script())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(png, "rb") as stdin, open(tmp_path / "a.rnnc", "wb") as stdout:
        p = subprocess.run([exe, "compress", "-", "-o", "-", "-n", "2", "--model", tiny_model],
                           stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env,
                           timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    data = (tmp_path / "a.rnnc").read_bytes()
    assert data == codec.compress(rgb, iterations=2, model=tiny_model)
    p = subprocess.run([exe, "decompress", "-", "-o", "-", "--model", tiny_model, "-q"],
                       input=data, capture_output=True, env=env, timeout=300, check=False)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(p.stdout))),
                          np.asarray(codec.decompress(data, model=tiny_model)))


def test_compress_adaptive_info_truncate(png: Path, rgb: np.ndarray, tiny_model: str,
                                         tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratecontrol, "SEARCH_TRIALS", 1)  # blocks stop at the target itself
    out = tmp_path / "adaptive.rnnc"
    ok("compress", png, "--adaptive", "--psnr", 14, "--model", tiny_model, "-o", out)
    data = out.read_bytes()
    assert data == codec.compress(rgb, psnr=14, adaptive=True, model=tiny_model)
    lines = dict(line.split(None, 1) for line in ok("info", out).stdout.splitlines())
    active = [float(a) for a in lines["active"].split()]
    assert len(active) == int(lines["iterations"]) and active[0] == 1 > active[-1]
    d = json.loads(ok("info", out, "--json").stdout)
    assert d["adaptive"] and d["active_per_iteration"] == pytest.approx(active, abs=1e-4)
    short = tmp_path / "short.rnnc"
    ok("truncate", out, "-n", 2, "-o", short)
    assert short.read_bytes() == codec.truncate(data, iterations=2) and short.read_bytes()[4] == 4
    ok("decompress", short, "--model", tiny_model, "-o", tmp_path / "short.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "short.png")),
                          np.asarray(codec.decompress(short.read_bytes(), model=tiny_model)))
    uniform = tmp_path / "uniform.rnnc"
    ok("compress", png, "-n", 2, "--no-adaptive", "--model", tiny_model, "-o", uniform)
    assert "active" not in ok("info", uniform).stdout


def test_compress_is_adaptive_by_default_for_every_tune(png: Path, psnr_model: str,
                                                        tiny_model: str, tmp_path: Path) -> None:
    for model, flags, version in ((psnr_model, [], 4), (psnr_model, ["--no-adaptive"], 1),
                                  (tiny_model, [], 4), (tiny_model, ["--no-adaptive"], 1),
                                  (tiny_model, ["--bpp", 0.5], 1),
                                  (tiny_model, ["--bpp", 0.5, "--adaptive"], 4)):
        rate = [] if "--bpp" in flags else ["-n", 2]
        out = tmp_path / "out.rnnc"
        ok("compress", png, *rate, "--no-filter", "--model", model, *flags, "-o", out, "-f")
        assert out.read_bytes()[4] == version, (model, flags)
