"""The ``rnncodec`` command line: compress, decompress, truncate, info, models, train.

Exit status (sysexits.h): 0 success, 2 bad usage, 65 bad data (corrupt file, unreadable image,
wrong model), 66 missing input, 73 output exists or cannot be written, 130 interrupted
(SIGINT or SIGTERM).
Every failure prints one line on stderr; no traceback.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import files
from .defaults import DEFAULT_ITERATIONS, MAX_PIXELS
from .entropy import AUTO, CODER_NAMES
from .errors import OutputError, RnncError
from .registry import DEFAULT_MODEL, MODELS
from .tiling import AUTO_TILE_PIXELS, DEFAULT_TILE, MAX_REGION_PIXELS, MIN_TILE, SEARCH_TILE_PIXELS

T = TypeVar("T")


class _OnFirstUse:
    """A module imported when a command first uses it: ``--help``, ``info``, ``truncate`` and
    ``models`` never load torch."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    from . import codec
else:
    codec = _OnFirstUse("rnncodec.codec")  # the networks, for the commands that code images


def _fail(message: str, code: int) -> None:
    click.echo(f"rnncodec: error: {message}", err=True)
    sys.exit(code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs follow the umask
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
pixels_opt = click.option("--max-pixels", type=click.IntRange(min=1), default=MAX_PIXELS,
                          show_default=True,
                          help="Refuse images (or files declaring images) with more pixels.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rnncodec")
def main() -> None:
    """Learned progressive image compression with recurrent networks (Toderici et al. 2017).

    Each iteration adds 32 bits per 16×16 block (0.125 bpp before entropy coding) and refines
    the image; a file cut after any iteration still decodes.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # clean up temporary files as on Ctrl-C


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
@click.option("--coder", type=click.Choice([AUTO, *CODER_NAMES]), default=AUTO,
              show_default=True,
              help="Entropy coder for the binary codes: neural (learned context model), "
                   "context (adaptive context counts), raw (none), best (the smallest of "
                   "those per iteration); auto is best.")
@click.option("--tile", type=click.IntRange(min=0),
              help=f"Run the networks on tiles of at most N×N pixels (a multiple of 16, at "
                   f"least {MIN_TILE}), so memory grows with a tile, not the image; 0: never "
                   f"(refused for images over {MAX_REGION_PIXELS / 1e6:.1f} megapixels). "
                   f"Default: {DEFAULT_TILE} for images over {AUTO_TILE_PIXELS / 1e6:.1f} "
                   f"megapixels ({SEARCH_TILE_PIXELS / 1e6:.1f} with --effort), else none; "
                   "images counted in whole 16-pixel blocks.")
@click.option("--effort", type=click.IntRange(min=0), default=0, show_default=True,
              help="Search for better bits than the encoder's in the first N iterations "
                   "(2: better quality at low rates, encoding several times slower; each "
                   "further iteration searched takes as long as the first, for less gain); any "
                   "decoder reads the result.")
@click.option("--filter/--no-filter", "postfilter", default=False, show_default=True,
              help="Fit a filter to the decoded image and store it (about 240 bytes) when it "
                   "raises MS-SSIM more than the same bytes of codes would; it applies when all "
                   "iterations are decoded. Off by default: the gain is small and the fit slow.")
@pixels_opt
@force_opt
@quiet_opt
def compress(input: Path, output: Path | None, iterations: int | None, bpp: float | None,
             ms_ssim: float | None, psnr: float | None, model: str, coder: str,
             tile: int | None, effort: int, postfilter: bool, max_pixels: int, force: bool,
             quiet: bool) -> None:
    """Compress an image (PNG, JPEG, ...) to an .rnnc file."""
    out = output or input.with_suffix(".rnnc")

    def body() -> None:
        _check_output(out, force)
        total = iterations or (None if bpp or ms_ssim or psnr else codec.DEFAULT_ITERATIONS)
        with _progress(total, "encoding", quiet) as bar:
            data = codec.compress(input, iterations=iterations, bpp=bpp, ms_ssim=ms_ssim,
                                  psnr=psnr, model=model, coder=coder, tile=tile,
                                  effort=effort, postfilter=postfilter,
                                  max_pixels=max_pixels, progress=bar)
        _write(out, data, force)
        if not quiet:
            i = codec.info(data)
            click.echo(f"{out}: {i.iterations} iterations{', filtered' if i.filtered else ''}"
                       f", {i.bytes} bytes, {i.bpp_per_iteration[-1]:.4f} bpp", err=True)

    _run(body)


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output image; the format follows its suffix (default: INPUT with .png).")
@click.option("-n", "--iterations", type=click.IntRange(min=1),
              help="Decode only the first N iterations (default: all stored).")
@click.option("--model", default=None,
              help="Weights to decode with (default: the model named in the file).")
@pixels_opt
@force_opt
@quiet_opt
def decompress(input: Path, output: Path | None, iterations: int | None, model: str | None,
               max_pixels: int, force: bool, quiet: bool) -> None:
    """Decode an .rnnc file to an image."""
    out = output or input.with_suffix(".png")

    def body() -> None:
        _check_output(out, force)
        fmt = _image_format(out)
        info = codec.info(input)
        total = min(info.iterations, iterations or info.iterations)
        with _progress(total, "decoding", quiet) as bar:
            image = codec.decompress(input, iterations=iterations, model=model,
                                     max_pixels=max_pixels, progress=bar)
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
    if fmt not in Image.SAVE:  # Pillow reads some formats it cannot write (.psd, .fits, ...)
        raise OutputError(f"cannot write {fmt} images ({path}); use e.g. .png")
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
    _run(lambda: _write(output, files.truncate(input, iterations=iterations, bpp=bpp), force))


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(input: Path, as_json: bool) -> None:
    """Show an .rnnc file's header, iterations and bits per pixel."""
    d: dict[str, Any] = _run(lambda: files.info(input).as_dict())
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    runs = [f"{name}×{len(list(group))}"
            for name, group in itertools.groupby(d["coder_per_iteration"])]
    d["coder"] += f" ({', '.join(runs)})" if d["coder"] == "best" else ""
    for key in ("width", "height", "mode", "model", "weights", "coder", "tile", "iterations",
                "filter", "bytes"):
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

    from .train import TrainConfig
    from .train import train as run_training

    types = {f.name: f.type for f in fields(TrainConfig)}
    values: dict[str, Any] = {"data": data, "out": out}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in types:
            _fail(f"unknown setting {key!r}; known: {', '.join(types)}", 2)
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}
        try:
            values[key] = kind.get(str(types[key]), str)(value)
        except ValueError:
            _fail(f"setting {key!r} needs a {types[key]}, not {value!r}", 2)
    weights = _run(lambda: run_training(TrainConfig(**values)))
    click.echo(f"weights: {weights}")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The .safetensors file to write (its stem is the model's name).")
@click.option("--data", default="../shared/data/train", show_default=True,
              help="Training photos to fit the context coder's prior table on.")
@click.option("--images", default=32, show_default=True, help="How many photos to fit on.")
@force_opt
def export(checkpoint: Path, output: Path, data: str, images: int, force: bool) -> None:
    """Turn a training checkpoint (or a run's model.safetensors) into shippable fp16 weights
    with entropy tables."""
    from .train import export as run_export

    def body() -> str:
        with atomic_output(output, force) as tmp:
            return run_export(checkpoint, tmp, data, output.stem, images).hex()

    click.echo(f"{output}: weights {_run(body)}")


from .web.limits import MB, Limits  # light: the web framework is imported by serve only


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the viewer to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help=f"Registered model name ({', '.join(MODELS)}) or a .safetensors file.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True),
              default=Limits.max_upload_bytes / MB, show_default=True,
              help="Largest upload accepted, in MiB.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=Limits.max_pixels,
              show_default=True, help="Largest image accepted, in pixels.")
