"""The public codec: image → residual loop → bits → entropy coder → .rnnc bytes, and back.

Read top to bottom: ``encode`` loads the image and runs the residual loop (``engine``: the
encoder and decoder networks in a closed loop, since the encoder must see the reconstruction
the decoder will build), entropy codes each iteration's bits (``entropy``) into one chunk of
the file (``format``), and stops once the rate or quality target is met. ``decompress`` parses
the file, entropy decodes the chunks present and runs the decoder networks over their codes
(``engine.decode_pixels``); ``decode_iterations`` yields the image after each of them.
Adaptive files (``adaptive=True``, format version 4) also carry, per iteration, the map of the
blocks it codes (``entropy.blockmap``), and only those blocks' codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import engine
from . import postfilter as filters
from .adaptive import DEFAULT_STOP_DB
from .defaults import (
    AUTO_TILE_PIXELS,
    DEFAULT_ITERATIONS,  # noqa: F401 (this module's API)
    MAX_ITERATIONS,  # noqa: F401
    MAX_PIXELS,
    SEARCH_TILE_PIXELS,
    STOPPED,
)
from .engine import Progress
from .entropy import AUTO, CODER_NAMES, BitCoder, blockmap, coder_name, make_coder, resolve
from .errors import ArgumentError, FormatError, ImageError, ModelError
from .files import Info, coded_blocks, holds, info, read_bytes, truncate  # noqa: F401 (API)
from .format import Container, Header, assemble, pack_adaptive, pack_chunk, parse
from .images import ImageSource, load_image, to_image
from .ratecontrol import Encoded, Target, fit_quality, fit_rate
from .tiling import choose_tile, describe, padded_pixels, plan, region_overflow
from .zoo import DEFAULT_MODEL, MODELS, LoadedModel, load_model

# called with the file so far (a valid file, cut after the iteration just coded) and that cut's
# decoded pixels (H×W×3 uint8), before the next iteration starts
Arrival = Callable[[bytes, np.ndarray], None]


def compress(image: ImageSource, *, iterations: int | None = None, bpp: float | None = None,
             ms_ssim: float | None = None, psnr: float | None = None,
             model: str = DEFAULT_MODEL, coder: str = AUTO, tile: int | None = None,
             effort: int = 0, postfilter: bool | None = None, adaptive: bool | None = None,
             max_pixels: int = MAX_PIXELS, progress: Progress | None = None,
             on_iteration: Arrival | None = None) -> bytes:
    """Compress an image (PIL image, array, path or encoded bytes) to .rnnc bytes.

    Rate control: a fixed number of ``iterations`` (default 16, i.e. 2 bpp before entropy
    coding), the most iterations whose file stays within ``bpp``, or the fewest iterations whose
    decoded image reaches ``ms_ssim`` or ``psnr`` (at most 16, the number the models are trained
    for; all 16 when the target is never reached).

    ``tile``: the side in pixels of the tiles the networks run on (a multiple of 16, at least
    64; see tiling.py), 0 for the whole image at once, None (default) to tile only images over
    about 2 megapixels in whole 16-pixel blocks (ArgumentError for 0, or tiles, that would run
    the networks over more than ``defaults.MAX_REGION_PIXELS`` at once). Tiled coding runs every
    tile through the most iterations the target allows before writing any, so rate and quality
    targets cost that much network work; quality targets also keep every iteration's decoded
    pixels (3 bytes per pixel per iteration).

    ``effort``: how many of the first iterations search for better bits than the encoder's
    (refine.py), 0 (default) for none. The search gains most at the lowest rates, where each
    bit carries most, and every searched iteration costs many plain ones in encoding time; the
    files decode as any other. With a search, ``tile=None`` tiles images over
    ``defaults.SEARCH_TILE_PIXELS`` instead, since the search needs far more memory per pixel.

    ``postfilter``: fit a filter to the image after the last iteration for the metric the model
    is tuned for and send it along when it is worth its bytes (postfilter.py); it costs about
    240 bytes, an encode-time fit on a crop of at most 768×768 pixels and, for tiled images, a
    decode. None (default): on for models tuned for PSNR, whose fit is quick least squares; off
    for MS-SSIM ones, whose fit is slow for its gain.

    ``adaptive``: spatially adaptive rates (adaptive.py, format version 4): each 16×16 block
    stops receiving codes once its PSNR reaches a threshold, so later iterations spend their
    bits where the image is still poor. The threshold follows the target. For ``psnr`` it is
    the target itself (the file ends when the image reaches it or every block has stopped),
    unless the image then falls short of it (blocks that never reach it run to the iteration
    limit while the stopped ones lag behind what uniform coding gives them): then it is the
    lowest threshold up to ``adaptive.SEARCH_STOP_DB``'s high end whose image reaches the
    target. For ``ms_ssim`` it is likewise the lowest in ``SEARCH_STOP_DB`` whose image
    reaches the target, and for ``bpp`` the highest whose file fits. Those are found by
    bisection in at most ``adaptive.SEARCH_TRIALS`` whole encodes (that many times the
    encoding time; ``progress`` and ``on_iteration`` follow the first, and when another file
    is returned, ``on_iteration`` starts over with its iterations, from a decode). With
    ``iterations`` (or none) it is ``adaptive.DEFAULT_STOP_DB``. Adaptive rates save most at
    PSNR targets: the stopping rule is a PSNR one. None (default): on when coding a number of
    iterations (one encode, blocks stopping at ``DEFAULT_STOP_DB``; for models of either tune,
    whose files get smaller at equal PSNR and MS-SSIM), off for targets (whose searches take
    several encodes).

    ``on_iteration``: called after each iteration the file keeps, with the file cut there and
    its decoded pixels, so that a viewer can show the image as it is coded (tiled images: once
    every tile has run all its iterations). The cuts carry no filter.
    """
    return encode(image, iterations=iterations, bpp=bpp, ms_ssim=ms_ssim, psnr=psnr,
                  model=model, coder=coder, tile=tile, effort=effort, postfilter=postfilter,
                  adaptive=adaptive, max_pixels=max_pixels, progress=progress,
                  on_iteration=on_iteration).data


def encode(image: ImageSource, *, iterations: int | None = None, bpp: float | None = None,
           ms_ssim: float | None = None, psnr: float | None = None,
           model: str = DEFAULT_MODEL, coder: str = AUTO, tile: int | None = None,
           effort: int = 0, postfilter: bool | None = None, adaptive: bool | None = None,
           max_pixels: int = MAX_PIXELS, progress: Progress | None = None,
           on_iteration: Arrival | None = None) -> Encoded:
    """``compress``, also saying what a quality target reached: the file may fall short of
    it when even the last iteration a target may add does not get there."""
    if effort < 0:
        raise ArgumentError("effort must be at least 0")
    target = Target(iterations, bpp, ms_ssim, psnr)
    rgb, gray = load_image(image, max_pixels)
    height, width = rgb.shape[:2]
    if padded_pixels(width, height) > max_pixels:  # the networks code whole blocks, and the
        # decoder counts them: a file this writes decodes under the same limit
        raise ImageError(f"image of {describe(width, height)} exceeds the limit of "
                         f"{max_pixels} pixels")
    tile = choose_tile(tile, width, height, SEARCH_TILE_PIXELS if effort else AUTO_TILE_PIXELS)
    loaded = load_model(model)
    postfilter = loaded.tune == "psnr" if postfilter is None else postfilter
    if adaptive is None:
        adaptive = target.bpp is None and not target.measures_quality
    coder = resolve(coder)
    bit_coder = make_coder(coder, loaded.tables)
    header = Header(width, height, gray, CODER_NAMES[coder], loaded.name, loaded.digest, tile,
                    adaptive)
    job = _Job(rgb, gray, loaded, bit_coder, header, effort, postfilter, progress, on_iteration)
    if not adaptive:
        return _encode(job, target, None)
    quiet = replace(job, progress=None, on_iteration=None)
    if target.bpp is not None:
        return fit_rate(lambda goal, stop_db, _: _encode(quiet, goal, stop_db), target,
                        width * height)
    if target.measures_quality:
        reported: list[Encoded] = []  # the encode that the callbacks followed

        def encode_at(goal: Target, stop_db: float, loud: bool) -> Encoded:
            result = _encode(job if loud else quiet, goal, stop_db)
            if loud:
                reported.append(result)
            return result

        found = fit_quality(encode_at, target)
        if job.on_iteration is not None and found not in reported:
            _replay(job, found.data)  # the viewer saw another file's iterations
        return found
    return _encode(job, target, DEFAULT_STOP_DB)


@dataclass(frozen=True)
class _Job:
    """What ``encode`` codes, and how: everything but the target and the block threshold."""

    rgb: np.ndarray
    gray: bool
    loaded: LoadedModel
    bit_coder: BitCoder
    header: Header
    effort: int
    postfilter: bool
    progress: Progress | None
    on_iteration: Arrival | None


def _encode(job: _Job, target: Target, stop_db: float | None) -> Encoded:
    """One encode: iterations until the target is met (adaptive files: or every block has
    stopped), blocks stopping at ``stop_db`` when it is set."""
    rgb, gray, loaded, header, progress = job.rgb, job.gray, job.loaded, job.header, job.progress
    width, height, tile = header.width, header.height, header.tile
    original = np.asarray(to_image(rgb, gray)) if target.measures_quality else None
    tiles = plan(width, height, tile)
    keep = target.measures_quality or job.on_iteration is not None  # each iteration's pixels
    steps = engine.encode_by_tile(loaded, rgb, tiles, target.max_iterations, keep, progress,
                                  job.effort, stop_db) if tile else \
        engine.encode_lockstep(loaded, rgb, tiles, keep or job.postfilter, job.effort, stop_db)
    out, history, payloads = bytearray(header.pack()), list[np.ndarray](), list[bytes]()
    last: np.ndarray | None = None  # the decoded pixels after the last chunk kept
    previous: np.ndarray | None = None  # and before it (a PSNR filter's bar reads them)
    quality: float | None = None  # theirs, for a quality target
    coded = np.ones(engine.code_shape(width, height)[1:], bool)  # the blocks coded so far
    for i, (codes, decoded) in zip(range(target.max_iterations), steps, strict=False):
        if header.adaptive:
            coded, was_coded = codes[0] != STOPPED, coded
            if not coded.any():  # every block has stopped
                break
            payload = pack_adaptive(blockmap.encode(coded, was_coded),
                                    job.bit_coder.encode(codes, history, coded))
        else:
            payload = job.bit_coder.encode(codes, history)
        chunk = pack_chunk(i, payload)
        history.append(codes)
        if target.bpp is not None and i > 0 and (len(out) + len(chunk)) * 8 > target.bpp * (
                width * height):
            break
        out += chunk
        payloads.append(payload)
        previous, last = last, decoded
        if progress and not tile:
            progress(i + 1)
        if job.on_iteration is not None and decoded is not None:
            job.on_iteration(bytes(out), decoded)
        if original is not None and decoded is not None:
            quality = target.measure(original, np.asarray(to_image(decoded, gray)))
            if quality is not None and quality >= (target.quality or 0):
                break
    data = bytes(out)
    if job.postfilter and filters.applies(width, height):
        if last is None:  # tiled: the pixels were not kept, so decode them as decompress will
            maps = history[:len(payloads)]
            last = _pixels(loaded, header, maps)
            previous = _pixels(loaded, header, maps[:-1]) if _bar_reads_previous(
                loaded, len(maps)) else None
        data, kept = _with_filter(data, header, payloads, rgb, (previous, last), target.bpp,
                                  loaded.tune)
        if kept is not None and original is not None:
            quality = target.measure(original, np.asarray(to_image(filters.apply(kept, last),
                                                                   gray)))
    return Encoded(data, len(payloads), quality if target.ms_ssim is not None else None,
                   quality if target.psnr is not None else None)


def _replay(job: _Job, data: bytes) -> None:
    """Call ``job.on_iteration`` for each iteration of ``data`` (without its filter), with the
    pixels a decoder makes of it: the encoder's, bit for bit."""
    container = parse(data)
    h = container.header
    images = engine.decode_progressive(job.loaded, h.width, h.height, h.tile,
                                       _codes(container, job.bit_coder))
    assert job.on_iteration is not None
    for n, image in enumerate(images, 1):
        job.on_iteration(assemble(h, container.chunks[:n]), image)


