"""Draw the README's picture: one image decoded after 1, 2, 4, 8 and 16 iterations.

    python scripts/progressive_figure.py ../shared/data/kodak/kodim23.png docs/progressive.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

import rnncodec

STEPS = (1, 2, 4, 8, 16)


def crop_box(img: Image.Image, size: int = 256) -> tuple[int, int, int, int]:
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return left, top, left + size, top + size


def main(src: str, dst: str) -> None:
    original = Image.open(src).convert("RGB")
    data = rnncodec.compress(original, iterations=max(STEPS))
    bpp = rnncodec.info(data).bpp_per_iteration
    decoded = list(rnncodec.decode_iterations(data))
    box = crop_box(original)
    tiles = [(decoded[i - 1].crop(box), f"{i} it, {bpp[i - 1]:.3f} bpp") for i in STEPS]
    tiles.append((original.crop(box), "original"))
    w, h = box[2] - box[0], box[3] - box[1]
    sheet = Image.new("RGB", (len(tiles) * (w + 4) - 4, h + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (tile, label) in enumerate(tiles):
        sheet.paste(tile, (k * (w + 4), 20))
        draw.text((k * (w + 4) + 4, 4), label, fill="black")
    sheet.save(Path(dst))


if __name__ == "__main__":
    main(*sys.argv[1:3])
