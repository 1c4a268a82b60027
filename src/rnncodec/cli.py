"""The ``rnncodec`` command line: compress, decompress, truncate, info, models, train.

Exit status (sysexits.h): 0 success, 2 bad usage, 65 bad data (corrupt file, unreadable image,
wrong model), 66 missing input, 69 an optional part not installed (extras.py), 73 output exists
or cannot be written, 130 interrupted (SIGINT or SIGTERM; ``serve``: 143 for SIGTERM, as
servers report it); with several inputs, the first failure's.
Every failure prints one line on stderr; no traceback. ``-`` reads stdin or writes stdout
(cli_io.py).
"""

from __future__ import annotations

import importlib
import itertools
import json
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import files
from .cli_io import (
    REPORTED,
    Job,
    atomic_output,
    complete,
    describe,
    format_suffix,
    image_format,
    plan_jobs,
    plural,
    progress,
    read_input,
    report_compress,
    reported_warnings,
    run_jobs,
    save_image,
    summary,
    warn,
    write_output,
)
from .cli_io import fail as _fail
from .cli_io import write_file as _write  # noqa: F401  (the name tests and callers know)
from .defaults import (
    AUTO_TILE_PIXELS,
    DEFAULT_ITERATIONS,
    DEFAULT_TILE,
    MAX_ITERATIONS,
    MAX_PIXELS,
    MAX_REGION_PIXELS,
    MIN_TILE,
    SEARCH_TILE_PIXELS,
)
from .entropy import AUTO, CODER_NAMES
from .errors import ArgumentError
from .extras import require
from .registry import DEFAULT_MODEL, MODELS, TUNES, model_for
from .web.limits import MB, Limits  # light: the web framework is imported by serve only

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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(fn: Callable[[], T]) -> T:
    """Run a command body, turning the project's errors into one line and an exit status."""
    try:
        return fn()
    except REPORTED as e:
        _fail(*describe(e))
    raise AssertionError("unreachable")


force_opt = click.option("--force", "-f", is_flag=True,
                         help="Replace outputs that exist (and write binary data to a terminal).")
quiet_opt = click.option("--quiet", "-q", is_flag=True,
                         help="No progress bar, summary or warnings: errors only.")
strict_opt = click.option("--strict", is_flag=True,
                          help="Refuse a file cut inside an iteration (an interrupted download) "
                               "instead of using its complete iterations with a warning.")
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
    # Pillow warns of images over its guard before the codec's own limit refuses them in words
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit",
                            category=RuntimeWarning)


inputs_arg = click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")


def output_opt(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("-o", "--output", type=click.Path(),
                        help=f"Output file, - for stdout, or a directory (DIR/) for each input's "
                             f"default output (default: {default}; stdin's: stdout).")


def _chosen_model(model: str | None, tune: str | None) -> str:
    if model and tune:
        raise ArgumentError("--tune picks a model: give --model or --tune, not both")
    return model_for(tune) if tune else model or DEFAULT_MODEL


@main.command()
@inputs_arg
@output_opt("INPUT with suffix .rnnc")
@click.option("-n", "--iterations", type=click.IntRange(1, MAX_ITERATIONS),
              help="Number of iterations to store (default 16; 0.125 bpp each before entropy "
                   "coding).")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True),
              help="Target rate: the most iterations whose file stays within X bits per pixel.")
@click.option("--ms-ssim", "ms_ssim", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Target quality: the fewest iterations whose decoded image reaches this "
                   "MS-SSIM (RGB, data range 255).")
@click.option("--psnr", type=click.FloatRange(min=0, min_open=True),
              help="Target quality: the fewest iterations reaching this PSNR in dB.")
@click.option("--model",
              help=f"Registered model name ({', '.join(MODELS)}) or a .safetensors file "
                   f"[default: {DEFAULT_MODEL}].")
@click.option("--tune", type=click.Choice(TUNES),
              help="Pick the registered model tuned for this metric: ms-ssim (the default "
                   "model) or psnr (higher PSNR and PSNR-HVS, lower MS-SSIM).")
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
@click.option("--filter/--no-filter", "postfilter", default=None,
              help="Fit a filter to the decoded image for the metric the model is tuned for "
                   "and store it (about 240 bytes) when it gains more than the same bytes of "
                   "codes would; it applies when all iterations are decoded. Default: on for "
                   "models tuned for PSNR (a quick fit), off for MS-SSIM ones (a slow fit for "
                   "a small gain).")
