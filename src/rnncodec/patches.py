"""Training data: photos decoded once, the held-out split, random downscaled patches.

Toderici et al. train on 32×32 patches of photos; here each patch is cut from a photo
downscaled by a random factor in [0.5, 1] (which also removes most JPEG artifacts) and
mirrored half the time. On a GPU, ``patch_bank`` cuts many patches on the device at once.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import Tensor

from .images import load_image

if TYPE_CHECKING:  # only for the annotation: train imports this module
    from .train import TrainConfig


def pack_name(path: Path, root: str | Path) -> str:
    """A photo's name in a training pack: its path under the data folder, folders joined by "_"."""
    return "_".join(path.relative_to(root).parts)


def holdout_rank(path: Path, root: str | Path) -> str:
    """Where a photo stands in line for validation: a hash of its ``pack_name``, so that a pack
    holds out the same photos as the folder it was made from."""
    return hashlib.sha256(pack_name(path, root).encode()).hexdigest()


def split_photos(paths: list[Path], root: str | Path, n_val: int) -> tuple[list[Path], list[Path]]:
    """(validation, training) photos: the ``n_val`` first by ``holdout_rank``, and the rest."""
    ranked = sorted(paths, key=lambda p: holdout_rank(p, root))
    return ranked[:n_val], ranked[n_val:]


def load_pool(paths: list[Path], min_side: int = 128) -> list[Tensor]:
    """Decode every photo once into uint8 3×H×W tensors (a training set fits in memory so).

    Photos smaller than ``min_side`` (a few thumbnails in ImageNet samples) are skipped; a file
    that does not decode stops the run with an ImageError naming it (before any step is taken).
    """
    pool = [torch.from_numpy(load_image(p)[0].copy()).permute(2, 0, 1) for p in paths]
    return [t for t in pool if min(t.shape[1:]) >= min_side]


def random_patch(img: Tensor, size: int, rng: random.Random) -> Tensor:
    """A crop of an image downscaled by a random factor in [0.5, 1] (antialiased), then flipped.

    Cropping a (size / s)-pixel window and resizing it to ``size`` equals downscaling by s first;
    downscaling also removes most of the training JPEGs' own artifacts.
    """
    _, h, w = img.shape
    s = rng.uniform(0.5, 1.0)
    win = min(h, w, max(size, round(size / s)))
    y, x = rng.randrange(h - win + 1), rng.randrange(w - win + 1)
    crop = img[:, y:y + win, x:x + win].float().unsqueeze(0) / 255
    if win != size:
        crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear",
                                               antialias=True, align_corners=False)
    if rng.random() < 0.5:
        crop = crop.flip(-1)
    return crop[0].clamp(0, 1) - 0.5


def png_size(patch: Tensor) -> int:
    """Bytes of a patch (in [-0.5, 0.5]) as PNG: the paper's measure of how hard it is to code."""
    buf = io.BytesIO()
    pixels = ((patch + 0.5) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.tell()


def draw_batch(pool: list[Tensor], cfg: TrainConfig, rng: random.Random) -> Tensor:
    """``cfg.batch`` random patches; with hard-patch mining, the least compressible of more.

    Toderici et al. (§4) train on the tiles with the worst PNG compression ratio, since most
    tiles of photos are smooth and teach little; here ``batch / hard_patches`` candidates are
    drawn and the ``batch`` largest as PNG are kept (all patches have the same size).
    """
    n = round(cfg.batch / cfg.hard_patches) if cfg.hard_patches else cfg.batch
    patches = [random_patch(rng.choice(pool), cfg.patch, rng) for _ in range(n)]
    if n > cfg.batch:
        patches = sorted(patches, key=png_size, reverse=True)[:cfg.batch]
    return torch.stack(patches)


def patch_bank(pool: list[Tensor], n: int, size: int, rng: random.Random,
               dev: torch.device, rounds: int = 32) -> Tensor:
    """``n`` uint8 patches (n×3×size×size) cut on ``dev`` once, as ``random_patch`` would.

    A GPU trains faster than one CPU process can draw patches; here every photo is downscaled
    ``rounds`` times by random factors in [0.5, 1] (antialiased) on the device, and random crops
    are cut from each; flips are left to ``bank_batch``.
    """
    per, pool = math.ceil(n / (len(pool) * rounds)), [img.to(dev) for img in pool]
    out = []
    for _ in range(rounds):
        for img in pool:
            s = rng.uniform(0.5, 1.0)
            h, w = (max(size, round(side * s)) for side in img.shape[1:])
            x = torch.nn.functional.interpolate(img.float().unsqueeze(0), size=(h, w),
                                                mode="bilinear", antialias=True,
                                                align_corners=False)
            x = x[0].round().clamp(0, 255).to(torch.uint8)
            ys = torch.tensor([rng.randrange(h - size + 1) for _ in range(per)], device=dev)
            xs = torch.tensor([rng.randrange(w - size + 1) for _ in range(per)], device=dev)
            out.append(x.unfold(1, size, 1).unfold(2, size, 1)[:, ys, xs].transpose(0, 1))
    return torch.cat(out)[:n]


def bank_batch(bank: Tensor, batch: int) -> Tensor:
    """``batch`` patches drawn from a bank with replacement, each flipped with probability ½."""
    x = bank[torch.randint(len(bank), (batch,), device=bank.device)].float() / 255 - 0.5
    flip = torch.rand(batch, 1, 1, 1, device=bank.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def center_crops(pool: list[Tensor], size: int) -> Tensor:
    out = []
    for img in pool:
        _, h, w = img.shape
        y, x = (h - size) // 2, (w - size) // 2
        out.append(img[:, y:y + size, x:x + size].float() / 255 - 0.5)
    return torch.stack(out)