def _pixels(loaded: LoadedModel, header: Header, maps: list[np.ndarray]) -> np.ndarray:
    """The pixels a decoder makes of ``maps``, unfiltered."""
    return engine.decode_pixels(loaded, header.width, header.height, header.tile, maps)


def _bar_reads_previous(loaded: LoadedModel, iterations: int) -> bool:
    """Whether judging a filter needs the pixels before the last of ``iterations``: for a
    PSNR-tuned model (``postfilter.bar_for``), unless there is none but the decoder's grey."""
    return loaded.tune == "psnr" and iterations > 1


def _with_filter(data: bytes, header: Header, payloads: list[bytes], rgb: np.ndarray,
                 decoded: tuple[np.ndarray | None, np.ndarray], bpp: float | None,
                 metric: str) -> tuple[bytes, filters.Filter | None]:
    """The file with a filter fitted for ``metric`` to the pixels after the last iteration and
    the filter, if it pays for itself (``postfilter.worth``) within the rate limit ``bpp``;
    else ``data`` as it is and None. ``decoded`` holds the pixels before the last iteration
    (None: before any, the decoder's grey) and after it."""
    pixels = header.width * header.height
    previous, last = decoded
    f = filters.fit(rgb, last, metric)
    filtered = assemble(header, payloads, f.pack())
    if bpp is not None and len(filtered) * 8 > bpp * pixels:
        return data, None
    gain, before = filters.gain_db(f, rgb, last, metric)
    start = None  # the quality before the last iteration, which a PSNR filter's bar reads
    if metric == "psnr":
        start = filters.quality_db(rgb, np.full_like(last, engine.GREY) if previous is None
                                   else previous, metric)
    last_bpp = len(pack_chunk(len(payloads) - 1, payloads[-1])) * 8 / pixels
    bar = filters.bar_for(metric, before, len(data) * 8 / pixels, start, last_bpp)
    cost = (len(filtered) - len(data)) * 8 / pixels
    return (filtered, f) if filters.worth(gain, cost, bar) else (data, None)


