"""The engine: the networks' residual loop over the tiles, and how it is run on threads.

``codec`` (the public API) reads like the data path: image → residual loop → bits → entropy
coder → file. This module is its residual loop: what ``codec`` calls to turn pixels into each
iteration's codes and codes back into pixels, knowing nothing of entropy coders or the file
format (but for the bit search's rate estimate).

- One tile's loop: ``encode_tile`` (the encoder and decoder in a closed loop: the encoder must
  see the reconstruction the decoder will build) and ``decode_tile``; ``iterate_codes`` is an
  image coded whole, one tile.
- Schedules over the tiles (tiling.py): ``encode_lockstep`` runs every tile one iteration at a
  time, ``encode_by_tile`` each tile through all iterations, on as many threads as tiles fit
  (``_workers``); ``decode_pixels`` decodes tiles in parallel, ``decode_progressive`` yields
  the image after each iteration.
- Threads: ``network_step`` runs each step on one intra-op thread, so pixels do not depend on
  the thread count; a tile's step runs on bands of its rows at once, one per thread the tiles
  leave over (``_banded``, bands.py), with the same result.
- Adaptive rates: given ``stop_db``, each tile's blocks stop once their PSNR reaches it
  (adaptive.py); a stopped block holds ``STOPPED`` in the code maps, which the decoder reads
  as zeros.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import TypeVar

import numpy as np
import torch

from . import bands
from .adaptive import block_psnr, still_active
from .cells import State
from .defaults import MAX_REGION_PIXELS, STOPPED
from .entropy import make_coder
from .entropy.neural import levels
from .frameworks import CodingState, RNNCompressor
from .images import to_array, to_tensor
from .networks import BITS
from .refine import refine, signs
from .tiling import Tile, place, plan, waves
from .zoo import LoadedModel

# called with the number of iterations done so far (tiled: iterations' worth of tile work);
# decoding calls it from its worker threads
Progress = Callable[[int], None]
S = TypeVar("S")
# The decoder's pixels before any codes: its reconstruction starts at zeros, mid-grey
GREY = int(to_array(torch.zeros(1, 3, 1, 1), 1, 1)[0, 0, 0])


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


@functools.cache
def _band_pool() -> ThreadPoolExecutor:
    """The threads bands run on, kept from step to step: a fresh thread's first steps are
    slower (its memory allocator and the convolutions' scratch space start cold)."""
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="rnncodec-band")


def _banded(step: Callable[[torch.Tensor, CodingState], S], inputs: torch.Tensor,
            state: CodingState, split: list[bands.Band]) -> S:
    """``step(inputs, state)``, a network step over a region, run on the bands ``split`` of
    its rows at once, each on its own thread (bands.py): the same result, bit for bit. Each
    band's inputs and results are held besides the region's while the step runs."""
    height = state.recon.shape[-2]

    def run(band: bands.Band) -> S:
        with network_step():
            return step(*bands.crop((inputs, state), band, height))

    with network_step():  # entered first here, so that it keeps this thread's count
        if len(split) == 1:
            return step(inputs, state)
        return bands.join(list(_band_pool().map(run, split)), split, height)


def _encode_soft(net: RNNCompressor, x: torch.Tensor, state: CodingState,
                 threads: int) -> tuple[torch.Tensor, CodingState]:
    """``net.encode_soft`` on up to ``threads`` bands (``_banded``)."""
    def step(x: torch.Tensor, state: CodingState) -> tuple[torch.Tensor, list[State | None]]:
        soft, new = net.encode_soft(x, state)
        return soft, new.enc

    split = bands.plan(net, False, False, x.shape[-2], x.shape[-1], threads)
    soft, enc = _banded(step, x, replace(state, dec=[]), split)  # it reads no decoder state
    return soft, replace(state, enc=enc)


