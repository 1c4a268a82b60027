"""Does tiling cost quality? Whole-image versus tiled coding of the Kodak images.

    python benchmarks/tiling_seams.py                    # 256-px tiles (3×2 per Kodak image)
    python benchmarks/tiling_seams.py --tiles 256,512 --limit 4

Every image is compressed at 16 iterations once whole (tile 0) and once per tile side, and every
file is decoded progressively with the real decoder. Per iteration count it prints the mean over
the images of MS-SSIM (RGB, data range 255), PSNR and bpp, whole and tiled, and the PSNR of a
band of ±4 pixels around the tile borders — where a seam would show — for both codings of the
same pixels. Writes the points in the results format of docs/results-schema.md (codec
``rnncodec:<model>`` for whole images, ``rnncodec:<model>:tile<N>`` for tiles).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rnncodec import codec as rnn
from rnncodec.evaluate.report import md_table
from rnncodec.evaluate.results import CodecInfo, Point, Results, write_json
from rnncodec.evaluate.runner import environment, list_images, read_image
from rnncodec.metrics import ms_ssim, psnr
from rnncodec.tiling import plan
from rnncodec.zoo import DEFAULT_MODEL

BAND = 4  # pixels each side of a tile border


def border_band(width: int, height: int, tile: int) -> np.ndarray:
    """H×W mask of the pixels within ``BAND`` of a border between two tiles."""
    mask = np.zeros((height, width), bool)
    for t in plan(width, height, tile):
        ys, xs = t.owned(height, width)
        if ys.start:
            mask[ys.start - BAND:ys.start + BAND, xs] = True
        if xs.start:
            mask[ys, xs.start - BAND:xs.start + BAND] = True
    return mask


def band_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b)[mask] ** 2))


def code(rgb: np.ndarray, tile: int, model: str) -> tuple[bytes, list[np.ndarray]]:
    """The 16-iteration file and its decoded image after every iteration."""
    data = rnn.compress(rgb, iterations=16, model=model, tile=tile)
    return data, [np.asarray(im) for im in rnn.decode_iterations(data, model=model)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--tiles", default="256", help="tile sides to compare with whole images")
    ap.add_argument("--iterations", default="2,4,8,16", help="iteration counts to report")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--limit", type=int, help="use only the first N images")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/tiling_seams.json"))
    args = ap.parse_args()
    tiles = [int(t) for t in args.tiles.split(",")]
    counts = [int(k) for k in args.iterations.split(",")]
    base = rnn.info(rnn.compress(np.zeros((16, 16, 3), np.uint8), iterations=1,
                                 model=args.model)).as_dict()
    name = f"rnncodec:{base['model']}"
    version = f"weights {base['weights']}, coder {base['coder']}"
    points: list[Point] = []
    bands: dict[tuple[int, int, int], list[float]] = defaultdict(list)  # (tile, k, coded) → MSE
    for path in list_images(args.dataset, args.limit):
        image = read_image(path, args.dataset)
        rgb, (h, w) = image.rgb, image.rgb.shape[:2]
        print(f"{image.name} ...", file=sys.stderr, flush=True)
        for tile in [0, *tiles]:
            data, decoded = code(rgb, tile, args.model)
            codec = name if tile == 0 else f"{name}:tile{tile}"
            for k in counts:
                n = len(rnn.truncate(data, iterations=k))
                points.append(Point(codec, k, image.name, image.sha256, w, h, n, n * 8 / (w * h),
                                    ms_ssim=ms_ssim(rgb, decoded[k - 1]),
                                    psnr=psnr(rgb, decoded[k - 1])))
                for t in tiles:  # the band of tile t's borders, in this coding
                    bands[(t, k, tile)].append(band_mse(rgb, decoded[k - 1],
                                                        border_band(w, h, t)))
    print(summary(points, bands, name, tiles, counts))
    infos = [CodecInfo(name, f"rnncodec {base['model']}", "iterations", counts, version)]
    infos += [CodecInfo(f"{name}:tile{t}", f"rnncodec {base['model']}, {t}-px tiles",
                        "iterations", counts, f"{version}, tile {t}") for t in tiles]
    command = shlex.join(["python", "benchmarks/tiling_seams.py", *sys.argv[1:]])
    write_json(Results(command, datetime.now(UTC).isoformat(timespec="seconds"),
                       str(args.dataset), environment(), infos, points), args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def summary(points: list[Point], bands: dict[tuple[int, int, int], list[float]], name: str,
            tiles: list[int], counts: list[int]) -> str:
    """Markdown table: per tile side and iteration count, means over the images."""
    def mean(codec: str, k: int, field: str) -> float:
        return float(np.mean([getattr(p, field) for p in points
                              if p.codec == codec and p.setting == k]))

    def band_db(t: int, k: int, coded: int) -> float:
        return float(np.mean([10 * math.log10(255 ** 2 / m) for m in bands[(t, k, coded)]]))

    rows = []
    for t in tiles:
        for k in counts:
            tiled = f"{name}:tile{t}"
            d_ssim = mean(tiled, k, "ms_ssim") - mean(name, k, "ms_ssim")
            d_psnr = mean(tiled, k, "psnr") - mean(name, k, "psnr")
            d_band = band_db(t, k, t) - band_db(t, k, 0)
            rows.append([str(t), str(k), f"{mean(name, k, 'bpp'):.4f}",
                         f"{mean(tiled, k, 'bpp'):.4f}", f"{mean(name, k, 'ms_ssim'):.4f}",
                         f"{d_ssim:+.4f}", f"{mean(name, k, 'psnr'):.2f}", f"{d_psnr:+.3f}",
                         f"{band_db(t, k, 0):.2f}", f"{d_band:+.2f}"])
    return "\n".join(md_table(
        ["tile", "iterations", "bpp whole", "bpp tiled", "MS-SSIM whole", "Δ tiled",
         "PSNR whole", "Δ tiled", f"border ±{BAND} px PSNR whole", "Δ tiled"], rows))


if __name__ == "__main__":
    main()
