"""How a large image is split into tiles, so the networks' memory grows with a tile, not the image.

Geometry and pixel placement, no networks; docs/format.md states the same rules, since the decoder
must split exactly as the encoder did. The code map of an iteration stays the whole image's
32 × ⌈H/16⌉ × ⌈W/16⌉ grid: tiling changes only where the networks run.

- The grid of 16×16 blocks is cut into ⌈rows / T⌉ × ⌈columns / T⌉ tiles, T = tile side / 16,
  as evenly as whole blocks allow (no thin sliver at the right or bottom edge).
- Every block belongs to exactly one tile, whose encoder writes its codes.
- A tile's networks run over its own blocks plus ``CONTEXT`` blocks above and to the left (fewer
  at the image border): blocks of tiles that come earlier in raster order, whose codes are
  already final. Its decoder is fed those neighbours' codes there, so its first rows and columns
  are decoded with what lies above and left of them, as in whole-image coding; its encoder sees
  the context pixels but codes only the tile's own blocks. Tiles thus need nothing of later
  tiles: each one can run through all its iterations at a time.
- A tile's decoder lacks what lies right of and below it, so its last pixel rows and columns
  come out a little worse: a faint line at the border. The next tile's decoder also rebuilds
  those pixels (as its context), so the output mixes in that view over the last ``SEAM`` pixels
  before each border (4/8 of it at the border, 3/8, 2/8, 1/8 further in). This touches only the
  output pixels, never the reconstruction the networks carry from one iteration to the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .defaults import (
    AUTO_TILE_PIXELS,
    BLOCK,
    DEFAULT_TILE,
    MAX_REGION_PIXELS,
    MAX_TILE,
    MIN_TILE,
)
from .errors import ArgumentError

if TYPE_CHECKING:  # numpy is imported where pixels are placed: the geometry needs none
    import numpy as np

# The tile sides (BLOCK, MIN_TILE, MAX_TILE, DEFAULT_TILE) and the region limits live in
# defaults.py, which the format and the command line read too.
CONTEXT = 2  # blocks of context above and left of each tile (format version 2)
SEAM = 4  # pixels before a tile border where the next tile's view is mixed in


@dataclass(frozen=True)
class Tile:
    """A tile in blocks: the rows and columns its networks run over, and how many of the first
    of them are context (owned by earlier tiles)."""

    rows: tuple[int, int]  # [start, stop) block rows of the region, context included
    cols: tuple[int, int]
    top: int  # context rows at the top of the region
    left: int  # context columns at its left

    def region(self, height: int, width: int) -> tuple[slice, slice]:
        """Pixel rows and columns of the region, clipped to the image."""
        return (slice(self.rows[0] * BLOCK, min(self.rows[1] * BLOCK, height)),
                slice(self.cols[0] * BLOCK, min(self.cols[1] * BLOCK, width)))

    @property
    def pixels(self) -> int:
        """Pixels of the region in whole blocks: what the networks run over for this tile."""
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0]) * BLOCK * BLOCK

    def owned(self, height: int, width: int) -> tuple[slice, slice]:
        """Pixel rows and columns of the blocks this tile owns, clipped to the image."""
        return (slice((self.rows[0] + self.top) * BLOCK, min(self.rows[1] * BLOCK, height)),
                slice((self.cols[0] + self.left) * BLOCK, min(self.cols[1] * BLOCK, width)))


def padded(width: int, height: int) -> tuple[int, int]:
    """Width and height rounded up to whole blocks: the image the networks code."""
    return -(-width // BLOCK) * BLOCK, -(-height // BLOCK) * BLOCK


def padded_pixels(width: int, height: int) -> int:
    w, h = padded(width, height)
    return w * h


def describe(width: int, height: int) -> str:
    """``W×H pixels``, and the padded size when it differs (for limit messages)."""
    w, h = padded(width, height)
    size = f"{width}×{height} pixels"
    return size if (w, h) == (width, height) else f"{size} ({w}×{h} in 16-pixel blocks)"


def region_overflow(width: int, height: int, tile: int) -> str | None:
    """None when every region the networks run over holds at most ``MAX_REGION_PIXELS``
    (untiled: the padded image; tiled: each tile with its context), else what is too large."""
    largest = max(t.pixels for t in plan(width, height, tile))
    if largest <= MAX_REGION_PIXELS:
        return None
    if not tile:
        return (f"an untiled image of {describe(width, height)}, more than the "
                f"{MAX_REGION_PIXELS} pixels the networks run over at once")
    return (f"a {width}×{height} image in {tile}-pixel tiles, whose regions (context included) "
            f"reach {largest} pixels, more than the {MAX_REGION_PIXELS} the networks run over "
            "at once")


def check_tile(tile: int) -> None:
    """Raise ArgumentError unless ``tile`` is 0 (whole image) or a valid tile side in pixels."""
    if tile != 0 and not (MIN_TILE <= tile <= MAX_TILE and tile % BLOCK == 0):
        raise ArgumentError(f"tile side must be 0 (no tiling) or a multiple of {BLOCK} from "
                            f"{MIN_TILE} to {MAX_TILE}, not {tile}")


def spans(blocks: int, per_tile: int) -> list[tuple[int, int]]:
    """``blocks`` cut into ⌈blocks / per_tile⌉ runs whose lengths differ by at most one."""
    n = math.ceil(blocks / per_tile)
    return [(blocks * i // n, blocks * (i + 1) // n) for i in range(n)]


def plan(width: int, height: int, tile: int) -> list[Tile]:
    """The tiles of an image in raster order (the coding order); tile 0 is one whole tile."""
    rows, cols = math.ceil(height / BLOCK), math.ceil(width / BLOCK)
    per = tile // BLOCK if tile else max(rows, cols)
    out = []
    for r0, r1 in spans(rows, per):
        for c0, c1 in spans(cols, per):
            top, left = min(CONTEXT, r0), min(CONTEXT, c0)
            out.append(Tile((r0 - top, r1), (c0 - left, c1), top, left))
    return out


def waves(tiles: list[Tile]) -> list[list[Tile]]:
    """Tiles grouped by anti-diagonal (tile row + tile column), in order: a tile's context lies
    in the tiles above and to its left, all in earlier groups, so one group's tiles can be
    encoded at the same time."""
    rows = sorted({t.rows[0] + t.top for t in tiles})
    cols = sorted({t.cols[0] + t.left for t in tiles})
    groups: dict[int, list[Tile]] = {}
    for t in tiles:
        groups.setdefault(rows.index(t.rows[0] + t.top) + cols.index(t.cols[0] + t.left),
                          []).append(t)
    return [groups[k] for k in sorted(groups)]


def choose_tile(tile: int | None, width: int, height: int,
                auto_pixels: int = AUTO_TILE_PIXELS) -> int:
    """The tile side to code with: None picks ``DEFAULT_TILE`` for images over ``auto_pixels``
    in whole blocks, else 0; a side that gives a single tile becomes 0 (plain coding).

    Raises ArgumentError for a side whose regions would exceed ``MAX_REGION_PIXELS`` (0 for a
    larger image, or tiles too large for it), which no decoder would accept.
    """
    if tile is None:
        tile = DEFAULT_TILE if padded_pixels(width, height) > auto_pixels else 0
    check_tile(tile)
    problem = region_overflow(width, height, tile)
    if problem:
        raise ArgumentError(f"cannot code {problem}; use smaller tiles (e.g. {DEFAULT_TILE})")
    return tile if tile and len(plan(width, height, tile)) > 1 else 0


def _mix(earlier: np.ndarray, later: np.ndarray, eighths: np.ndarray) -> np.ndarray:
    """(earlier · (8 - n) + later · n) / 8 per pixel, rounded half up, in exact integers."""
    import numpy as np

    total = earlier.astype(np.uint16) * (2 * SEAM - eighths) + later * eighths + SEAM
    return (total // (2 * SEAM)).astype(np.uint8)


def place(image: np.ndarray, tile: Tile, view: np.ndarray) -> None:
    """Write a tile's decoded region ``view`` (uint8, clipped to the image) into ``image``: its
    own blocks as they are, and its view of the ``SEAM`` pixels before its top and left borders
    mixed into what the earlier tiles put there. Tiles must be placed in raster order."""
    import numpy as np

    ys, xs = tile.owned(*image.shape[:2])
    ty, tx = tile.top * BLOCK, tile.left * BLOCK
    image[ys, xs] = view[ty:, tx:]
    eighths = np.arange(1, SEAM + 1, dtype=np.uint16)  # grows towards the border
    if tile.top:
        rows = slice(ys.start - SEAM, ys.start)
        image[rows, xs] = _mix(image[rows, xs], view[ty - SEAM:ty, tx:], eighths[:, None, None])
    if tile.left:
        cols = slice(xs.start - SEAM, xs.start)
        image[ys, cols] = _mix(image[ys, cols], view[ty:, tx - SEAM:tx], eighths[None, :, None])