def _decode_step(net: RNNCompressor, bits: torch.Tensor, state: CodingState,
                 threads: int) -> CodingState:
    """``net.decode_step`` on up to ``threads`` bands (``_banded``)."""
    def step(bits: torch.Tensor,
             state: CodingState) -> tuple[torch.Tensor, list[State | None]]:
        new = net.decode_step(bits, state)
        return new.recon, new.dec

    height, width = state.recon.shape[-2:]
    split = bands.plan(net, True, state.dec[0] is None, height, width, threads)
    recon, dec = _banded(step, bits, replace(state, enc=[]), split)  # nor this encoder state
    return replace(state, recon=recon, dec=dec, iteration=state.iteration + 1)


def code_shape(width: int, height: int) -> tuple[int, int, int]:
    return BITS, math.ceil(height / 16), math.ceil(width / 16)


def signed(codes: np.ndarray) -> torch.Tensor:
    """32×h×w codes in {0, 1, STOPPED} → 1×32×h×w bits in {-1, +1, 0}, the decoder's input."""
    return levels(codes).unsqueeze(0)


def unsigned(bits: torch.Tensor) -> np.ndarray:
    """1×32×h×w bits in {-1, +1, 0} → 32×h×w codes in {0, 1, STOPPED}, the inverse of
    ``signed``."""
    return torch.where(bits[0] == 0, STOPPED, (bits[0] > 0).to(torch.uint8)).to(
        torch.uint8).numpy()


def _rate(model: LoadedModel, previous: list[np.ndarray]) -> Callable[[torch.Tensor], float]:
    """Bits per pixel of candidate bits (1×32×h×w, ±1) under the context coder, the bit
    search's estimate of what they will cost (the context coder takes milliseconds)."""
    coder = make_coder("context", model.tables)

    def rate(bits: torch.Tensor) -> float:
        codes = unsigned(bits)
        return 8 * len(coder.encode(codes, previous)) / (codes.shape[1] * codes.shape[2] * 256)

    return rate


def encode_tile(model: LoadedModel, rgb: np.ndarray, tile: Tile,
                maps: Sequence[np.ndarray], effort: int = 0, threads: int = 1,
                stop_db: float | None = None, recons: bool = True
                ) -> Iterator[torch.Tensor | None]:
    """Run one tile's closed loop: step t writes the tile's own codes into the whole-image code
    map ``maps[t]`` and yields the reconstruction of the tile's region.

    The context blocks (above and left) must already hold the earlier tiles' codes: the decoder
    is fed those instead of what this tile's encoder made of them, exactly as ``decode_tile``
    will be. Inference mode is entered per step, never across a ``yield``: a suspended
    generator would otherwise leave gradients switched off in its caller. The first ``effort``
    iterations search for better bits than the encoder's (refine.py). Each step runs on up to
    ``threads`` bands at once (``_banded``). With ``stop_db``, each owned block stops once its
    PSNR, on the image's pixels, reaches it: its bits become zeros. Without ``recons`` it
    yields None once the codes are written, and runs the decoder step that the next iteration
    needs only when that iteration is asked for: the last one's is never run.
    """
    net = model.net
    height, width = rgb.shape[:2]
    ys, xs = tile.region(height, width)
    x = nhwc(to_tensor(rgb[ys, xs]))
    state = net.initial_state(x)
    context = None  # the blocks whose bits earlier tiles chose, when there are any
    if tile.top or tile.left:
        context = torch.ones(1, 1, *maps[0][:, slice(*tile.rows), slice(*tile.cols)].shape[1:],
                             dtype=torch.bool)
        context[..., tile.top:, tile.left:] = False
    active = None  # the blocks still coded (context blocks: as the earlier tiles chose)

    def decode(bits: torch.Tensor) -> None:
        nonlocal state, active
        state = _decode_step(net, nhwc(bits), state, threads)
        if stop_db is not None:
            with torch.inference_mode():
                quality = block_psnr(x, state.recon, ys.stop - ys.start, xs.stop - xs.start)
                active = still_active(active, quality, stop_db)
                if context is not None:
                    active = active | context

    pending = None  # the last iteration's bits, when their decoder step waits (``recons``)
    for t in itertools.count():
        if pending is not None:
            decode(pending)
        region = maps[t][:, slice(*tile.rows), slice(*tile.cols)]
        soft, state = _encode_soft(net, x, state, threads)
        if context is not None:
            with torch.inference_mode():
                soft = torch.where(context, signed(region), soft)
        if t < effort:
            previous = [m[:, slice(*tile.rows), slice(*tile.cols)] for m in maps[:t]]
            bits = refine(net, x, state, soft, context, rate=_rate(model, previous))
        else:
            bits = signs(soft)
        if active is not None:  # stopped blocks send nothing: +0.0, as ``signed`` reads them
            bits = torch.where(active, bits, 0.0)
        region[:, tile.top:, tile.left:] = unsigned(bits)[:, tile.top:, tile.left:]
        if stop_db is not None and context is not None:
            bits = signed(region)  # the context blocks earlier tiles stopped read as zeros
        if recons:
            decode(bits)
            yield state.recon
        else:
            pending = bits
            yield None


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """The layout the networks run in (``zoo`` loads them so): oneDNN's convolutions are faster
    on channels-last tensors. Both sides feed the decoder the same layout, so that they sum in
    the same order and reconstruct the same pixels."""
    return t.contiguous(memory_format=torch.channels_last)


