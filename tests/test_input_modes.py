"""Inputs: every Pillow mode, EXIF orientation, ICC profiles, degenerate shapes, pixel limits.

The rule (src/rnncodec/images.py): EXIF orientation is applied first; colour modes become RGB
and decode to RGB; grayscale modes (1, L, LA, La, I, I;16, F) become L and decode to L; alpha
and ICC profiles are dropped. Inputs over the pixel limit are refused with ImageError from their
declared size, before any pixel is decoded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import (
    Seeds,
    assert_one_error_line,
    check_message,
    gradient,
    hostile_seeds,
    invoke,
    max_rss_mb,
    png_bytes,
    run_cli,
)
from PIL import Image, ImageCms, ImageOps

from rnncodec import codec
from rnncodec.errors import FormatError, ImageError
from rnncodec.images import MAX_PIXELS, load_image

__all__ = ["hostile_seeds"]  # a fixture, imported for pytest

H, W = 24, 40
GRAY = {"1", "L", "LA", "La", "I;16", "I;16B", "I", "F"}
COLOUR = {"P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def make(mode: str) -> Image.Image:
    rgb = gradient(H, W, seed=31)
    base = Image.fromarray(rgb)
    if mode == "I;16":
        return Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    if mode == "I;16B":
        return Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).convert("I;16B")
    if mode == "I":
        return Image.fromarray(rgb[..., 0].astype(np.int32) * 1000)
    if mode == "F":
        return Image.fromarray(rgb[..., 0].astype(np.float32))
    if mode == "La":
        return base.convert("LA").convert("La")
    if mode == "RGBa":
        return base.convert("RGBA").convert("RGBa")
    return base.convert(mode)


@pytest.mark.parametrize("mode", sorted(GRAY | COLOUR))
def test_every_pillow_mode_round_trips(mode: str, hostile_seeds: Seeds) -> None:
    image = make(mode)
    assert image.mode == mode and image.size == (W, H)
    data = codec.compress(image, iterations=1, model=hostile_seeds.model)
    out = codec.decompress(data, model=hostile_seeds.model)
    assert out.size == (W, H)
    assert out.mode == ("L" if mode in GRAY else "RGB")


@pytest.mark.parametrize("mode,fmt", [
    ("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"),
    ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("CMYK", "TIFF"), ("CMYK", "JPEG"),
    ("YCbCr", "TIFF"), ("L", "JPEG"), ("RGB", "WEBP"), ("P", "GIF"), ("RGB", "BMP"),
])
def test_modes_from_files(mode: str, fmt: str, hostile_seeds: Seeds, tmp_path: Path) -> None:
    path = tmp_path / f"in.{fmt.lower()}"
    make(mode).save(path, format=fmt)
    with Image.open(path) as reopened:
        stored = reopened.mode
    data = codec.compress(path, iterations=1, model=hostile_seeds.model)
    out = codec.decompress(data, model=hostile_seeds.model)
    assert out.size == (W, H)
    assert out.mode == ("L" if stored in GRAY else "RGB"), stored


def test_gray_conversions_scale_by_nominal_range() -> None:
    values = np.array([[0, 1, 128, 255]], np.uint16)
    a, gray = load_image(Image.fromarray(values * 257))  # 16-bit: 0 … 65535
    assert gray and a[..., 0].tolist() == [[0, 1, 128, 255]]
    a, gray = load_image(Image.fromarray(values.astype(np.int32)))  # 32-bit within 0 … 255
    assert gray and a[..., 0].tolist() == [[0, 1, 128, 255]]
    a, gray = load_image(Image.fromarray(values.astype(np.float32)))
    assert gray and a[..., 0].tolist() == [[0, 1, 128, 255]]
    a, gray = load_image(make("1"))
    assert gray and set(np.unique(a)) <= {0, 255}
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])


# --- EXIF orientation -----------------------------------------------------------------------


def _with_orientation(orientation: int, fmt: str) -> tuple[bytes, np.ndarray]:
    rgb = gradient(H, W, seed=32)
    rgb[:4, :6] = 255  # a marker in the stored top-left corner
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, format=fmt, exif=exif)
    return buf.getvalue(), rgb


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_exif_orientation_6_decodes_upright(fmt: str, hostile_seeds: Seeds) -> None:
    """Orientation 6: the stored pixels must be turned 90° clockwise to be upright."""
    blob, rgb = _with_orientation(6, fmt)
    data = codec.compress(blob, iterations=1, model=hostile_seeds.model)
    assert codec.decompress(data, model=hostile_seeds.model).size == (H, W)  # swapped
    upright, _ = load_image(blob)
    assert upright.shape == (W, H, 3)
    if fmt in ("PNG", "TIFF"):  # lossless: exactly the stored pixels, turned clockwise
        assert np.array_equal(upright, np.rot90(rgb, k=-1))
        assert (upright[:6, -4:] == 255).all()  # the marker is now top right


@pytest.mark.parametrize("orientation", range(10))
def test_every_exif_orientation(orientation: int) -> None:
    blob, _ = _with_orientation(orientation, "PNG")
    a, _ = load_image(blob)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(blob))).convert("RGB"))
    assert np.array_equal(a, expected)
    assert a.shape[:2] == ((W, H) if orientation in (5, 6, 7, 8) else (H, W))


def test_damaged_exif_block_keeps_the_stored_pixels(hostile_seeds: Seeds) -> None:
    blob, _ = _with_orientation(6, "PNG")
    i = blob.index(b"eXIf")
    broken = blob[:i + 4] + b"\xff" * 8 + blob[i + 12:]  # garbage EXIF (PNG chunk CRC ignored)
    try:
        a, _ = load_image(broken)
    except ImageError as e:  # Pillow may refuse the chunk's CRC: still one of ours
        check_message(e)
    else:
        assert a.shape[:2] in ((H, W), (W, H))


# --- ICC profiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["sRGB", "LAB", "garbage"])
def test_icc_profile_is_not_kept(profile: str, hostile_seeds: Seeds, tmp_path: Path) -> None:
    """A profile (real or not) is ignored: compress works, the decoded image carries none."""
    icc = (b"not an ICC profile" * 8 if profile == "garbage"
           else ImageCms.ImageCmsProfile(ImageCms.createProfile(profile)).tobytes())
    src = tmp_path / "in.png"
    Image.fromarray(gradient(H, W, seed=33)).save(src, icc_profile=icc)
    assert Image.open(src).info.get("icc_profile") == icc
    data = codec.compress(src, iterations=2, model=hostile_seeds.model)
    out = codec.decompress(data, model=hostile_seeds.model)
    assert "icc_profile" not in out.info
    (tmp_path / "in.rnnc").write_bytes(data)
    r = invoke(["decompress", str(tmp_path / "in.rnnc"), "-o", str(tmp_path / "out.png"),
                "--model", hostile_seeds.model, "-q"])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "out.png") as saved:
        assert "icc_profile" not in saved.info
        assert saved.size == (W, H)


# --- degenerate shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(1, 1), (1, 300), (300, 1), (1, 17), (17, 1),
                                          (16, 16), (2, 2)])
@pytest.mark.parametrize("coder", ["raw", "context"])
def test_tiny_and_thin_images(height: int, width: int, coder: str, hostile_seeds: Seeds) -> None:
    for channels in (3, 0):
        image = gradient(height, width, seed=34, channels=channels)
        data = codec.compress(image, iterations=2, model=hostile_seeds.model, coder=coder)
        out = codec.decompress(data, model=hostile_seeds.model)
        assert out.size == (width, height)
        assert out.mode == ("L" if channels == 0 else "RGB")
        assert codec.info(data).as_dict()["width"] == width


# --- pixel limits ---------------------------------------------------------------------------


def test_pixel_limit_for_every_kind_of_source(hostile_seeds: Seeds, tmp_path: Path) -> None:
    rgb = gradient(20, 20, seed=35)
    path = tmp_path / "in.png"
    Image.fromarray(rgb).save(path)
    for source in (rgb, Image.fromarray(rgb), path, str(path), path.read_bytes()):
        with pytest.raises(ImageError, match="exceeds the limit of 399 pixels") as e:
            codec.compress(source, iterations=1, model=hostile_seeds.model, max_pixels=399)
        check_message(e.value)
        # the networks code whole 16-pixel blocks, and the limit counts them, as the decoder does
        with pytest.raises(ImageError, match=r"20×20 pixels \(32×32 in 16-pixel blocks\) "
                                             "exceeds the limit of 1023 pixels") as e:
            codec.compress(source, iterations=1, model=hostile_seeds.model, max_pixels=1023)
        check_message(e.value)
        data = codec.compress(source, iterations=1, model=hostile_seeds.model, max_pixels=1024)
        assert codec.decompress(data, model=hostile_seeds.model, max_pixels=1024).size == (20, 20)
        with pytest.raises(FormatError, match=r"\(32×32 in 16-pixel blocks\), over the limit"):
            codec.decompress(data, model=hostile_seeds.model, max_pixels=1023)


@pytest.mark.parametrize("width,height,limit", [
    (9000, 9000, 10**6),
    (8001, 8000, MAX_PIXELS),  # just over the default limit, below Pillow's own guard
    (50_000, 50_000, MAX_PIXELS),  # over Pillow's decompression-bomb guard too
])
def test_over_the_limit_is_refused_from_the_declared_size(width: int, height: int, limit: int,
                                                          hostile_seeds: Seeds,
                                                          tmp_path: Path) -> None:
    """A PNG whose header declares a huge size over a few bytes of data: refused for its size
    (not for its missing data), so no pixel buffer was ever allocated."""
    blob = png_bytes(width, height, b"x" * 16)
    path = tmp_path / "bomb.png"
    path.write_bytes(blob)
    rss = max_rss_mb()
    for source in (blob, path):
        with pytest.raises(ImageError) as e:
            codec.compress(source, iterations=1, model=hostile_seeds.model, max_pixels=limit)
        message = check_message(e.value)
        assert "exceeds" in message and "limit" in message, message
    assert max_rss_mb() - rss < 50


def test_cli_refuses_an_oversized_image(hostile_seeds: Seeds, tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(png_bytes(8001, 8000, b"x" * 16))
    r = invoke(["compress", str(tmp_path / "bomb.png"), "--model", hostile_seeds.model])
    assert r.exit_code == ImageError.exit_code and isinstance(r.exception, SystemExit)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "exceeds the limit" in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png"]


@pytest.mark.parametrize("width,height,options,limit", [
    (10_000, 10_000, [], MAX_PIXELS),  # over Pillow's warning size: its warning is not shown
    (50_000, 50_000, [], MAX_PIXELS),  # over Pillow's own guard, which refuses it first
    (50_000, 50_000, ["--max-pixels", "3000000000"], 2 * Image.MAX_IMAGE_PIXELS),
])
def test_cli_refuses_a_decompression_bomb_in_its_own_words(width: int, height: int,
                                                           options: list[str], limit: int,
                                                           hostile_seeds: Seeds,
                                                           tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(png_bytes(width, height, b"x" * 16))
    r = invoke(["compress", str(tmp_path / "bomb.png"), "--model", hostile_seeds.model,
                *options])
    assert r.exit_code == ImageError.exit_code and isinstance(r.exception, SystemExit)
    line = assert_one_error_line(r.stderr, r.stdout)
    assert f"exceeds the limit of {limit} pixels" in line, line
    assert "DOS attack" not in line and "bomb.png" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png"]


@pytest.mark.slow
def test_cli_compress_of_a_damaged_tiff_prints_only_the_error(hostile_seeds: Seeds,
                                                              tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(gradient(24, 20, seed=9)).save(buf, format="TIFF", compression="tiff_lzw")
    blob = bytearray(buf.getvalue())
    blob[7] = 24  # the first IFD offset now points far past the end
    (tmp_path / "damaged.tif").write_bytes(blob)
    r = run_cli(["compress", "damaged.tif", "--model", hostile_seeds.model], tmp_path)
    assert r.returncode == ImageError.exit_code
    assert "cannot decode damaged.tif" in assert_one_error_line(r.stderr, r.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.tif"]