@click.option("--adaptive/--no-adaptive", default=None,
              help="Spatially adaptive rates: each 16×16 block stops receiving codes once its "
                   "PSNR reaches a threshold (a format-4 file). The threshold is --psnr's "
                   "(raised when the image then misses it); --bpp and --ms-ssim bisect for "
                   "theirs; searches take up to 5 encodes (5× the time). Else 40 dB. Saves "
                   "most at PSNR targets. Default: on when coding -n iterations (40 dB, one "
                   "encode), off for targets.")
@pixels_opt
@force_opt
@quiet_opt
def compress(inputs: tuple[str, ...], output: str | None, iterations: int | None,
             bpp: float | None, ms_ssim: float | None, psnr: float | None, model: str | None,
             tune: str | None, coder: str, tile: int | None, effort: int, postfilter: bool | None,
             adaptive: bool | None, max_pixels: int, force: bool, quiet: bool) -> None:
    """Compress images (PNG, JPEG, ...; - for stdin) to .rnnc files."""
    total = iterations or (None if bpp or ms_ssim or psnr else DEFAULT_ITERATIONS)
    chosen = _run(lambda: _chosen_model(model, tune))

    def one(job: Job) -> None:
        with reported_warnings(job.source, quiet), progress(total, "encoding", quiet) as bar:
            result = codec.encode(read_input(job.input), iterations=iterations, bpp=bpp,
                                  ms_ssim=ms_ssim, psnr=psnr, model=chosen, coder=coder,
                                  tile=tile, effort=effort, postfilter=postfilter,
                                  adaptive=adaptive, max_pixels=max_pixels, progress=bar)
        write_output(job.output, result.data, force)
        if not quiet:
            report_compress(job, result, bpp, ms_ssim, psnr)

    _run(lambda: run_jobs(plan_jobs(inputs, output, ".rnnc"), one, force))


@main.command()
@inputs_arg
@output_opt("INPUT with the format's suffix, .png")
@click.option("-n", "--iterations", type=click.IntRange(min=1),
              help="Decode only the first N iterations (default: all stored).")
@click.option("--format", "fmt", metavar="FORMAT",
              help="Image format to write, e.g. png, jpeg, webp, tiff (default: the output's "
                   "suffix; PNG for stdout).")
@click.option("--model", default=None,
              help="Weights to decode with (default: the model named in the file).")
@strict_opt
@pixels_opt
@force_opt
@quiet_opt
def decompress(inputs: tuple[str, ...], output: str | None, iterations: int | None,
               fmt: str | None, model: str | None, strict: bool, max_pixels: int, force: bool,
               quiet: bool) -> None:
    """Decode .rnnc files (- for stdin) to images."""

    def one(job: Job) -> None:
        kind = image_format(fmt, job.output)
        source = read_input(job.input)
        info = complete(job, source, strict, quiet, iterations)
        total = iterations or info.iterations
        with progress(total, "decoding", quiet) as bar:
            image = codec.decompress(source, iterations=iterations, model=model,
                                     max_pixels=max_pixels, progress=bar, allow_cut=True)
        save_image(job.output, image, kind, force)
        if not quiet:
            click.echo(f"{job.target}: {image.width}×{image.height} {image.mode}, "
                       f"{plural(total, 'iteration')}", err=True)

    _run(lambda: run_jobs(plan_jobs(inputs, output, format_suffix(fmt)), one, force))


@main.command()
@click.argument("input", metavar="INPUT")
@click.option("-o", "--output", type=click.Path(), required=True,
              help="The shorter .rnnc file to write; - for stdout.")
@click.option("-n", "--iterations", type=click.IntRange(min=1),
              help="Keep the first N (all, if the file holds fewer).")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True),
              help="Keep the most iterations within X bits per pixel (at least one).")
@strict_opt
@force_opt
@quiet_opt
def truncate(input: str, output: str, iterations: int | None, bpp: float | None, strict: bool,
             force: bool, quiet: bool) -> None:
    """Cut an .rnnc file (- for stdin) to fewer iterations without re-encoding."""

    def one(job: Job) -> None:
        if (iterations is None) == (bpp is None):
            raise ArgumentError("give exactly one of -n or --bpp")
        source = read_input(job.input)
        complete(job, source, strict, quiet, None)
        data = files.truncate(source, iterations=iterations, bpp=bpp, allow_cut=True)
        write_output(job.output, data, force)
        if not quiet:
            click.echo(summary(job.target, files.info(data)), err=True)

    _run(lambda: run_jobs([Job(input, output)], one, force))


