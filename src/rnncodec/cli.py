"""The ``rnncodec`` command line: compress, decompress, truncate, info, models, train.

Exit status (sysexits.h): 0 success, 2 bad usage, 65 bad data (corrupt file, unreadable image,
wrong model), 66 missing input, 73 output exists or cannot be written, 130 interrupted.
Every failure prints one line on stderr; no traceback.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from . import codec
from .entropy import CODERS, DEFAULT_CODER
from .errors import OutputError, RnncError
from .zoo import DEFAULT_MODEL, MODELS

T = TypeVar("T")


def _fail(message: str, code: int) -> None:
    click.echo(f"rnncodec: error: {message}", err=True)
    sys.exit(code)


def _run(fn: Callable[[], T]) -> T:
    """Run a command body, turning the project's errors into one line and an exit status."""
    try:
        return fn()
    except RnncError as e:
        _fail(str(e), e.exit_code)
    except ValueError as e:
        _fail(str(e), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except MemoryError:
        _fail("out of memory", 1)
    raise AssertionError("unreachable")


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise OutputError(f"{path} exists (use --force to replace it)")
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    if not path.parent.exists():
        raise OutputError(f"directory {path.parent} does not exist")


@contextmanager
def atomic_output(path: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the body succeeds."""
    _check_output(path, force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        if path.exists() and not force:  # appeared while we worked
            raise OutputError(f"{path} exists (use --force to replace it)")
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write(path: Path, data: bytes, force: bool) -> None:
    with atomic_output(path, force) as tmp:
        tmp.write_bytes(data)


@contextmanager
def _progress(total: int | None, label: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr (hidden with --quiet or when stderr is not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="it", disable=quiet or None, leave=False,
               file=sys.stderr)

    def update(done: int) -> None:
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


force_opt = click.option("--force", "-f", is_flag=True, help="Replace the output if it exists.")
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rnncodec")
def main() -> None:
    """Learned progressive image compression with recurrent networks (Toderici et al. 2017).

    Each iteration adds 32 bits per 16×16 block (0.125 bpp before entropy coding) and refines
    the image; a file cut after any iteration still decodes.
    """


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file (default: INPUT with suffix .rnnc).")
@click.option("-n", "--iterations", type=click.IntRange(1, 64),
              help="Number of iterations to store (default 16; 0.125 bpp each before entropy "
                   "coding).")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True),
              help="Target rate: the most iterations whose file stays within X bits per pixel.")
@click.option("--ms-ssim", "ms_ssim", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Target quality: the fewest iterations whose decoded image reaches this "
                   "MS-SSIM (RGB, data range 255).")
@click.option("--psnr", type=click.FloatRange(min=0, min_open=True),
              help="Target quality: the fewest iterations reaching this PSNR in dB.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help=f"Registered model name ({', '.join(MODELS)}) or a .safetensors file.")
@click.option("--coder", type=click.Choice(sorted(CODERS)), default=DEFAULT_CODER,
              show_default=True, help="Entropy coder for the binary codes.")
@force_opt
@quiet_opt
def compress(input: Path, output: Path | None, iterations: int | None, bpp: float | None,
             ms_ssim: float | None, psnr: float | None, model: str, coder: str, force: bool,
             quiet: bool) -> None:
    """Compress an image (PNG, JPEG, ...) to an .rnnc file."""
    out = output or input.with_suffix(".rnnc")

    def body() -> None:
        _check_output(out, force)
        total = iterations or (None if bpp or ms_ssim or psnr else codec.DEFAULT_ITERATIONS)
        with _progress(total, "encoding", quiet) as bar:
            data = codec.compress(input, iterations=iterations, bpp=bpp, ms_ssim=ms_ssim,
                                  psnr=psnr, model=model, coder=coder, progress=bar)
        _write(out, data, force)
        if not quiet:
            i = codec.info(data)
            click.echo(f"{out}: {i.iterations} iterations, {i.bytes} bytes, "
                       f"{i.bpp_per_iteration[-1]:.4f} bpp", err=True)

    _run(body)


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output image; the format follows its suffix (default: INPUT with .png).")
@click.option("-n", "--iterations", type=click.IntRange(min=1),
              help="Decode only the first N iterations (default: all stored).")
@click.option("--model", default=None,
              help="Weights to decode with (default: the model named in the file).")
@force_opt
@quiet_opt
def decompress(input: Path, output: Path | None, iterations: int | None, model: str | None,
               force: bool, quiet: bool) -> None:
    """Decode an .rnnc file to an image."""
    out = output or input.with_suffix(".png")

    def body() -> None:
        _check_output(out, force)
        info = codec.info(input)
        total = min(info.iterations, iterations or info.iterations)
        with _progress(total, "decoding", quiet) as bar:
            image = codec.decompress(input, iterations=iterations, model=model, progress=bar)
        fmt = _image_format(out)
        with atomic_output(out, force) as tmp:
            image.save(tmp, format=fmt)
        if not quiet:
            click.echo(f"{out}: {image.width}×{image.height} {image.mode}, {total} iterations",
                       err=True)

    _run(body)


def _image_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"cannot tell an image format from the suffix of {path}; "
                          "use e.g. .png")
    return fmt


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The shorter .rnnc file to write.")
@click.option("-n", "--iterations", type=click.IntRange(min=1), help="Keep the first N.")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True),
              help="Keep the most iterations within X bits per pixel (at least one).")
@force_opt
def truncate(input: Path, output: Path, iterations: int | None, bpp: float | None,
             force: bool) -> None:
    """Cut an .rnnc file to fewer iterations without re-encoding."""
    _run(lambda: _write(output, codec.truncate(input, iterations=iterations, bpp=bpp), force))


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(input: Path, as_json: bool) -> None:
    """Show an .rnnc file's header, iterations and bits per pixel."""
    d: dict[str, Any] = _run(lambda: codec.info(input).as_dict())
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for key in ("width", "height", "mode", "model", "weights", "coder", "iterations", "bytes"):
        click.echo(f"{key:<11}{d[key]}")
    click.echo(f"{'bpp':<11}" + " ".join(f"{b:.4f}" for b in d["bpp_per_iteration"]))


@main.command()
def models() -> None:
    """List the registered models."""
    for spec in MODELS.values():
        mark = "*" if spec.name == DEFAULT_MODEL else " "
        state = "" if spec.path.exists() else "  (weights missing)"
        click.echo(f"{mark} {spec.name:<16}{spec.description}{state}")


@main.command()
@click.option("--data", default="../shared/data/train", show_default=True,
              help="Folder of training photos (searched recursively).")
@click.option("--out", default="runs/default", show_default=True,
              help="Run folder: checkpoint, log.csv and the exported weights.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a training setting, e.g. --set width=0.5 --set steps=1000.")
def train(data: str, out: str, overrides: tuple[str, ...]) -> None:
    """Train a model on a folder of photos (resumes from the run folder's checkpoint)."""
    from dataclasses import fields

    from .train import TrainConfig, train as run_training

    types = {f.name: f.type for f in fields(TrainConfig)}
    values: dict[str, Any] = {"data": data, "out": out}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in types:
            _fail(f"unknown setting {key!r}; known: {', '.join(types)}", 2)
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}
        values[key] = kind.get(str(types[key]), str)(value)
    weights = _run(lambda: run_training(TrainConfig(**values)))
    click.echo(f"weights: {weights}")


if __name__ == "__main__":
    main()
