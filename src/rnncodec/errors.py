"""The project's error types. Each carries the exit status the CLI returns for it (sysexits.h)."""

from __future__ import annotations


class RnncError(Exception):
    """Base class: every failure the codec reports to a user is one of these."""

    exit_code = 1


class FormatError(RnncError):
    """A file that is not a valid .rnnc stream: foreign, corrupt or truncated inside a chunk."""

    exit_code = 65  # EX_DATAERR


class ImageError(RnncError):
    """An input image that cannot be read or is not acceptable (e.g. too many pixels)."""

    exit_code = 65  # EX_DATAERR


class ModelError(RnncError):
    """Missing or unreadable weights, or a file made by another model."""

    exit_code = 65  # EX_DATAERR


class ArgumentError(RnncError, ValueError):
    """A bad argument: out of range, conflicting with another, or asking for more iterations
    than a file holds. Also a ValueError, which such mistakes have always been in Python."""

    exit_code = 2  # bad usage, as for the command line's own option errors


class InputMissingError(RnncError):
    """An input path that does not exist or cannot be read."""

    exit_code = 66  # EX_NOINPUT


class OutputError(RnncError):
    """An output that exists (without --force) or cannot be written."""

    exit_code = 73  # EX_CANTCREAT


class MissingExtraError(RnncError, ImportError):
    """An optional part of rnncodec that is not installed (extras.py); the message names the
    pip command that installs it. Also an ImportError, which it is underneath."""

    exit_code = 69  # EX_UNAVAILABLE


class RnncWarning(UserWarning):
    """Something done to a caller's data that it may not expect (e.g. transparency dropped);
    the command line prints these as warnings."""
