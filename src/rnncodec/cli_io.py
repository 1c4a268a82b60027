"""The command line's inputs and outputs: ``-`` for stdin and stdout, several inputs per call,
outputs written whole or not at all, cut files, and what goes to stderr: errors and warnings as
one line each, progress bars and the summary of what a command wrote.

Light on imports (click, the error types and the torch-free file operations of files.py): the
commands import the codec themselves, so ``info`` and ``truncate`` start without torch.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from . import files
from .defaults import DEFAULT_ITERATIONS
from .errors import (
    ArgumentError,
    FormatError,
    InputMissingError,
    OutputError,
    RnncError,
    RnncWarning,
)

if TYPE_CHECKING:
    from .codec import Encoded

STDIO = "-"  # as an input: stdin; as an output: stdout
# errors a command reports as one line; anything else is a bug and keeps its traceback
REPORTED = (RnncError, ValueError, KeyboardInterrupt, MemoryError)


def describe(e: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for one of the ``REPORTED`` errors."""
    if isinstance(e, RnncError):
        return str(e), e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(e, MemoryError):
        return "out of memory", 1
    return str(e), 2


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"rnncodec: error: {message}", err=True)
    sys.exit(code)


def warn(message: str) -> None:
    click.echo(f"rnncodec: warning: {message}", err=True)


# --- which input goes where -----------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One input and where its result goes (``-``: stdin, stdout)."""

    input: str
    output: str

    @property
    def source(self) -> str:
        """The input's name in messages."""
        return "<stdin>" if self.input == STDIO else self.input

    @property
    def target(self) -> str:
        """The output's name in messages."""
        return "<stdout>" if self.output == STDIO else self.output


def plan_jobs(inputs: Sequence[str], output: str | None, suffix: str) -> list[Job]:
    """Each input's output: ``output`` as given for one input; into the directory ``output``
    names (ending in ``/``, or an existing one when there are several inputs) under the input's
    name with ``suffix``; else beside the input under that name (stdin: to stdout)."""
    if STDIO in inputs and len(inputs) > 1:
        raise ArgumentError("- (stdin) must be the only input")
    folder = None
    if output is not None:
        if not (output.endswith(("/", os.sep)) or (len(inputs) > 1 and Path(output).is_dir())):
            if len(inputs) > 1:
                raise ArgumentError(f"{len(inputs)} inputs need -o to name a directory (ending "
                                    f"in /), not {output}")
            return [Job(inputs[0], output)]
        folder = Path(output)
        if not folder.is_dir():
            raise OutputError(f"directory {folder} does not exist")
    if folder is not None and STDIO in inputs:
        raise ArgumentError("give -o a file name (or -) for what is read from stdin")
    return [Job(src, STDIO if src == STDIO else str(_beside(src, suffix, folder)))
            for src in inputs]


def _beside(src: str, suffix: str, folder: Path | None) -> Path:
    """``src`` with ``suffix`` for its own, in ``folder`` if given."""
    try:
        path = Path(src).with_suffix(suffix)
    except ValueError:  # no name to put a suffix on (".", "/"): the input will be refused
        path = Path(src.rstrip("/\\") + suffix)
    return folder / path.name if folder is not None else path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be looked at): not the same
        return False


def _check_target(job: Job, inputs: Sequence[str], taken: set[str], force: bool) -> None:
    """Refuse, before any work, an output that is an input, that an earlier input of this call
    got, that exists (without ``force``), or a terminal for binary data."""
    if job.output == STDIO:
        _check_terminal(std("wb"), force)
        return
    out = Path(job.output)
    if any(src != STDIO and _same_file(Path(src), out) for src in inputs):
        raise OutputError(f"{out} is an input; refusing to write over it (choose another -o)")
    key = os.path.abspath(out)
    if key in taken:
        raise OutputError(f"{out} is also the output of an earlier input; refusing to replace it")
    taken.add(key)
    check_output(out, force)


