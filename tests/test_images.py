"""The input rule of images.py: colour modes → RGB, gray modes → L, arrays, paths, bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gradient_image
from PIL import Image

from rnncodec.errors import ImageError, InputMissingError, RnncWarning
from rnncodec.images import load_image, to_array, to_image, to_tensor


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


# --- colour modes ---------------------------------------------------------------------------


def test_rgb_passes_through_unchanged() -> None:
    a = gradient_image(9, 13)
    out, gray = load_image(Image.fromarray(a, "RGB"))
    assert not gray
    assert out.dtype == np.uint8 and out.shape == (9, 13, 3)
    assert np.array_equal(out, a)


def test_rgba_drops_alpha() -> None:
    a = gradient_image(6, 7, channels=4)
    a[..., 3] = 0  # fully transparent: the colour is still kept, alpha ignored
    with pytest.warns(RnncWarning, match="transparency is dropped"):
        out, gray = load_image(Image.fromarray(a, "RGBA"))
    assert not gray
    assert np.array_equal(out, a[..., :3])


def test_palette_becomes_rgb() -> None:
    img = Image.fromarray(gradient_image(10, 12), "RGB").convert("P", palette=Image.ADAPTIVE)
    out, gray = load_image(img)
    assert not gray and out.shape == (10, 12, 3)
    assert np.array_equal(out, np.asarray(img.convert("RGB")))


def test_cmyk_becomes_rgb() -> None:
    img = Image.fromarray(gradient_image(8, 8), "RGB").convert("CMYK")
    out, gray = load_image(img)
    assert not gray and out.shape == (8, 8, 3)
    assert np.array_equal(out, np.asarray(img.convert("RGB")))


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    img = Image.fromarray(gradient_image(8, 8), "RGB").convert(mode) if mode != "LAB" else \
        Image.new("LAB", (8, 8), (50, 10, 200))
    out, gray = load_image(img)
    assert not gray and out.shape == (8, 8, 3)


# --- grayscale modes ------------------------------------------------------------------------


def test_l_is_gray_with_three_equal_channels() -> None:
    a = gradient_image(7, 9, channels=0)
    out, gray = load_image(Image.fromarray(a, "L"))
    assert gray
    assert out.shape == (7, 9, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], a)


def test_mode_1_is_gray_black_and_white() -> None:
    a = gradient_image(8, 8, channels=0) > 128
    img = Image.fromarray(a)
    assert img.mode == "1"
    out, gray = load_image(img)
    assert gray
    assert np.array_equal(out[..., 0], np.where(a, 255, 0).astype(np.uint8))


def test_la_is_gray_and_drops_alpha() -> None:
    a = gradient_image(5, 6, channels=0)
    img = Image.merge("LA", [Image.fromarray(a, "L"), Image.new("L", (6, 5), 0)])
    with pytest.warns(RnncWarning, match="transparency"):
        out, gray = load_image(img)
    assert gray and np.array_equal(out[..., 1], a)


def test_16_bit_gray_is_scaled_by_its_range() -> None:
    a16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    img = Image.fromarray(a16)
    assert img.mode.startswith("I;16")
    out, gray = load_image(img)
    assert gray
    assert np.array_equal(out[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_16_bit_gray_png_file(tmp_path: Path) -> None:
    a16 = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(a16).save(path)
    out, gray = load_image(path)
    assert gray
    assert out[..., 0].tolist() == [[0, 255], [128, 1]]


def test_mode_i_with_8_bit_values_is_kept() -> None:
    a = np.array([[0, 100], [200, 255]], dtype=np.int32)
    out, gray = load_image(Image.fromarray(a, "I"))
    assert gray and out[..., 2].tolist() == a.tolist()


def test_mode_i_with_16_bit_values_is_scaled() -> None:
    a = np.array([[0, 257], [25700, 65535]], dtype=np.int32)
    out, gray = load_image(Image.fromarray(a, "I"))
    assert gray and out[..., 0].tolist() == [[0, 1], [100, 255]]


# --- EXIF orientation -----------------------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    a = gradient_image(10, 20)
    img = Image.fromarray(a, "RGB")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out, gray = load_image(_png_bytes(img, exif=exif.tobytes()))
    assert not gray
    assert out.shape == (20, 10, 3)
    assert np.array_equal(out, np.rot90(a, k=-1))


# --- numpy arrays ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::rnncodec.errors.RnncWarning")  # random alpha is dropped
@pytest.mark.parametrize("shape, gray", [((5, 7), True), ((5, 7, 1), True), ((5, 7, 3), False),
                                         ((5, 7, 4), False)])
def test_uint8_arrays(shape: tuple, gray: bool) -> None:
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out, is_gray = load_image(a)
    assert is_gray == gray
    assert out.shape == (5, 7, 3)
    flat = a.reshape(5, 7, -1)
    if gray:
        assert np.array_equal(out[..., 0], flat[..., 0]) and np.array_equal(out[..., 2],
                                                                           flat[..., 0])
    else:
        assert np.array_equal(out, flat[..., :3])


def test_uint16_arrays_keep_the_high_byte() -> None:
    a = np.array([[0, 255, 256], [40000, 65535, 511]], dtype=np.uint16)
    out, gray = load_image(a)
    assert gray and out[..., 0].tolist() == [[0, 0, 1], [156, 255, 1]]
    rgb16 = np.stack([a, a, a], -1)
    out, gray = load_image(rgb16)
    assert not gray and out[..., 1].tolist() == [[0, 0, 1], [156, 255, 1]]


def test_float_arrays_are_in_0_1_and_clipped() -> None:
    a = np.array([[0.0, 0.5, 1.0], [-3.0, 7.0, np.nan]], dtype=np.float32)
    out, gray = load_image(a)
    assert gray and out[..., 0].tolist() == [[0, 128, 255], [0, 255, 0]]
    out, gray = load_image(np.dstack([a, a, np.zeros_like(a)]).astype(np.float64))
    assert not gray and out[..., 1].tolist() == [[0, 128, 255], [0, 255, 0]]
    assert out[..., 2].max() == 0


def test_bool_arrays_are_black_and_white() -> None:
    a = np.array([[True, False], [False, True]])
    out, gray = load_image(a)
    assert gray and out[..., 0].tolist() == [[255, 0], [0, 255]]


def test_non_contiguous_arrays() -> None:
    a = gradient_image(8, 10)
    view = a[:, ::2]
    out, _ = load_image(view)
    assert np.array_equal(out, view)


@pytest.mark.parametrize("a", [np.zeros((4, 4, 2), np.uint8), np.zeros((4,), np.uint8),
                               np.zeros((2, 4, 4, 3), np.uint8), np.zeros((0, 4, 3), np.uint8),
                               np.zeros((4, 4), np.int64), np.zeros((4, 4), np.complex64)])
def test_unusable_arrays_are_refused(a: np.ndarray) -> None:
    with pytest.raises(ImageError):
        load_image(a)


# --- paths and bytes ------------------------------------------------------------------------


def test_paths_and_bytes(tmp_path: Path) -> None:
    a = gradient_image(11, 5)
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    for src in (path, str(path), path.read_bytes()):
        out, gray = load_image(src)
        assert not gray and np.array_equal(out, a)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputMissingError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputMissingError, match="is a directory"):
        load_image(tmp_path)


def test_a_fifo_is_refused_unread(tmp_path: Path) -> None:
    """Opening a FIFO nobody writes to would block for ever."""
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(InputMissingError, match="is a FIFO, not a regular file"):
        load_image(tmp_path / "pipe.png")


def test_garbage_file_and_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(bad)
    with pytest.raises(ImageError, match="image bytes"):
        load_image(b"\x89PNG\r\n\x1a\n truncated")
    png = _png_bytes(Image.fromarray(gradient_image(32, 32)))
    with pytest.raises(ImageError):
        load_image(png[: len(png) // 2])


def test_pixel_limit() -> None:
    a = gradient_image(10, 10)
    assert load_image(a, max_pixels=100)[0].shape == (10, 10, 3)
    with pytest.raises(ImageError, match="exceeds"):
        load_image(a, max_pixels=99)


# --- tensors --------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(1, 1), (16, 16), (17, 33), (8, 40), (32, 15)])
def test_to_tensor_pads_to_multiples_of_16_and_to_array_crops(h: int, w: int) -> None:
    a = gradient_image(h, w, seed=h + w)
    t = to_tensor(a)
    assert t.shape == (1, 3, -(-h // 16) * 16, -(-w // 16) * 16)
    assert t.dtype == torch.float32
    assert t.min() >= -0.5 and t.max() <= 0.5
    # edge replication: the padding repeats the last row and column
    assert torch.equal(t[0, :, h:, :w], t[0, :, h - 1:h, :w].expand_as(t[0, :, h:, :w]))
    assert torch.equal(t[0, :, :, w:], t[0, :, :, w - 1:w].expand_as(t[0, :, :, w:]))
    back = to_array(t, h, w)
    assert back.dtype == np.uint8 and np.array_equal(back, a)


def test_to_array_clamps() -> None:
    t = torch.tensor([-2.0, 0.0, 2.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert to_array(t, 1, 3)[0, :, 0].tolist() == [0, 128, 255]


def test_to_image_modes() -> None:
    a = gradient_image(4, 5)
    assert to_image(a, False).mode == "RGB"
    g = to_image(a, True)
    assert g.mode == "L" and g.size == (5, 4)
    same = np.repeat(a[..., :1], 3, axis=2)
    assert np.array_equal(np.asarray(to_image(same, True)), same[..., 0])
