"""The bundled sample picture, drawn by code so that the package ships no photograph."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image


def sample_image(width: int = 384, height: int = 256) -> Image.Image:
    """A landscape with smooth gradients (sky, water), hard edges (ridges, sun, fence posts) and
    fine texture (rock noise, ripples): each shows a different kind of coding artifact."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    v, u = v / height, u / width
    rng = np.random.default_rng(2017)
    horizon = 0.62
    sky = np.interp(v, [0, horizon], [0, 1])[..., None] * [210, 100, -30] + [40, 90, 170]
    sun = np.hypot(u - 0.72, (v - 0.28) * height / width) < 0.05
    sky[sun] = [255, 236, 190]
    ridge = 0.45 + 0.06 * np.sin(7 * u + 1) + 0.03 * np.sin(23 * u) + 0.01 * np.sin(71 * u + 2)
    rock = (v - ridge)[..., None] * [-60, 90, 60] + [70, 80, 60] + rng.normal(0, 9, v.shape)[
        ..., None]
    ripples = 0.5 + 0.5 * np.sin(260 * v + 4 * np.sin(11 * u))
    water = np.interp(v, [horizon, 1], [1, 0])[..., None] * [60, 60, 40] + [20, 60, 110]
    water += ripples[..., None] * [25, 30, 30]
    posts = (v > 0.8) & (v < 0.93) & ((u * 40) % 1 < 0.12)
    rgb = np.where((v > ridge)[..., None], rock, sky)
    rgb = np.where((v > horizon)[..., None], water, rgb)
    rgb[posts] = [45, 30, 20]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


@cache
def sample_png() -> bytes:
    buf = io.BytesIO()
    sample_image().save(buf, format="PNG")
    return buf.getvalue()