@click.option("--cache-mb", type=click.FloatRange(min=1), default=Limits.cache_bytes / MB,
              show_default=True, help="Memory for recent results, in MiB (oldest dropped).")
@click.option("--workers", type=click.IntRange(min=1), default=Limits.workers, show_default=True,
              help="Images coded at once, each on one core.")
@click.option("--queue", type=click.IntRange(min=1), default=Limits.queue, show_default=True,
              help="Images waiting for a worker; more are refused (HTTP 503).")
def serve(host: str, port: int, model: str, max_upload_mb: float, max_pixels: int,
          cache_mb: float, workers: int, queue: int) -> None:
    """Start the web viewer: watch an image refine iteration by iteration beside JPEG, WebP,
    AVIF and JPEG XL. Stopped by SIGINT or SIGTERM, it exits with 130 or 143."""
    from .web.app import create_app
    from .web.server import serve as run_server

    limits = Limits(int(max_upload_mb * MB), max_pixels, int(cache_mb * MB), workers, queue)
    sys.exit(run_server(_run(lambda: create_app(model, limits)), host, port))


@main.command()
@click.argument("dataset", required=False, type=click.Path(path_type=Path))
@click.option("--model", "models", multiple=True,
              help="Model to evaluate (name or .safetensors file); repeat for several "
                   "(default: every registered model whose weights are installed).")