def add_filter(data: bytes | str | Path, image: ImageSource, *, model: str | None = None,
               max_pixels: int = MAX_PIXELS, decoded: np.ndarray | None = None,
               previous: np.ndarray | None = None) -> bytes:
    """The file with a filter fitted anew to the image after all its iterations (replacing any
    it had), or with none when the filter does not pay for itself (``postfilter.worth``).

    ``image`` is the original the file was made from. This gives a cut file (``truncate``) a
    filter of its own again: the result is the file ``compress`` would have made with that many
    iterations, since a file's first iterations do not depend on how many follow. Costs one
    decode and a fit; a caller that holds the file's pixels, unfiltered (H×W×3 uint8, as
    ``decode_iterations`` gives them for its last iteration), passes them as ``decoded`` and
    saves the decode; for a PSNR-tuned model, whose filter is judged against what the last
    iteration added, also those before it as ``previous`` (else they are decoded). A grayscale
    file's decoded pixels are one channel of the networks' three, which the filter reads, so
    those are refused.
    """
    container, loaded, bit_coder = _open(data, model, max_pixels)
    header = container.header
    rgb, _ = load_image(image, max_pixels)
    if rgb.shape[:2] != (header.height, header.width):
        raise ImageError(f"the image is {rgb.shape[1]}×{rgb.shape[0]}, the file "
                         f"{header.width}×{header.height}")
    for pixels in (decoded, previous):
        if pixels is not None and (header.gray or pixels.shape != rgb.shape
                                   or pixels.dtype != np.uint8):
            raise ArgumentError("decoded pixels must be a colour file's, H×W×3 uint8 like the "
                                f"image; got {pixels.dtype} {pixels.shape} for a "
                                f"{'grayscale' if header.gray else 'colour'} file")
    plain = assemble(header, container.chunks)
    if not filters.applies(header.width, header.height):
        return plain
    n = len(container.chunks)
    needs_previous = previous is None and _bar_reads_previous(loaded, n)
    if decoded is None or needs_previous:
        maps = _first_codes(container, bit_coder, n)
        decoded = _pixels(loaded, header, maps) if decoded is None else decoded
        previous = _pixels(loaded, header, maps[:-1]) if needs_previous else previous
    return _with_filter(plain, header, container.chunks, rgb, (previous, decoded), None,
                        loaded.tune)[0]


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


