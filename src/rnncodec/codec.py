"""The public codec: image → residual loop → bits → entropy coder → .rnnc bytes, and back.

Read top to bottom: ``compress`` runs the encoder and decoder in a closed loop (the encoder must
see the same reconstruction the decoder will build), emitting one chunk per iteration until the
rate or quality target is met; ``decompress`` replays the decoder over the chunks present.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import postfilter as filters
from .defaults import DEFAULT_ITERATIONS, MAX_PIXELS
from .entropy import AUTO, CODER_NAMES, BitCoder, coder_name, make_coder, resolve
from .errors import FormatError, ImageError, ModelError
from .files import Info, info, read_bytes, truncate  # noqa: F401 (part of this module's API)
from .format import MAX_ITERATIONS, Container, Header, assemble, pack_chunk, parse
from .images import ImageSource, load_image, to_array, to_image, to_tensor
from .metrics import ms_ssim, psnr
from .networks import BITS
from .refine import refine, signs
from .tiling import (
    AUTO_TILE_PIXELS,
    MAX_REGION_PIXELS,
    SEARCH_TILE_PIXELS,
    Tile,
    choose_tile,
    describe,
    padded_pixels,
    place,
    plan,
    region_overflow,
    waves,
)
from .zoo import DEFAULT_MODEL, MODELS, LoadedModel, load_model

# called with the number of iterations done so far (tiled: iterations' worth of tile work);
# decompress calls it from its worker threads
Progress = Callable[[int], None]
# called with the file so far (a valid file, cut after the iteration just coded) and that cut's
# decoded pixels (H×W×3 uint8), before the next iteration starts
Arrival = Callable[[bytes, np.ndarray], None]


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


_threads = threading.Lock()
_users = 0  # threads inside a codec step now
_saved_threads = 1  # the callers' intra-op threads, read when the first of those steps began
_local = threading.local()  # ``depth``: this thread's nesting of network steps
# Under OpenMP (PyTorch's CPU builds) the thread count is kept per thread, once a thread has
# run any parallel work; other backends keep one count for the whole process.
_PER_THREAD = "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextmanager
def network_step() -> Iterator[None]:
    """Inference mode on one intra-op thread: decoded pixels must not depend on the thread count.

    Convolutions over small feature maps split their sums across threads, so decoding with 1 and
    2 threads could give pixels one level apart; on one thread the order is fixed. Every thread
    sets its own count on entry, since under OpenMP one thread's setting does not reach another
    that has already run parallel work; on exit it gets the callers' count back (per-process
    backends only when the last concurrent step ends). Entered per step, never across a
    ``yield``, like inference mode.
    """
    global _users, _saved_threads
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        with _threads:
            if _users == 0:
                _saved_threads = torch.get_num_threads()
            _users += 1
            torch.set_num_threads(1)
    _local.depth = depth + 1
    try:
        with torch.inference_mode():
            yield
    finally:
        _local.depth = depth
        if depth == 0:
            with _threads:
                _users -= 1
                if _users == 0 or _PER_THREAD:
                    torch.set_num_threads(_saved_threads)


def caller_threads() -> int:
    """The intra-op threads the codec's callers have: the count saved when a step is running
    anywhere (a step sets one thread, which a thread starting now would inherit), else torch's."""
    with _threads:
        return _saved_threads if _users else torch.get_num_threads()


def _code_shape(width: int, height: int) -> tuple[int, int, int]:
    return BITS, math.ceil(height / 16), math.ceil(width / 16)


def _signed(codes: np.ndarray) -> torch.Tensor:
    """32×h×w codes in {0, 1} → 1×32×h×w bits in {-1, +1}, the decoder's input."""
    return torch.from_numpy(codes).float().unsqueeze(0) * 2 - 1


def _unsigned(bits: torch.Tensor) -> np.ndarray:
    """1×32×h×w bits in {-1, +1} → 32×h×w codes in {0, 1}, the inverse of ``_signed``."""
    return (bits[0] > 0).to(torch.uint8).numpy()


