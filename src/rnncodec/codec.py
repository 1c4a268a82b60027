"""The public codec: image → residual loop → bits → entropy coder → .rnnc bytes, and back.

Read top to bottom: ``compress`` runs the encoder and decoder in a closed loop (the encoder must
see the same reconstruction the decoder will build), emitting one chunk per iteration until the
rate or quality target is met; ``decompress`` replays the decoder over the chunks present.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .entropy import AUTO, CODER_NAMES, coder_name, make_coder, resolve
from .errors import FormatError, InputMissingError, ModelError
from .format import MAX_ITERATIONS, Container, Header, assemble, pack_chunk, parse
from .images import MAX_PIXELS, ImageSource, load_image, to_array, to_image, to_tensor
from .metrics import ms_ssim, psnr
from .networks import BITS
from .zoo import DEFAULT_MODEL, MODELS, LoadedModel, load_model

DEFAULT_ITERATIONS = 16
Progress = Callable[[int], None]  # called with the number of iterations done so far


@dataclass(frozen=True)
class Target:
    """When to stop adding iterations. Exactly one of the fields may be set (else: iterations)."""

    iterations: int | None = None
    bpp: float | None = None
    ms_ssim: float | None = None
    psnr: float | None = None

    def __post_init__(self) -> None:
        set_ = [k for k, v in vars(self).items() if v is not None]
        if len(set_) > 1:
            raise ValueError(f"give only one rate target, not {' and '.join(set_)}")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be between 1 and {MAX_ITERATIONS}")
        if self.bpp is not None and not self.bpp > 0:
            raise ValueError("bpp must be positive")
        if self.ms_ssim is not None and not 0 < self.ms_ssim < 1:
            raise ValueError("ms_ssim must be between 0 and 1")
        if self.psnr is not None and not self.psnr > 0:
            raise ValueError("psnr must be positive")

    @property
    def max_iterations(self) -> int:
        return self.iterations or DEFAULT_ITERATIONS

    @property
    def measures_quality(self) -> bool:
        return self.ms_ssim is not None or self.psnr is not None

    def quality_reached(self, original: np.ndarray, decoded: np.ndarray) -> bool:
        if self.ms_ssim is not None:
            return ms_ssim(original, decoded) >= self.ms_ssim
        if self.psnr is not None:
            return psnr(original, decoded) >= self.psnr
        return False


def _code_shape(header: Header) -> tuple[int, int, int]:
    return BITS, math.ceil(header.height / 16), math.ceil(header.width / 16)


def iterate_codes(model: LoadedModel, x: torch.Tensor) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (codes, reconstruction) for iteration 1, 2, ... of one padded image.

    Inference mode is entered per step, never across a ``yield``: a suspended generator would
    otherwise leave gradients switched off in its caller.
    """
    net = model.net
    state = net.initial_state(x)
    while True:
        with torch.inference_mode():
            bits, state = net.encode_step(x, state, stochastic=False)
            state = net.decode_step(bits, state)
            codes = (bits[0] > 0).to(torch.uint8).numpy()
        yield codes, state.recon


def compress(image: ImageSource, *, iterations: int | None = None, bpp: float | None = None,
             ms_ssim: float | None = None, psnr: float | None = None,
             model: str = DEFAULT_MODEL, coder: str = AUTO,
             max_pixels: int = MAX_PIXELS, progress: Progress | None = None) -> bytes:
    """Compress an image (PIL image, array, path or encoded bytes) to .rnnc bytes.

    Rate control: a fixed number of ``iterations`` (default 16, i.e. 2 bpp before entropy
    coding), the most iterations whose file stays within ``bpp``, or the fewest iterations whose
    decoded image reaches ``ms_ssim`` or ``psnr`` (at most 16, the number the models are trained
    for; all 16 when the target is never reached).
    """
    target = Target(iterations, bpp, ms_ssim, psnr)
    rgb, gray = load_image(image, max_pixels)
    height, width = rgb.shape[:2]
    loaded = load_model(model)
    coder = resolve(coder, loaded.tables)
    bit_coder = make_coder(coder, loaded.tables)
    header = Header(width, height, gray, CODER_NAMES[coder], loaded.name, loaded.digest)
    original = np.asarray(to_image(rgb, gray)) if target.measures_quality else None
    out, history = bytearray(header.pack()), []
    steps = iterate_codes(loaded, to_tensor(rgb))
    for i in range(target.max_iterations):
        codes, recon = next(steps)
        chunk = pack_chunk(i, bit_coder.encode(codes, history))
        history.append(codes)
        if target.bpp is not None and i > 0 and (len(out) + len(chunk)) * 8 > target.bpp * (
                width * height):
            break
        out += chunk
        if progress:
            progress(i + 1)
        if original is not None:
            decoded = np.asarray(to_image(to_array(recon, height, width), gray))
            if target.quality_reached(original, decoded):
                break
    return bytes(out)