def _open(data: bytes | str | Path, model: str | None, max_pixels: int,
          allow_cut: bool = False) -> tuple[Container, LoadedModel, BitCoder]:
    """Parse a file and check it against the pixel limit (in whole blocks, as the networks
    code it), the largest region the networks may run over, and its model, allocating
    nothing (``allow_cut``: a file cut inside a chunk gives its complete ones; see
    format.parse)."""
    container = parse(read_bytes(data), allow_cut=allow_cut)
    header = container.header
    if padded_pixels(header.width, header.height) > max_pixels:
        raise FormatError(f"file declares {describe(header.width, header.height)}, over the "
                          f"limit of {max_pixels}")
    problem = region_overflow(header.width, header.height, header.tile)
    if problem:  # its networks' memory would grow with the image, not a bounded region
        raise FormatError(f"file declares {problem}; refused (the encoder codes such images "
                          "in smaller tiles)")
    if not container.chunks:
        raise FormatError(container.cut or "file holds no iterations")
    coder = coder_name(header.coder)
    loaded = _check_model(header, model)
    return container, loaded, make_coder(coder, loaded.tables)


def _codes(container: Container, bit_coder: BitCoder) -> Iterator[list[np.ndarray]]:
    """The code maps of the first 1, 2, ... iterations (one growing list); in adaptive files
    the blocks an iteration does not code hold ``STOPPED``."""
    shape = engine.code_shape(container.header.width, container.header.height)
    maps: list[np.ndarray] = []
    for coded, payload in coded_blocks(container):
        maps.append(bit_coder.decode(payload, shape, maps, coded))
        yield maps