def _rate(model: LoadedModel, previous: list[np.ndarray]) -> Callable[[torch.Tensor], float]:
    """Bits per pixel of candidate bits (1×32×h×w, ±1) under the context coder, the bit
    search's estimate of what they will cost (the context coder takes milliseconds)."""
    coder = make_coder("context", model.tables)

    def rate(bits: torch.Tensor) -> float:
        codes = _unsigned(bits)
        return 8 * len(coder.encode(codes, previous)) / (codes.shape[1] * codes.shape[2] * 256)

    return rate


def encode_tile(model: LoadedModel, rgb: np.ndarray, tile: Tile,
                maps: Sequence[np.ndarray], effort: int = 0) -> Iterator[torch.Tensor]:
    """Run one tile's closed loop: step t writes the tile's own codes into the whole-image code
    map ``maps[t]`` and yields the reconstruction of the tile's region.

    The context blocks (above and left) must already hold the earlier tiles' codes: the decoder
    is fed those instead of what this tile's encoder made of them, exactly as ``decode_tile``
    will be. Inference mode is entered per step, never across a ``yield``: a suspended
    generator would otherwise leave gradients switched off in its caller. The first ``effort``
    iterations search for better bits than the encoder's (refine.py).
    """
    net = model.net
    height, width = rgb.shape[:2]
    ys, xs = tile.region(height, width)
    x = to_tensor(rgb[ys, xs])
    state = net.initial_state(x)
    context = None  # the blocks whose bits earlier tiles chose, when there are any
    if tile.top or tile.left:
        context = torch.ones(1, 1, *maps[0][:, slice(*tile.rows), slice(*tile.cols)].shape[1:],
                             dtype=torch.bool)
        context[..., tile.top:, tile.left:] = False
    for t in itertools.count():
        region = maps[t][:, slice(*tile.rows), slice(*tile.cols)]
        with network_step():
            soft, state = net.encode_soft(x, state)
            if context is not None:
                soft = torch.where(context, _signed(region), soft)
        if t < effort:
            previous = [m[:, slice(*tile.rows), slice(*tile.cols)] for m in maps[:t]]
            bits = refine(net, x, state, soft, context, rate=_rate(model, previous))
        else:
            bits = signs(soft)
        region[:, tile.top:, tile.left:] = _unsigned(bits)[:, tile.top:, tile.left:]
        with network_step():
            state = net.decode_step(bits, state)
        yield state.recon