def run_jobs(jobs: Sequence[Job], work: Callable[[Job], None], force: bool) -> None:
    """Run ``work`` on each job in turn, reporting a failure as one line (naming the input when
    there are several) and going on; then exit with the first failure's status, if any. An
    interrupt stops at once."""
    inputs = [job.input for job in jobs]
    taken: set[str] = set()
    status = 0
    for job in jobs:
        try:
            _check_target(job, inputs, taken, force)
            work(job)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except REPORTED as e:
            message, code = describe(e)
            if len(jobs) > 1 and job.input not in message:
                message = f"{job.source}: {message}"
            click.echo(f"rnncodec: error: {message}", err=True)
            status = status or code
    if status:
        sys.exit(status)


# --- reading --------------------------------------------------------------------------------


def std(mode: str) -> IO[bytes]:
    """stdin (mode "rb") or stdout ("wb") as a binary stream, as click sees them."""
    return click.open_file(STDIO, mode)


def read_input(name: str) -> bytes | Path:
    """All of stdin for ``-`` (never from a terminal, where it would wait for typing), else the
    path, which the codec reads."""
    if name != STDIO:
        return Path(name)
    stream = std("rb")
    if stream.isatty():
        raise InputMissingError("stdin is a terminal; redirect a file into it (- < FILE)")
    try:
        data = stream.read()
    except OSError as e:
        raise InputMissingError(f"cannot read stdin: {e.strerror or e}") from None
    if not data:
        raise InputMissingError("stdin is empty")
    return data


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --- writing --------------------------------------------------------------------------------


def check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise OutputError(f"{path} exists (use --force to replace it)")
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    if not path.parent.exists():
        raise OutputError(f"directory {path.parent} does not exist")


