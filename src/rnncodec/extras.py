"""The optional parts of rnncodec, and a clear error when one is missing.

``pip install rnncodec`` installs the codec: compress, decompress, info, truncate, models,
train and export. The extras add what other commands need: ``rnncodec[web]`` the viewer
(``rnncodec serve``), ``rnncodec[eval]`` the comparison with standard codecs (``rnncodec
evaluate``), ``rnncodec[train]`` TensorBoard logging, ``rnncodec[test]`` all of these and the
test tools. A command checks its extra before it starts, so a missing one is a one-line error
naming the pip command that installs it, not a traceback halfway through.

Only asks whether the modules can be found: nothing is imported here.
"""

from __future__ import annotations

from importlib.util import find_spec

from .errors import MissingExtraError

# extra → {distribution as pip names it: the modules it installs, any one of which will do}
EXTRAS: dict[str, dict[str, tuple[str, ...]]] = {
    "web": {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",),
            "python-multipart": ("python_multipart", "multipart")},
    "eval": {"bjontegaard": ("bjontegaard",), "matplotlib": ("matplotlib",),
             "scipy": ("scipy",), "imagecodecs": ("imagecodecs",),
             "psnr-hvsm": ("psnr_hvsm",)},
    "train": {"tensorboard": ("tensorboard",)},
}


def _found(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a broken entry
        return False


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` that are not installed, as pip names them."""
    return [name for name, modules in EXTRAS[extra].items()
            if not any(_found(m) for m in modules)]


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``, quoted for any shell."""
    return f"pip install 'rnncodec[{extra}]'"


def require(extra: str, what: str) -> None:
    """Raise MissingExtraError, naming ``what`` needs it and the pip command, unless every
    distribution of ``extra`` is installed."""
    gone = missing(extra)
    if gone:
        raise MissingExtraError(f"{what} needs {', '.join(gone)}, which "
                                f"{'is' if len(gone) == 1 else 'are'} not installed: "
                                f"{install_hint(extra)}")