@main.command()
@click.argument("input", metavar="INPUT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(input: str, as_json: bool) -> None:
    """Show an .rnnc file's header, iterations and bits per pixel (- for stdin); for a file
    cut inside an iteration, its complete ones and where the cut is."""
    d: dict[str, Any] = _run(lambda: files.info(read_input(input), allow_cut=True).as_dict())
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    runs = [f"{name}×{len(list(group))}"
            for name, group in itertools.groupby(d["coder_per_iteration"])]
    d["coder"] += f" ({', '.join(runs)})" if d["coder"] == "best" else ""
    for key in ("width", "height", "mode", "model", "weights", "coder", "tile", "iterations",
                "filter", "bytes"):
        click.echo(f"{key:<11}{d[key]}")
    if d["cut"]:
        click.echo(f"{'cut':<11}{d['cut']} ({plural(d['iterations'], 'complete iteration')} "
                   "before it)")
    click.echo(f"{'bpp':<11}" + " ".join(f"{b:.4f}" for b in d["bpp_per_iteration"]))
    if d["adaptive"]:  # the fraction of blocks each iteration codes
        click.echo(f"{'active':<11}" + " ".join(f"{a:.4f}" for a in d["active_per_iteration"]))


@main.command()
def models() -> None:
    """List the registered models."""
    for spec in MODELS.values():
        mark = "*" if spec.name == DEFAULT_MODEL else " "
        state = "" if spec.path.exists() else "  (weights missing)"
        click.echo(f"{mark} {spec.name:<18}{spec.tune:<9}{spec.description}{state}")


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
        kind: dict[str, Callable[[str], Any]] = {
            "int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}
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
@click.option("--tune", type=click.Choice(TUNES), default=TUNES[0], show_default=True,
              help="The metric the training favoured, recorded in the file: the per-image "
                   "filter fits for it.")
@force_opt
def export(checkpoint: Path, output: Path, data: str, images: int, tune: str,
           force: bool) -> None:
    """Turn a training checkpoint (or a run's model.safetensors) into shippable fp16 weights
    with entropy tables."""
    from .export import export as run_export

    def body() -> str:
        with atomic_output(output, force) as tmp:
            return run_export(checkpoint, tmp, data, output.stem, images, tune=tune).hex()

    click.echo(f"{output}: weights {_run(body)}")


KODAK_URL = "https://r0k.us/graphics/kodak/"  # the Kodak Lossless True Color Image Suite


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
    _run(lambda: require("web", "rnncodec serve"))
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
@click.option("--iterations", type=click.IntRange(1, MAX_ITERATIONS),
              default=DEFAULT_ITERATIONS, show_default=True,
              help="Model iterations to evaluate: 1 to N, from one encode.")
@click.option("--effort", "efforts", multiple=True, type=click.IntRange(min=0),
              help="Search the bits of the first N iterations (see compress --effort); repeat "
                   "to evaluate the models at several (default: 0).")
@click.option("--filter-iterations", "filtered", type=click.IntRange(0, MAX_ITERATIONS),
              default=0,
              help="Also evaluate the models with the filter (see compress --filter) at 1 to N "
                   "iterations: one encode, cut after each and given a filter fitted to the cut "
                   "(default: 0, none).")
@click.option("--filter-effort", "filter_efforts", multiple=True, type=click.IntRange(min=0),
              help="The efforts at which to evaluate the filter; repeat for several "
                   "(default: 0).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("--out", default="rnncodec-results", show_default=True,
              type=click.Path(path_type=Path),
              help="Folder for results.json, results.csv and the plots.")
@click.option("--report", type=click.Path(path_type=Path),
              help="The markdown report to write (default: results.md in --out).")
@click.option("--cache", type=click.Path(path_type=Path),
              help="Per-point cache, JSON lines (default: ~/.cache/rnncodec/evaluate.jsonl).")
@quiet_opt
def evaluate(dataset: Path | None, models: tuple[str, ...], codecs: str | None,
             qualities: str | None, iterations: int, efforts: tuple[int, ...],
             filtered: int, filter_efforts: tuple[int, ...], limit: int | None, out: Path,
             report: Path | None, cache: Path | None, quiet: bool) -> None:
    """Rate–distortion, speed and memory of the models and standard codecs on a folder of
    images (default: Kodak in ../shared/data/kodak); writes JSON, CSV, plots and a report
    (default: into ./rnncodec-results)."""
    import shlex

    _run(lambda: require("eval", "rnncodec evaluate"))
    from .errors import InputMissingError
    from .evaluate import codecs as adapters
    from .evaluate import report as reporting
    from .evaluate import results, runner

    report = report or out / "results.md"

    def body() -> None:
        folder = dataset or runner.DEFAULT_DATASET
        if dataset is None and not folder.is_dir():
            raise InputMissingError(f"no DATASET given and {folder} does not exist: put the 24 "
                                    f"Kodak images there (kodim01.png to kodim24.png, from "
                                    f"{KODAK_URL}) or name a folder of images")
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