def _read_bytes(data: bytes | str | Path) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    path = Path(data)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputMissingError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputMissingError(f"{path} is a directory, not a file") from None
    except OSError as e:
        raise InputMissingError(f"cannot read {path}: {e.strerror}") from None


def _check_model(header: Header, model: str | None) -> LoadedModel:
    """The model that made the file, refusing any other by name and weights hash."""
    try:
        if model is None and header.model not in MODELS:
            # the name comes from the file: it may pick a registered model, never a path here
            raise ModelError(header.model)
        loaded = load_model(model or header.model)
    except ModelError:
        if model is None:
            raise ModelError(f"file was made by model {header.model!r}, which is not installed; "
                             "pass its weights with --model") from None
        raise
    if loaded.digest != header.digest:
        raise ModelError(f"file was made by model {header.model!r} (weights "
                         f"{header.digest.hex()[:12]}), not by {loaded.name!r} (weights "
                         f"{loaded.digest.hex()[:12]})")
    return loaded


def decode_iterations(data: bytes | str | Path, *, model: str | None = None,
                      max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """Yield the decoded image after each iteration stored in the file (progressive decoding)."""
    container = parse(_read_bytes(data))
    header = container.header
    if header.width * header.height > max_pixels:
        raise FormatError(f"file declares {header.width}×{header.height} pixels, over the limit "
                          f"of {max_pixels}")
    if not container.chunks:
        raise FormatError("file holds no iterations")
    coder = coder_name(header.coder)
    loaded = _check_model(header, model)
    bit_coder, net = make_coder(coder, loaded.tables), loaded.net
    shape = _code_shape(header)
    state = None  # allocated once the first chunk has proved the declared size plausible
    history: list[np.ndarray] = []
    for payload in container.chunks:
        codes = bit_coder.decode(payload, shape, history)
        history.append(codes)
        if state is None:
            state = net.initial_state(torch.zeros(1, 3, shape[1] * 16, shape[2] * 16))
        with torch.inference_mode():
            bits = torch.from_numpy(codes).float().unsqueeze(0) * 2 - 1
            state = net.decode_step(bits, state)
        yield to_image(to_array(state.recon, header.height, header.width), header.gray)


def decompress(data: bytes | str | Path, *, iterations: int | None = None,
               model: str | None = None, max_pixels: int = MAX_PIXELS,
               progress: Progress | None = None) -> Image.Image:
    """Decode .rnnc bytes or a path to a PIL image (L or RGB), using at most ``iterations``."""
    if iterations is not None and iterations < 1:
        raise ValueError("iterations must be at least 1")
    image = None
    for i, image in enumerate(decode_iterations(data, model=model, max_pixels=max_pixels)):
        if progress:
            progress(i + 1)
        if iterations is not None and i + 1 >= iterations:
            break
    assert image is not None  # decode_iterations raises on an empty file
    return image


def truncate(data: bytes | str | Path, *, iterations: int | None = None,
             bpp: float | None = None) -> bytes:
    """A shorter file holding the first iterations of another, without re-encoding."""
    if (iterations is None) == (bpp is None):
        raise ValueError("give exactly one of iterations or bpp")
    container = parse(_read_bytes(data))
    n = len(container.chunks)
    if iterations is not None:
        if iterations < 1:
            raise ValueError("iterations must be at least 1")
        n = min(n, iterations)
    else:
        pixels = container.header.width * container.header.height
        while n > 1 and container.size_after(n) * 8 > bpp * pixels:
            n -= 1
    return assemble(container.header, container.chunks[:n])


@dataclass(frozen=True)
class Info:
    header: Header
    iterations: int
    bytes: int
    bpp_per_iteration: list[float]  # bits per pixel of the file cut after each iteration

    def as_dict(self) -> dict[str, object]:
        h = self.header
        return {"width": h.width, "height": h.height, "mode": "L" if h.gray else "RGB",
                "model": h.model, "weights": h.digest.hex(), "coder": coder_name(h.coder),
                "iterations": self.iterations, "bytes": self.bytes,
                "bpp": self.bpp_per_iteration[-1] if self.bpp_per_iteration else 0.0,
                "bpp_per_iteration": self.bpp_per_iteration}


def info(data: bytes | str | Path) -> Info:
    """Header fields, iterations present and the bpp after each of them."""
    raw = _read_bytes(data)
    c: Container = parse(raw)
    pixels = c.header.width * c.header.height
    bpp = [c.size_after(i + 1) * 8 / pixels for i in range(len(c.chunks))]
    return Info(c.header, len(c.chunks), len(raw), bpp)