@click.option("--codecs", help="Standard codecs to compare, comma-separated, '' for none "
              "(default: jpeg-420,jpeg-444,webp,avif,jxl, those available).")
@click.option("--qualities", help="Quality sweep (0-100) of the standard codecs, "
              "comma-separated (default: 2 to 95 in 13 steps).")
@click.option("--iterations", type=click.IntRange(1, 64), default=DEFAULT_ITERATIONS,
              show_default=True, help="Model iterations to evaluate: 1 to N, from one encode.")
@click.option("--effort", "efforts", multiple=True, type=click.IntRange(min=0),
              help="Search the bits of the first N iterations (see compress --effort); repeat "
                   "to evaluate the models at several (default: 0).")
@click.option("--filter-iterations", "filtered", type=click.IntRange(0, 64), default=0,
              help="Also evaluate the models with the filter (see compress --filter) at 1 to N "
                   "iterations: one encode, cut after each and given a filter fitted to the cut "
                   "(default: 0, none).")
@click.option("--filter-effort", "filter_efforts", multiple=True, type=click.IntRange(min=0),
              help="The efforts at which to evaluate the filter; repeat for several "
                   "(default: 0).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("--out", default="docs/results", show_default=True, type=click.Path(path_type=Path),
              help="Folder for results.json, results.csv and the plots.")
@click.option("--report", default="docs/results.md", show_default=True,
              type=click.Path(path_type=Path), help="The markdown report to write.")
@click.option("--cache", type=click.Path(path_type=Path),
              help="Per-point cache, JSON lines (default: ~/.cache/rnncodec/evaluate.jsonl).")
@quiet_opt
def evaluate(dataset: Path | None, models: tuple[str, ...], codecs: str | None,
             qualities: str | None, iterations: int, efforts: tuple[int, ...],
             filtered: int, filter_efforts: tuple[int, ...], limit: int | None, out: Path,
             report: Path, cache: Path | None, quiet: bool) -> None:
    """Rate–distortion, speed and memory of the models and standard codecs on a folder of
    images (default: Kodak in ../shared/data/kodak); writes JSON, CSV, plots and a report."""
    import shlex

    from .errors import InputMissingError
    from .evaluate import codecs as adapters
    from .evaluate import report as reporting
    from .evaluate import results, runner

    def warn(message: str) -> None:
        click.echo(f"rnncodec: warning: {message}", err=True)

    def body() -> None:
        folder = dataset or runner.DEFAULT_DATASET
        if dataset is None and not folder.is_dir():
            raise InputMissingError(f"no DATASET given and {folder} does not exist")
        classic = adapters.CLASSIC if codecs is None else [
            c.strip() for c in codecs.split(",") if c.strip()]
        try:
            sweep = adapters.QUALITIES if qualities is None else [
                int(q) for q in qualities.split(",") if q.strip()]
        except ValueError:
            raise ValueError(f"--qualities must be integers, not {qualities!r}") from None
        names = list(models) or runner.default_models()
        built = runner.build_codecs(names, classic, sweep, iterations, warn, efforts or (0,),
                                    filtered, filter_efforts or (0,))
        command = shlex.join(["rnncodec", "evaluate", str(folder),
                              *(a for m in names for a in ("--model", m)),
                              "--codecs", ",".join(classic), "--qualities",
                              ",".join(map(str, sweep)), "--iterations", str(iterations),
                              *(a for e in efforts for a in ("--effort", str(e))),
                              *(("--filter-iterations", str(filtered)) if filtered else ()),
                              *(a for e in filter_efforts if filtered
                                for a in ("--filter-effort", str(e))),
                              *(("--limit", str(limit)) if limit else ()), "--out", str(out),
                              "--report", str(report)])
        res = runner.run(folder, built, runner.Cache(cache or runner.DEFAULT_CACHE), command,
                         limit, quiet)
        out.mkdir(parents=True, exist_ok=True)
        results.write_json(res, out / "results.json")
        results.write_csv(res.points, out / "results.csv")
        written = reporting.render(out / "results.json", report)
        if not quiet:
            click.echo(f"wrote {out / 'results.json'}, results.csv, {len(written) - 1} plots "
                       f"(PNG and SVG) and {report}", err=True)

    _run(body)


if __name__ == "__main__":
    main()
