"""image_io.load_image: files, arrays and tensors to (H, W, 3) uint8 RGB; clear errors."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deforhmr_model.files.image_io import ImageLoadError, load_image

from .conftest import SHARED

PHOTOS = SHARED / "photos"
RNG = np.random.default_rng(0)


def _rgb(h=24, w=32):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check(out, h, w):
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (h, w, 3)
    assert out.flags["C_CONTIGUOUS"]


# ----------------------------------------------------------------------------- files
def test_png_rgb_roundtrip_exact(tmp_path):
    img = _rgb()
    Image.fromarray(img).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    _check(out, 24, 32)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png")), img)     # str path too


def test_jpeg_rgb(tmp_path):
    img = np.full((16, 20, 3), (200, 40, 10), np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=98)
    out = load_image(tmp_path / "a.jpg")
    _check(out, 16, 20)
    assert np.abs(out.astype(int) - img).max() <= 4


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:5, :5] = (255, 0, 0)                       # red block at the stored top-left
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6                                   # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "rot.jpg")
    _check(out, 40, 20)                                # upright: width and height swapped
    assert out[:5, -5:, 0].mean() > 200 and out[:5, -5:, 1].mean() < 60   # block now top-right
    assert out[:5, :5, 0].mean() < 60


def test_rgba_composited_over_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = (0, 0, 200)
    rgba[:, :5, 3] = 255                               # left half opaque blue
    rgba[:, 5:, 3] = 0                                 # right half transparent
    rgba[0, 0, 3] = 128                                # one half-transparent pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    _check(out, 10, 10)
    np.testing.assert_array_equal(out[5, 2], (0, 0, 200))
    np.testing.assert_array_equal(out[5, 7], (255, 255, 255))
    np.testing.assert_array_equal(out[0, 0], (127, 127, 227))      # 128/255 blue over white
    black = load_image(tmp_path / "a.png", background=(0, 0, 0))
    np.testing.assert_array_equal(black[5, 7], (0, 0, 0))


def test_opaque_rgba_keeps_colours(tmp_path):
    rgba = np.concatenate([_rgb(), np.full((24, 32, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba[..., :3])


def test_greyscale_and_palette(tmp_path):
    grey = RNG.integers(0, 256, (12, 14), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    _check(out, 12, 14)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)
    pal = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (6, 4), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.info["transparency"] = 0                       # index 0 transparent
    pal.save(tmp_path / "t.png", transparency=0)
    out = load_image(tmp_path / "t.png")
    np.testing.assert_array_equal(out[0, 0], (200, 100, 50))
    np.testing.assert_array_equal(out[1, 1], (255, 255, 255))


def test_16bit_greyscale_png(tmp_path):
    g16 = (np.arange(12 * 16).reshape(12, 16) * 300).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_image(tmp_path / "g16.png")
    _check(out, 12, 16)
    np.testing.assert_array_equal(out[..., 1], ((g16.astype(np.uint32) + 128) // 257).astype(np.uint8))


def test_cmyk_jpeg(tmp_path):
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "c.jpg")
    _check(load_image(tmp_path / "c.jpg"), 24, 32)


@pytest.mark.parametrize("name, content, problem", [
    ("empty.png", b"", "empty (0 bytes)"),
    ("notes.png", b"this is not an image\n" * 10, "not an image file"),
])
def test_bad_files(tmp_path, name, content, problem):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / name)
    msg = str(info.value)
    assert problem in msg and name in msg and "\n" not in msg


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"truncated or corrupt") as info:
        load_image(path)
    assert path.name in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found") as info:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(info.value)
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)
    assert issubclass(ImageLoadError, ValueError)


# ----------------------------------------------------------------------------- arrays
def test_numpy_layouts_and_dtypes():
    img = _rgb()
    np.testing.assert_array_equal(load_image(img), img)
    grey = img[..., 0]
    np.testing.assert_array_equal(load_image(grey)[..., 2], grey)
    np.testing.assert_array_equal(load_image(grey[..., None])[..., 1], grey)
    u16 = img.astype(np.uint16) * 257                  # exact 16-bit version of img
    np.testing.assert_array_equal(load_image(u16), img)
    f = img.astype(np.float32) / 255.0
    np.testing.assert_array_equal(load_image(f), img)
    np.testing.assert_array_equal(load_image(f.astype(np.float64)), img)
    rgba = np.concatenate([img, np.full((24, 32, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), img)
    assert load_image(np.ones((4, 5), bool)).max() == 255
    out = load_image(img[:, ::-1])                     # negative strides -> contiguous copy
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, img[:, ::-1])


def test_pil_image_input():
    img = _rgb()
    np.testing.assert_array_equal(load_image(Image.fromarray(img)), img)


@pytest.mark.parametrize("bad, problem", [
    (np.zeros((2, 3, 4, 5), np.uint8), "shape"),
    (np.zeros((3, 20, 30), np.uint8), "channels-first"),
    (np.zeros((20, 30, 5), np.uint8), "channels"),
    (np.zeros((0, 30, 3), np.uint8), "empty"),
    (np.full((4, 4, 3), 255.0, np.float32), "0..1"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    (np.full((4, 4, 3), -3, np.int32), "integer"),
    (np.zeros((4, 4, 3), np.complex64), "dtype"),
])
def test_bad_arrays(bad, problem):
    with pytest.raises(ImageLoadError, match=problem) as info:
        load_image(bad)
    assert "numpy array" in str(info.value)


def test_unsupported_type():
    with pytest.raises(ImageLoadError, match="cannot load an image from a list"):
        load_image([[1, 2, 3]])


# ----------------------------------------------------------------------------- torch
def test_torch_tensors():
    torch = pytest.importorskip("torch")
    img = _rgb()
    f = torch.from_numpy(img.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(load_image(f[None]), img)                   # ComfyUI (1, H, W, C)
    np.testing.assert_array_equal(load_image(f.permute(2, 0, 1)), img)        # torchvision (C, H, W)
    np.testing.assert_array_equal(load_image(torch.from_numpy(img)), img)     # uint8 HWC
    assert load_image(f.to(torch.bfloat16)).shape == (24, 32, 3)              # bf16 (no numpy dtype)
    with pytest.raises(ImageLoadError, match="torch tensor"):
        load_image(torch.zeros(2, 3, 8, 8))


# ----------------------------------------------------------------------------- real photos
@pytest.mark.skipif(not PHOTOS.is_dir(), reason="shared photos not available")
def test_real_photos_full_resolution():
    big = load_image(PHOTOS / "dev" / "pexels-anete-lusina-4793258.jpg")
    _check(big, 6016, 4016)                            # kept at full resolution
    skates = load_image(PHOTOS / "dev" / "skates.png")  # RGBA file
    _check(skates, 550, 1334)