@contextmanager
def atomic_output(path: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the body succeeds."""
    check_output(path, force)
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


def write_file(path: Path, data: bytes, force: bool) -> None:
    with atomic_output(path, force) as tmp:
        tmp.write_bytes(data)


def _check_terminal(stream: IO[bytes], force: bool) -> None:
    if stream.isatty() and not force:
        raise OutputError("refusing to write binary data to a terminal; redirect stdout "
                          "(or use --force)")


def write_stdout(data: bytes, force: bool) -> None:
    """Write a finished result to stdout in one go, so a failure before it writes nothing."""
    stream = std("wb")
    _check_terminal(stream, force)
    try:
        stream.write(data)
        stream.flush()
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            _silence_stdout()
        raise OutputError(f"cannot write to stdout: {e.strerror or e}") from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    with suppress(OSError, ValueError, io.UnsupportedOperation):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def write_output(name: str, data: bytes, force: bool) -> None:
    """``data`` to stdout for ``-``, else to the file, atomically."""
    if name == STDIO:
        write_stdout(data, force)
    else:
        write_file(Path(name), data, force)


def save_image(name: str, image: Any, fmt: str, force: bool) -> None:
    """A PIL image in format ``fmt`` to stdout for ``-``, else to the file, atomically."""
    if name != STDIO:
        with atomic_output(Path(name), force) as tmp:
            image.save(tmp, format=fmt)
        return
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except OSError as e:
        raise OutputError(f"cannot write a {fmt} image: {e.strerror or e}") from None
    write_stdout(buffer.getvalue(), force)


def image_format(name: str | None, output: str) -> str:
    """The Pillow format to write: the one ``name`` gives (``--format``), else the output's
    suffix, else PNG for stdout."""
    from PIL import Image

    Image.init()
    if name is not None:
        key = name.lower().lstrip(".")
        fmt = Image.EXTENSION.get(f".{key}", key.upper())
        if fmt not in Image.SAVE:
            known = "cannot write" if fmt in Image.OPEN else "unknown image format:"
            raise ArgumentError(f"{known} {name}; use e.g. png, jpeg, webp")
        return fmt
    if output == STDIO:
        return "PNG"
    path = Path(output)
    by_suffix = Image.EXTENSION.get(path.suffix.lower())
    if by_suffix is None:
        raise OutputError(f"cannot tell an image format from the suffix of {path}; "
                          "use e.g. .png")
    if by_suffix not in Image.SAVE:  # Pillow reads some formats it cannot write (.psd, .fits)
        raise OutputError(f"cannot write {by_suffix} images ({path}); use e.g. .png")
    return by_suffix


def format_suffix(name: str | None) -> str:
    """The suffix of default outputs for ``--format`` ``name`` (the name itself when it is one
    of the format's suffixes, as .jpg for jpg): .png without one."""
    if name is None:
        return ".png"
    from PIL import Image

    fmt = image_format(name, STDIO)
    own = f".{name.lower().lstrip('.')}"
    if Image.EXTENSION.get(own) == fmt:
        return own
    return next((ext for ext, f in Image.EXTENSION.items() if f == fmt), ".png")


# --- warnings -------------------------------------------------------------------------------


@contextmanager
def reported_warnings(source: str, quiet: bool) -> Iterator[None]:
    """Print the codec's RnncWarnings raised in the body as warning lines naming ``source``
    (none with ``quiet``); other warnings go on as Python shows them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RnncWarning)
        yield
    for w in caught:
        if not issubclass(w.category, RnncWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        elif not quiet:
            warn(f"{source}: {w.message}")


@contextmanager
def progress(total: int | None, label: str, quiet: bool) -> Iterator[Callable[[int], None]]:
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


# --- what a command did ---------------------------------------------------------------------


def summary(name: str, i: files.Info) -> str:
    """The line that says what a file holds: iterations, filter, bytes, bits per pixel."""
    return (f"{name}: {plural(i.iterations, 'iteration')}{', filtered' if i.filtered else ''}, "
            f"{i.bytes} bytes, {i.bpp_per_iteration[-1]:.4f} bpp")


def report_compress(job: Job, result: Encoded, bpp: float | None, ms_ssim: float | None,
                    psnr: float | None) -> None:
    """The summary line, with the quality reached for a quality target, and a warning for a
    target the file misses."""
    written = files.info(result.data)
    line = summary(job.target, written)
    reached = f"MS-SSIM {result.ms_ssim:.4f}" if result.ms_ssim is not None else \
        f"PSNR {result.psnr:.2f} dB" if result.psnr is not None else None
    click.echo(line + (f", {reached}" if reached else ""), err=True)
    short = (ms_ssim is not None and result.ms_ssim is not None and result.ms_ssim < ms_ssim) \
        or (psnr is not None and result.psnr is not None and result.psnr < psnr)
    if short:
        asked = f"MS-SSIM {ms_ssim:g}" if ms_ssim is not None else f"PSNR {psnr:g} dB"
        most = ", the most a quality target uses" \
            if result.iterations == DEFAULT_ITERATIONS else ""
        warn(f"{job.source}: {asked} not reached: {reached} after "
             f"{plural(result.iterations, 'iteration')}{most}")
    got = written.bpp_per_iteration[-1]
    if bpp is not None and got > bpp:
        warn(f"{job.source}: {bpp:g} bpp not reached: its first iteration takes {got:.4f} bpp "
             "(a file keeps at least one)")


def complete(job: Job, source: bytes | Path, strict: bool, quiet: bool,
             wanted: int | None) -> files.Info:
    """The file's info, refusing a cut file when ``strict`` and else warning that only its
    complete iterations are used (unless ``wanted`` asks for more, which is an error)."""
    info = files.info(source, allow_cut=True)
    if info.cut is None:
        return info
    whole = plural(info.iterations, "complete iteration")
    if strict:
        raise FormatError(f"{info.cut}; it holds {whole} (--strict refuses cut files)")
    if info.iterations == 0:
        raise FormatError(info.cut)
    if not quiet and (wanted or 0) <= info.iterations:
        warn(f"{job.source}: {info.cut}; using the {whole} before it")
    return info