def iterate_codes(model: LoadedModel, rgb: np.ndarray, effort: int = 0,
                  ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (codes, reconstruction of the padded image) for iteration 1, 2, ... of an image
    coded whole: ``compress``'s closed loop on one tile."""
    height, width = rgb.shape[:2]
    maps: list[np.ndarray] = []
    loop = encode_tile(model, rgb, plan(width, height, 0)[0], maps, effort)
    while True:
        maps.append(np.zeros(_code_shape(width, height), np.uint8))
        recon = next(loop)  # writes this iteration's codes into maps[-1]
        yield maps[-1], recon


def decode_tile(model: LoadedModel, tile: Tile,
                maps: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
    """The reconstruction of one tile's region after step t = 0, 1, ... from ``maps[t]``."""
    net = model.net
    state = None  # allocated at the first step, once the caller has decoded a first chunk
    for t in itertools.count():
        bits = _signed(np.ascontiguousarray(maps[t][:, slice(*tile.rows), slice(*tile.cols)]))
        if state is None:
            state = net.initial_state(torch.zeros(1, 3, bits.shape[2] * 16, bits.shape[3] * 16))
        with network_step():
            state = net.decode_step(bits, state)
        yield state.recon


def _paste(image: np.ndarray, tile: Tile, recon: torch.Tensor) -> None:
    """Write a tile's pixels from its region's reconstruction (see ``tiling.place``)."""
    ys, xs = tile.region(*image.shape[:2])
    place(image, tile, to_array(recon, ys.stop - ys.start, xs.stop - xs.start))


def _tile_progress(progress: Progress | None, tiles: int) -> Callable[[], None]:
    """Called once per tile step, in any order and from any thread: reports iterations' worth
    of work (steps // tiles), each count once."""
    lock, steps, last = threading.Lock(), 0, 0

    def step_done() -> None:
        nonlocal steps, last
        with lock:
            steps += 1
            if progress and steps // tiles > last:
                last = steps // tiles
                progress(last)

    return step_done


def _workers(tiles: list[Tile]) -> int:
    """Tiles coded at once: the caller's torch threads (each tile's steps run on one; see
    ``caller_threads``), no more than keep the regions in flight within ``MAX_REGION_PIXELS``
    together (one at least)."""
    fit = MAX_REGION_PIXELS // max(t.pixels for t in tiles)
    return max(1, min(caller_threads(), len(tiles), fit))


def encode_lockstep(model: LoadedModel, rgb: np.ndarray, tiles: list[Tile],
                    keep_images: bool, effort: int = 0,
                    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (codes, decoded pixels if ``keep_images``) for iteration 1, 2, ..., running every
    tile one step per iteration (memory: all tiles' network state at once, as untiled)."""
    maps: list[np.ndarray] = []
    loops = [encode_tile(model, rgb, tile, maps, effort) for tile in tiles]
    while True:
        maps.append(np.zeros(_code_shape(rgb.shape[1], rgb.shape[0]), np.uint8))
        image = np.empty_like(rgb) if keep_images else None
        for tile, loop in zip(tiles, loops):
            recon = next(loop)
            if image is not None:
                _paste(image, tile, recon)
        yield maps[-1], image


def encode_by_tile(model: LoadedModel, rgb: np.ndarray, tiles: list[Tile], iterations: int,
                   keep_images: bool, progress: Progress | None = None, effort: int = 0,
                   ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The same as ``encode_lockstep`` (bit for bit), computed tile by tile through all
    ``iterations`` first: memory grows with the tiles in flight (one per torch thread; one at a
    time with ``keep_images``), plus the codes (2 bytes per pixel at 16 iterations) and, with
    ``keep_images``, each iteration's decoded pixels (3 bytes per pixel per iteration, for
    quality targets)."""
    maps = [np.zeros(_code_shape(rgb.shape[1], rgb.shape[0]), np.uint8)
            for _ in range(iterations)]
    images = np.empty((iterations, *rgb.shape), np.uint8) if keep_images else None
    step_done = _tile_progress(progress, len(tiles))

    def run(tile: Tile) -> None:
        for t, recon in zip(range(iterations), encode_tile(model, rgb, tile, maps, effort)):
            if images is not None:
                _paste(images[t], tile, recon)
            step_done()

    if images is not None:  # pixels are pasted in raster order (tiling.place)
        for tile in tiles:
            run(tile)
    else:  # the tiles of one anti-diagonal at once, each on one thread (see network_step);
        # searched tiles one at a time, for memory (the search itself uses all threads)
        with ThreadPoolExecutor(1 if effort else _workers(tiles)) as pool:
            for wave in waves(tiles):
                list(pool.map(run, wave))
    for t in range(iterations):
        yield maps[t], None if images is None else images[t]


def compress(image: ImageSource, *, iterations: int | None = None, bpp: float | None = None,
             ms_ssim: float | None = None, psnr: float | None = None,
             model: str = DEFAULT_MODEL, coder: str = AUTO, tile: int | None = None,
             effort: int = 0, postfilter: bool = False, max_pixels: int = MAX_PIXELS,
             progress: Progress | None = None, on_iteration: Arrival | None = None) -> bytes:
    """Compress an image (PIL image, array, path or encoded bytes) to .rnnc bytes.

    Rate control: a fixed number of ``iterations`` (default 16, i.e. 2 bpp before entropy
    coding), the most iterations whose file stays within ``bpp``, or the fewest iterations whose
    decoded image reaches ``ms_ssim`` or ``psnr`` (at most 16, the number the models are trained
    for; all 16 when the target is never reached).

    ``tile``: the side in pixels of the tiles the networks run on (a multiple of 16, at least
    64; see tiling.py), 0 for the whole image at once, None (default) to tile only images over
    about 2 megapixels in whole 16-pixel blocks (ValueError for 0, or tiles, that would run the
    networks over more than ``tiling.MAX_REGION_PIXELS`` at once). Tiled coding runs every tile through the most iterations the target
    allows before writing any, so rate and quality targets cost that much network work; quality
    targets also keep every iteration's decoded pixels (3 bytes per pixel per iteration).

    ``effort``: how many of the first iterations search for better bits than the encoder's
    (refine.py), 0 (default) for none. The gain is largest at the lowest rates: on Kodak
    ``effort=2`` raised MS-SSIM by 0.009 after 1 iteration and 0.003 after 2 for 1.1% and 0.9%
    more bytes, and encoded 2 iterations in 34 s instead of 1.2 s; ``effort=8`` added 0.0004
    after 8 iterations (0.0002 more than ``effort=2``) and took 134 s instead of 4. The files
    decode as any other. With a search, ``tile=None`` tiles images over about 0.5 megapixels,
    for memory.

    ``postfilter``: fit a filter to the image after the last iteration and send it along when
    it is worth its bytes (postfilter.py); it costs about 240 bytes, an encode-time fit on a
    crop of at most 768×768 pixels and, for tiled images, a decode. Off by default: the gain is
    small for the encoding time.

    ``on_iteration``: called after each iteration the file keeps, with the file cut there and
    its decoded pixels, so that a viewer can show the image as it is coded (tiled images: once
    every tile has run all its iterations). The cuts carry no filter.
    """
    if effort < 0:
        raise ValueError("effort must be at least 0")
    target = Target(iterations, bpp, ms_ssim, psnr)
    rgb, gray = load_image(image, max_pixels)
    height, width = rgb.shape[:2]
    if padded_pixels(width, height) > max_pixels:  # the networks code whole blocks, and the
        # decoder counts them: a file this writes decodes under the same limit
        raise ImageError(f"image of {describe(width, height)} exceeds the limit of "
                         f"{max_pixels} pixels")
    tile = choose_tile(tile, width, height, SEARCH_TILE_PIXELS if effort else AUTO_TILE_PIXELS)
    loaded = load_model(model)
    coder = resolve(coder)
    bit_coder = make_coder(coder, loaded.tables)
    header = Header(width, height, gray, CODER_NAMES[coder], loaded.name, loaded.digest, tile)
    original = np.asarray(to_image(rgb, gray)) if target.measures_quality else None
    tiles = plan(width, height, tile)
    watched = on_iteration is not None
    steps = encode_by_tile(loaded, rgb, tiles, target.max_iterations,
                           target.measures_quality or watched, progress, effort) if tile else \
        encode_lockstep(loaded, rgb, tiles, target.measures_quality or postfilter or watched,
                        effort)
    out, history, payloads = bytearray(header.pack()), list[np.ndarray](), list[bytes]()
    last: np.ndarray | None = None  # the decoded pixels after the last chunk kept
    for i, (codes, decoded) in zip(range(target.max_iterations), steps):
        payload = bit_coder.encode(codes, history)
        chunk = pack_chunk(i, payload)
        history.append(codes)
        if target.bpp is not None and i > 0 and (len(out) + len(chunk)) * 8 > target.bpp * (
                width * height):
            break
        out += chunk
        payloads.append(payload)
        last = decoded
        if progress and not tile:
            progress(i + 1)
        if on_iteration is not None and decoded is not None:
            on_iteration(bytes(out), decoded)
        if original is not None and decoded is not None and target.quality_reached(
                original, np.asarray(to_image(decoded, gray))):
            break
    if not postfilter or not filters.applies(width, height):
        return bytes(out)
    if last is None:  # tiled: the pixels were not kept, so decode them as decompress will
        last = _decode_rgb(loaded, header, history[:len(payloads)])
    return _with_filter(bytes(out), header, payloads, rgb, last, target.bpp)


def _with_filter(data: bytes, header: Header, payloads: list[bytes], rgb: np.ndarray,
                 decoded: np.ndarray, bpp: float | None) -> bytes:
    """The file with a filter fitted to ``decoded``, if the filter pays for itself
    (``postfilter.worth``) within the rate limit ``bpp``; else ``data`` as it is."""
    pixels = header.width * header.height
    f = filters.fit(rgb, decoded)
    filtered = assemble(header, payloads, f.pack())
    if bpp is not None and len(filtered) * 8 > bpp * pixels:
        return data
    gain, before = filters.gain_db(f, rgb, decoded)
    cost = (len(filtered) - len(data)) * 8 / pixels
    return filtered if filters.worth(gain, cost, before, len(data) * 8 / pixels) else data


def add_filter(data: bytes | str | Path, image: ImageSource, *, model: str | None = None,
               max_pixels: int = MAX_PIXELS, decoded: np.ndarray | None = None) -> bytes:
    """The file with a filter fitted anew to the image after all its iterations (replacing any
    it had), or with none when the filter does not pay for itself (``postfilter.worth``).

    ``image`` is the original the file was made from. This gives a cut file (``truncate``) a
    filter of its own again: the result is the file ``compress`` would have made with that many
    iterations, since a file's first iterations do not depend on how many follow. Costs one
    decode and a fit; a caller that holds the file's pixels, unfiltered (H×W×3 uint8, as
    ``decode_iterations`` gives them for its last iteration), passes them as ``decoded`` and
    saves the decode. A grayscale file's decoded pixels are one channel of the networks' three,
    which the filter reads, so those are refused.
    """
    container, loaded, bit_coder = _open(data, model, max_pixels)
    header = container.header
    rgb, _ = load_image(image, max_pixels)
    if rgb.shape[:2] != (header.height, header.width):
        raise ImageError(f"the image is {rgb.shape[1]}×{rgb.shape[0]}, the file "
                         f"{header.width}×{header.height}")
    if decoded is not None and (header.gray or decoded.shape != rgb.shape
                                or decoded.dtype != np.uint8):
        raise ValueError("decoded pixels must be a colour file's, H×W×3 uint8 like the image; "
                         f"got {decoded.dtype} {decoded.shape} for a "
                         f"{'grayscale' if header.gray else 'colour'} file")
    plain = assemble(header, container.chunks)
    if not filters.applies(header.width, header.height):
        return plain
    if decoded is None:
        maps: list[np.ndarray] = []
        for maps in _codes(container, bit_coder):
            pass
        decoded = _decode_rgb(loaded, header, maps)
    return _with_filter(plain, header, container.chunks, rgb, decoded, None)


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


def _open(data: bytes | str | Path, model: str | None,
          max_pixels: int) -> tuple[Container, LoadedModel, BitCoder]:
    """Parse a file and check it against the pixel limit (in whole blocks, as the networks
    code it), the largest region the networks may run over, and its model, allocating
    nothing."""
    container = parse(read_bytes(data))
    header = container.header
    if padded_pixels(header.width, header.height) > max_pixels:
        raise FormatError(f"file declares {describe(header.width, header.height)}, over the "
                          f"limit of {max_pixels}")
    problem = region_overflow(header.width, header.height, header.tile)
    if problem:  # its networks' memory would grow with the image, not a bounded region
        raise FormatError(f"file declares {problem}; refused (the encoder codes such images "
                          "in smaller tiles)")
    if not container.chunks:
        raise FormatError("file holds no iterations")
    coder = coder_name(header.coder)
    loaded = _check_model(header, model)
    return container, loaded, make_coder(coder, loaded.tables)


def _codes(container: Container, bit_coder: BitCoder) -> Iterator[list[np.ndarray]]:
    """The code maps of the first 1, 2, ... iterations (one growing list)."""
    shape = _code_shape(container.header.width, container.header.height)
    maps: list[np.ndarray] = []
    for payload in container.chunks:
        maps.append(bit_coder.decode(payload, shape, maps))
        yield maps


def _filter(container: Container, iterations: int) -> filters.Filter | None:
    """The file's filter when the image after all its iterations is wanted (FormatError if it
    is malformed, before any network work)."""
    if container.filter is None or iterations < len(container.chunks):
        return None
    return filters.Filter.unpack(container.filter)


def decode_iterations(data: bytes | str | Path, *, model: str | None = None,
                      max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """Yield the decoded image after each iteration stored in the file (progressive decoding;
    the file's filter, if any, applies to the last).

    Every tile's network state is held from one iteration to the next while all tiles' regions
    together hold at most ``MAX_REGION_PIXELS``. A larger tiled file
    is decoded afresh, tile by tile as ``decompress`` does, for each iteration: memory stays
    bounded, and the time grows with the square of the number of iterations.
    """
    container, loaded, bit_coder = _open(data, model, max_pixels)
    h = container.header
    last = _filter(container, len(container.chunks))
    tiles = plan(h.width, h.height, h.tile)
    held = sum(t.pixels for t in tiles) <= MAX_REGION_PIXELS
    loops: list[Iterator[torch.Tensor]] = []
    for maps in _codes(container, bit_coder):
        if held:
            loops = loops or [decode_tile(loaded, tile, maps) for tile in tiles]
            image = np.empty((h.height, h.width, 3), np.uint8)
            for tile, loop in zip(tiles, loops):
                _paste(image, tile, next(loop))
        else:
            image = _decode_rgb(loaded, h, maps)
        if last is not None and len(maps) == len(container.chunks):
            image = filters.apply(last, image)
        yield to_image(image, h.gray)


def _decode_rgb(loaded: LoadedModel, header: Header, maps: list[np.ndarray],
                progress: Progress | None = None) -> np.ndarray:
    """The H×W×3 pixels after the iterations of ``maps``, before any filter.

    Each tile is decoded through all iterations on its own, so the networks' memory grows with
    the tiles in flight (one per torch thread), not the image (``progress`` then counts
    iterations' worth of work).
    """
    tiles = plan(header.width, header.height, header.tile)
    image = np.empty((header.height, header.width, 3), np.uint8)
    step_done = _tile_progress(progress, len(tiles))

    def final(tile: Tile) -> torch.Tensor:
        for recon in itertools.islice(decode_tile(loaded, tile, maps), len(maps)):
            step_done()
        return recon

    # Tiles need only the codes, so they decode in parallel, each on one thread (see
    # network_step): as many at once as the caller's torch threads, pasted in order.
    with ThreadPoolExecutor(_workers(tiles)) as pool:
        for tile, recon in zip(tiles, pool.map(final, tiles)):
            _paste(image, tile, recon)
    return image


def decompress(data: bytes | str | Path, *, iterations: int | None = None,
               model: str | None = None, max_pixels: int = MAX_PIXELS,
               progress: Progress | None = None) -> Image.Image:
    """Decode .rnnc bytes or a path to a PIL image (L or RGB), using at most ``iterations``
    (the file's filter, if any, applies only when all are used; see ``_decode_rgb`` for
    memory)."""
    if iterations is not None and iterations < 1:
        raise ValueError("iterations must be at least 1")
    container, loaded, bit_coder = _open(data, model, max_pixels)
    n = min(len(container.chunks), iterations or len(container.chunks))
    last = _filter(container, n)
    maps: list[np.ndarray] = []
    for maps in _codes(container, bit_coder):
        if len(maps) == n:
            break
    image = _decode_rgb(loaded, container.header, maps, progress)
    return to_image(image if last is None else filters.apply(last, image), container.header.gray)