def _first_codes(container: Container, bit_coder: BitCoder, n: int) -> list[np.ndarray]:
    """The code maps of the first ``n`` iterations (1 ≤ n ≤ the file's)."""
    for maps in _codes(container, bit_coder):
        if len(maps) == n:
            break
    return maps


def _filter(container: Container, iterations: int) -> filters.Filter | None:
    """The file's filter when the image after all its iterations is wanted (FormatError if it
    is malformed, before any network work)."""
    if container.filter is None or iterations < len(container.chunks):
        return None
    return filters.Filter.unpack(container.filter)


def decode_iterations(data: bytes | str | Path, *, model: str | None = None,
                      max_pixels: int = MAX_PIXELS,
                      allow_cut: bool = False) -> Iterator[Image.Image]:
    """Yield the decoded image after each iteration stored in the file (progressive decoding;
    the file's filter, if any, applies to the last). ``allow_cut`` as for ``decompress``; see
    ``engine.decode_progressive`` for memory and time.
    """
    container, loaded, bit_coder = _open(data, model, max_pixels, allow_cut)
    h = container.header
    last = _filter(container, len(container.chunks))
    images = engine.decode_progressive(loaded, h.width, h.height, h.tile,
                                       _codes(container, bit_coder))
    for n, image in enumerate(images, 1):
        if last is not None and n == len(container.chunks):
            image = filters.apply(last, image)
        yield to_image(image, h.gray)


def decompress(data: bytes | str | Path, *, iterations: int | None = None,
               model: str | None = None, max_pixels: int = MAX_PIXELS,
               progress: Progress | None = None, allow_cut: bool = False) -> Image.Image:
    """Decode .rnnc bytes or a path to a PIL image (L or RGB), using the first ``iterations``
    (default: all; more than the file holds is an ArgumentError). The file's filter, if any,
    applies only when all are used; see ``engine.decode_pixels`` for memory.

    A file cut inside a chunk is a FormatError unless ``allow_cut``, which decodes the complete
    iterations before the cut, as viewers show a cut progressive JPEG (``info`` says where).
    """
    if iterations is not None and iterations < 1:
        raise ArgumentError("iterations must be at least 1")
    container, loaded, bit_coder = _open(data, model, max_pixels, allow_cut)
    n = len(container.chunks) if iterations is None else iterations
    if n > len(container.chunks):
        raise ArgumentError(f"asked for {n} iterations, but {holds(container)}")
    last = _filter(container, n)
    maps = _first_codes(container, bit_coder, n)
    h = container.header
    image = engine.decode_pixels(loaded, h.width, h.height, h.tile, maps, progress)
    return to_image(image if last is None else filters.apply(last, image), container.header.gray)
