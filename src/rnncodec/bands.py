"""Row bands: one network step over a region, cut into bands of block rows that run at once.

Every step runs on one intra-op thread (``engine.network_step``), so an image coded whole would
use one core. Its steps can instead run on bands of whole block rows, one band per thread: the
networks run over a band's own rows plus ``halo`` rows above and below it, cut from the
region's inputs and state (each tensor at its own scale, in its own memory layout), and only the
band's own rows are kept. The state put back together is the whole step's, bit for bit, for any
number of bands, so no output depends on the thread count: a band's own rows read nothing
beyond its halo (``halo``, worked out from the layers), and every convolution computes an
output row the same on the band as on the whole region, as long as both run on oneDNN's
kernels, which a band tall enough for the region's width ensures (``least_rows``). Elementwise
kernels compute each value the same but the last few of a tensor, which the last band shares
with the region when it starts where ``align`` says.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .cells import ConvRNNCell
from .defaults import BLOCK
from .frameworks import CodingState, RNNCompressor

# A band runs over at most this share of the region's rows, else the halo's extra work eats
# what the threads gain (benchmarks/network_speed.py, ``--variants bands``).
MAX_SHARE = 0.7
# PyTorch's ConvParams::use_mkldnn: a convolution of one image whose input holds no more values
# runs on PyTorch's own kernels instead of oneDNN's (see ``least_rows``)
ONEDNN_MIN_VALUES = 20480
# PyTorch's elementwise kernels run over a dense tensor in steps of up to this many values (two
# vectors) and finish the last few values one at a time, which rounds sigmoid, tanh and exp
# differently (see ``align``)
VECTOR_STEP = 64

Rows = tuple[int, int]  # [start, stop) in pixel rows
T = TypeVar("T")


# --- how far one step reads, and how tall a band must be ---------------------------------------


def _whole(rows: Rows, scale: int) -> Rows:
    """``rows`` widened to whole rows of a map whose rows are ``scale`` pixels tall."""
    return rows[0] // scale * scale, -(-rows[1] // scale) * scale


class _Cone:
    """What one step reads for its outputs over some rows: the rows of each of its inputs
    (``reads``), and its convolutions with the scale of their inputs (``convs``)."""

    def __init__(self) -> None:
        self.reads: list[Rows] = []
        self.convs: list[tuple[nn.Conv2d, int]] = []

    def conv(self, rows: Rows, conv: nn.Conv2d, scale: int) -> Rows:
        """The pixel rows a convolution reads for its outputs over ``rows``, each ``scale``
        pixels tall: its kernel reaches k // 2 input rows (scale / stride pixels) either side."""
        self.convs.append((conv, scale // conv.stride[0]))
        lo, hi = _whole(rows, scale)
        reach = conv.kernel_size[0] // 2 * scale // conv.stride[0]
        return lo - reach, hi + reach

    def cell(self, rows: Rows, cell: nn.Module, scale: int) -> Rows:
        """The input rows a conv-RNN reads for its outputs over ``rows``, ``scale`` pixels tall
        (its hidden state's rows go to ``reads``). Counted as for a GRU, the widest: its hidden
        convolution reads h for the reset gate r, which also reads the input, and then reads
        r·h; other cells read less. A residual GRU's shortcut reads as its input convolution."""
        assert isinstance(cell, ConvRNNCell)
        gate = self.conv(rows, cell.conv_h, scale)
        self.reads.append(self.conv(gate, cell.conv_h, scale))
        return self.conv(gate, cell.conv_x, scale)

    def gain(self, rows: Rows, gain: nn.Module) -> None:
        """The reconstruction's rows the gain estimator reads for the gains over ``rows`` (one
        per 8×8 block, after three stride-2 convolutions and a 1×1 one)."""
        convs = [m for m in gain.modules() if isinstance(m, nn.Conv2d)]
        scale = 1
        for conv in convs:
            scale *= conv.stride[0]
        for conv in reversed(convs):
            rows = self.conv(rows, conv, scale)
            scale //= conv.stride[0]
        self.reads.append(rows)


def _cone(net: RNNCompressor, decoder: bool) -> _Cone:
    """What a decoder step reads for the reconstruction over one block row (which holds what
    each new hidden state there reads), or an encoder step for the binarizer's values there."""
    cone, block = _Cone(), (0, BLOCK)
    if decoder:
        dec = net.decoder
        cone.reads.append(block)  # the reconstruction the output is added to
        if net.gain is not None:
            cone.gain(block, net.gain)
        x = cone.conv(block, dec.conv_out, 1)
        for i in reversed(range(len(dec.rnns))):  # cell i runs at 16 >> i pixels per row
            x = cone.cell(x, dec.rnns[i], BLOCK >> i)
        cone.reads.append(cone.conv(x, dec.conv_in, BLOCK))
    else:
        enc = net.encoder
        x = cone.conv(block, net.binarizer.conv, BLOCK)
        for i in reversed(range(len(enc.rnns))):  # cell i's outputs: 4 << i pixels per row
            x = cone.cell(x, enc.rnns[i], 4 << i)
        x = cone.conv(x, enc.conv, 2)
        cone.reads.append(x)  # the image and the reconstruction it is taken from
        if net.gain is not None:
            cone.gain(x, net.gain)
    return cone


def halo(net: RNNCompressor, decoder: bool, first: bool = False) -> int:
    """Pixel rows a band of a decoder (or encoder) step needs above and below its own: the
    farthest any of its block rows reads, rounded up to whole blocks (bands are cut at block
    rows). A primed decoder's first step runs the decoder ``prime`` more times over its own
    hidden state, each pass reaching as far again.

    For the decoders here that is 48 rows: a block row's reconstruction reads the bits of three
    block rows either side, through the first cell's 3×3 kernel and the finer cells' kernels
    and reset gates, each widened to whole rows of the coarser map above it. Encoders read 32
    rows (a gain estimator's reach) or 16."""
    reach = max(max(-lo, hi - BLOCK) for lo, hi in _cone(net, decoder).reads)
    passes = 1 + net.config.prime if decoder and first else 1
    return -(-reach * passes // BLOCK) * BLOCK


def least_rows(net: RNNCompressor, decoder: bool, width: int) -> int:
    """The fewest pixel rows a band of a region ``width`` pixels wide (whole blocks) may run
    over, so that each convolution of the step runs on the kernels it runs on over the whole
    region (bands are at most as tall, so the bound is on the band).

    PyTorch gives a convolution to oneDNN, which computes each output row the same whatever
    the map's height, only when its input holds more than ``ONEDNN_MIN_VALUES`` values; a
    smaller one runs on PyTorch's own kernels, which sum in another order, and a band would
    differ from the whole region there. 1×1 convolutions without stride never go to oneDNN
    on one thread, and PyTorch's kernel gives each pixel the same sum but on maps of a few
    pixels."""
    rows = BLOCK
    for conv, scale in _cone(net, decoder).convs:
        if conv.kernel_size[0] > 1 or conv.stride[0] > 1:
            per_row = conv.in_channels * (width // scale)  # values in one input row
            rows = max(rows, (ONEDNN_MIN_VALUES // per_row + 1) * scale)
    return rows


# --- bands and the tensors cut for them -------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """Pixel rows of one band: those the networks run over (its own and the halo's, clipped to
    the region) and its own, whose results are kept."""

    rows: Rows
    own: Rows


def align(width: int) -> int:
    """The last band of a region ``width`` pixels wide (whole blocks) starts at a multiple of
    this many pixel rows, so that each of its tensors holds as many values past whole steps
    of ``VECTOR_STEP`` as the region's: the region's last values, computed one at a time, are
    then the band's last ones too. A tensor ``s`` pixels per row holds C · (width / s) values
    per row; those rows above the band come to a multiple of the step at every scale s ≤ 16
    when they do at 1/16 scale for one channel."""
    return BLOCK * VECTOR_STEP // math.gcd(width // BLOCK, VECTOR_STEP)


def split(height: int, count: int, halo: int, least: int = 0, last: int = BLOCK) -> list[Band]:
    """A region ``height`` pixels tall (whole blocks) in as many bands as fit of at most
    ``count``, of equal block rows (give or take one), each running over ``halo`` rows more
    either side and the last from a multiple of ``last`` rows: over at least ``least`` rows and
    at most ``MAX_SHARE`` of the region. One band, the whole region, when no more fit."""
    blocks = height // BLOCK
    for n in range(min(count, blocks), 1, -1):
        cuts = [blocks * i // n * BLOCK for i in range(n + 1)]
        bands = [Band((max(0, a - halo), min(height, b + halo)), (a, b))
                 for a, b in itertools.pairwise(cuts)]
        bands[-1] = Band((bands[-1].rows[0] // last * last, height), bands[-1].own)
        if all(least <= b.rows[1] - b.rows[0] <= MAX_SHARE * height for b in bands):
            return bands
    return [Band((0, height), (0, height))]


def plan(net: RNNCompressor, decoder: bool, first: bool, height: int, width: int,
         threads: int) -> list[Band]:
    """The bands a decoder (or encoder) step over a ``height``×``width`` region runs on, with
    ``threads`` threads: no more bands than threads, each one's results the whole step's."""
    return split(height, threads, halo(net, decoder, first), least_rows(net, decoder, width),
                 align(width))


def _layout(t: Tensor) -> torch.memory_format:
    """The memory format ``t`` is dense in: the networks' inputs and state must keep theirs
    (``engine.nhwc``), since a convolution sums in another order in another layout."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _map(f: Callable[..., Tensor], *trees: Any) -> Any:
    """``f`` on the corresponding tensors of ``trees`` (tensors, CodingStates, tuples and lists
    of them, None), built up as the first tree."""
    first = trees[0]
    if first is None or isinstance(first, Tensor):
        return first if first is None else f(*trees)
    if isinstance(first, CodingState):
        return replace(first, **{k: _map(f, *(getattr(t, k) for t in trees))
                                 for k in ("recon", "enc", "dec")})
    if isinstance(first, tuple | list):
        return type(first)(_map(f, *parts) for parts in zip(*trees, strict=True))
    raise TypeError(f"cannot cut a {type(first).__name__} into bands")


def crop(tree: T, band: Band, height: int) -> T:
    """Every tensor of ``tree`` cut to the band's rows (each at its own scale: a tensor ``s``
    times shorter than ``height`` has rows ``s`` pixels tall), dense in its own layout."""
    def cut(t: Tensor) -> Tensor:
        scale = height // t.shape[-2]
        part = t[..., band.rows[0] // scale:band.rows[1] // scale, :]
        return part.contiguous(memory_format=_layout(t))

    return _map(cut, tree)


def join(parts: list[T], bands: list[Band], height: int) -> T:
    """The whole region's tensors from each band's (``parts``, cut as ``crop`` cuts): the own
    rows of every band, in the layout of the bands' tensors."""
    def paste(*pieces: Tensor) -> Tensor:
        first, band = pieces[0], bands[0]
        scale = (band.rows[1] - band.rows[0]) // first.shape[-2]
        whole = torch.empty((*first.shape[:-2], height // scale, first.shape[-1]),
                            dtype=first.dtype, device=first.device,
                            memory_format=_layout(first))
        for piece, b in zip(pieces, bands, strict=True):
            lo = b.own[0] - b.rows[0]
            whole[..., b.own[0] // scale:b.own[1] // scale, :] = \
                piece[..., lo // scale:(lo + b.own[1] - b.own[0]) // scale, :]
        return whole

    return _map(paste, *parts)