def iterate_codes(model: LoadedModel, rgb: np.ndarray, effort: int = 0,
                  stop_db: float | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (codes, reconstruction of the padded image) for iteration 1, 2, ... of an image
    coded whole: ``compress``'s closed loop on one tile."""
    height, width = rgb.shape[:2]
    maps: list[np.ndarray] = []
    loop = encode_tile(model, rgb, plan(width, height, 0)[0], maps, effort, caller_threads(),
                       stop_db)
    while True:
        maps.append(np.zeros(code_shape(width, height), np.uint8))
        recon = next(loop)  # writes this iteration's codes into maps[-1]
        assert recon is not None  # encode_tile yields reconstructions unless told otherwise
        yield maps[-1], recon


def decode_tile(model: LoadedModel, tile: Tile, maps: Sequence[np.ndarray],
                threads: int = 1) -> Iterator[torch.Tensor]:
    """The reconstruction of one tile's region after step t = 0, 1, ... from ``maps[t]``, each
    step on up to ``threads`` bands at once (``_banded``)."""
    net = model.net
    state = None  # allocated at the first step, once the caller has decoded a first chunk
    for t in itertools.count():
        bits = nhwc(signed(np.ascontiguousarray(maps[t][:, slice(*tile.rows),
                                                          slice(*tile.cols)])))
        if state is None:
            state = net.initial_state(torch.zeros(1, 3, bits.shape[2] * 16, bits.shape[3] * 16))
        state = _decode_step(net, bits, state, threads)
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


def _band_threads(workers: int) -> int:
    """Bands each of ``workers`` tiles coded at once may run on: the threads they leave over."""
    return max(1, caller_threads() // workers)


def encode_lockstep(model: LoadedModel, rgb: np.ndarray, tiles: list[Tile],
                    keep_images: bool, effort: int = 0, stop_db: float | None = None,
                    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (codes, decoded pixels if ``keep_images``) for iteration 1, 2, ..., running every
    tile one step per iteration (memory: all tiles' network state at once, as untiled)."""
    maps: list[np.ndarray] = []
    loops = [encode_tile(model, rgb, tile, maps, effort, _band_threads(1), stop_db, keep_images)
             for tile in tiles]
    while True:
        maps.append(np.zeros(code_shape(rgb.shape[1], rgb.shape[0]), np.uint8))
        image = np.empty_like(rgb) if keep_images else None
        for tile, loop in zip(tiles, loops, strict=True):
            recon = next(loop)
            if image is not None and recon is not None:
                _paste(image, tile, recon)
        yield maps[-1], image


def encode_by_tile(model: LoadedModel, rgb: np.ndarray, tiles: list[Tile], iterations: int,
                   keep_images: bool, progress: Progress | None = None, effort: int = 0,
                   stop_db: float | None = None,
                   ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The same as ``encode_lockstep`` (bit for bit), computed tile by tile through all
    ``iterations`` first: memory grows with the tiles in flight (one per torch thread; one at a
    time with ``keep_images``), plus the codes (2 bytes per pixel at 16 iterations) and, with
    ``keep_images``, each iteration's decoded pixels (3 bytes per pixel per iteration, for
    quality targets)."""
    maps = [np.zeros(code_shape(rgb.shape[1], rgb.shape[0]), np.uint8)
            for _ in range(iterations)]
    images = np.empty((iterations, *rgb.shape), np.uint8) if keep_images else None
    step_done = _tile_progress(progress, len(tiles))

    def run(tile: Tile, threads: int) -> None:
        loop = encode_tile(model, rgb, tile, maps, effort, threads, stop_db, images is not None)
        for t, recon in zip(range(iterations), loop, strict=False):
            if images is not None and recon is not None:
                _paste(images[t], tile, recon)
            step_done()

    if images is not None:  # pixels are pasted in raster order (tiling.place)
        for tile in tiles:
            run(tile, _band_threads(1))
    else:  # the tiles of one anti-diagonal at once, each on its share of the threads (see
        # network_step); searched tiles one at a time, for memory (the search itself uses all
        # threads)
        workers = 1 if effort else _workers(tiles)
        with ThreadPoolExecutor(workers) as pool:
            for wave in waves(tiles):
                share = _band_threads(min(workers, len(wave)))
                list(pool.map(run, wave, [share] * len(wave)))
    for t in range(iterations):
        yield maps[t], None if images is None else images[t]


def decode_pixels(loaded: LoadedModel, width: int, height: int, tile: int,
                  maps: list[np.ndarray], progress: Progress | None = None) -> np.ndarray:
    """The H×W×3 pixels after the iterations of ``maps``, before any filter.

    Each tile is decoded through all iterations on its own, so the networks' memory grows with
    the tiles in flight (one per torch thread), not the image (``progress`` then counts
    iterations' worth of work).
    """
    tiles = plan(width, height, tile)
    image = np.empty((height, width, 3), np.uint8)
    step_done = _tile_progress(progress, len(tiles))
    workers = _workers(tiles)
    threads = _band_threads(workers)

    def final(part: Tile) -> torch.Tensor:
        for t, recon in enumerate(decode_tile(loaded, part, maps, threads), 1):
            step_done()
            if t == len(maps):
                return recon
        raise AssertionError("unreachable: decode_tile steps on for ever")

    # Tiles need only the codes, so they decode in parallel, each on its share of the threads
    # (see network_step): as many at once as the caller's torch threads, pasted in order.
    with ThreadPoolExecutor(workers) as pool:
        for part, recon in zip(tiles, pool.map(final, tiles), strict=True):
            _paste(image, part, recon)
    return image


def decode_progressive(loaded: LoadedModel, width: int, height: int, tile: int,
                       iterations: Iterable[list[np.ndarray]]) -> Iterator[np.ndarray]:
    """The H×W×3 pixels after each iteration, before any filter; ``iterations`` yields the code
    maps of the first 1, 2, ... iterations.

    Every tile's network state is held from one iteration to the next while all tiles' regions
    together hold at most ``MAX_REGION_PIXELS``. A larger tiled image is decoded afresh, tile by
    tile as ``decode_pixels`` does, for each iteration: memory stays bounded, and the time
    grows with the square of the number of iterations.
    """
    tiles = plan(width, height, tile)
    held = sum(t.pixels for t in tiles) <= MAX_REGION_PIXELS
    loops: list[Iterator[torch.Tensor]] = []
    for maps in iterations:
        if held:
            loops = loops or [decode_tile(loaded, t, maps, _band_threads(1)) for t in tiles]
            image = np.empty((height, width, 3), np.uint8)
            for t, loop in zip(tiles, loops, strict=True):
                _paste(image, t, next(loop))
        else:
            image = decode_pixels(loaded, width, height, tile, maps)
        yield image
