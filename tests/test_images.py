"""Image folders: listing, conversion to a fixed shape, failures, and heatmap PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vaeguard.errors import DataError
from vaeguard.images import (
    infer_image_shape,
    iter_image_batches,
    list_images,
    load_image,
    read_image_folder,
    save_heatmap_png,
)


def gray(value: int, size=(4, 3)) -> Image.Image:
    return Image.new("L", size, value)


@pytest.fixture
def folder(tmp_path):
    """Nested PNG, JPEG, BMP and TIFF files (lossless ones hold known gray levels) and clutter."""
    root = tmp_path / "imgs"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    gray(0).save(root / "a" / "zero.png")
    gray(255).save(root / "b" / "deep" / "white.BMP")
    gray(51).save(root / "b" / "mid.tiff")
    gray(102).convert("RGB").save(root / "c.JPG", quality=100)
    (root / "notes.txt").write_text("not an image")
    (root / "._zero.png").write_bytes(b"macOS metadata, hidden")
    (root / ".cache").mkdir()
    gray(9).save(root / ".cache" / "hidden.png")
    return root


def test_list_images_recursive_sorted_any_case_without_hidden_files(folder):
    rel = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert rel == ["a/zero.png", "b/deep/white.BMP", "b/mid.tiff", "c.JPG"]


def test_list_images_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty: no images"):
        list_images(tmp_path / "empty")


def test_load_image_gray_values_in_unit_range(folder):
    x = load_image(folder / "b" / "mid.tiff", (1, 3, 4))
    assert x.dtype == np.float32 and x.shape == (12,)
    np.testing.assert_allclose(x, 51 / 255)
    np.testing.assert_allclose(load_image(folder / "b" / "deep" / "white.BMP", (3, 3, 4)), 1.0)


def test_rgb_to_gray_and_resize(tmp_path):
    image = Image.new("RGB", (8, 6), (255, 0, 0))
    image.save(tmp_path / "red.png")
    x = load_image(tmp_path / "red.png", (1, 3, 4))
    assert x.shape == (12,)
    np.testing.assert_allclose(x, 76 / 255, atol=1 / 255)  # ITU-R 601 luma of pure red


def test_rgb_is_channel_first(tmp_path):
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 20, 30
    pixels[0, 0] = (200, 100, 50)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    x = load_image(tmp_path / "rgb.png", (3, 2, 3)).reshape(3, 2, 3)
    np.testing.assert_allclose(x[:, 0, 0], np.array([200, 100, 50]) / 255)
    np.testing.assert_allclose(x[:, 1, 2], np.array([10, 20, 30]) / 255)


def test_alpha_palette_and_16_bit(tmp_path):
    Image.new("RGBA", (2, 2), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    np.testing.assert_allclose(load_image(tmp_path / "clear.png", (3, 2, 2)), 0.0)
    gray(200, (2, 2)).convert("P").save(tmp_path / "palette.png")
    np.testing.assert_allclose(load_image(tmp_path / "palette.png", (1, 2, 2)), 200 / 255, atol=1 / 255)
    Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    np.testing.assert_allclose(load_image(tmp_path / "deep.png", (1, 2, 2)), 1.0)
    assert infer_image_shape(tmp_path / "deep.png") == (1, 2, 2)
    assert infer_image_shape(tmp_path / "palette.png") == (1, 2, 2)
    assert infer_image_shape(tmp_path / "clear.png") == (3, 2, 2)


def test_corrupt_file_is_a_data_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"bad.png: not a readable PNG, JPEG, BMP or TIFF image"):
        load_image(tmp_path / "bad.png", (1, 2, 2))


def test_batches_list_corrupt_files_and_go_on(folder):
    (folder / "b" / "broken.png").write_bytes(b"garbage")
    batches = list(iter_image_batches(folder, (1, 3, 4), batch_size=2))
    assert [len(b.paths) + len(b.errors) for b in batches] == [2, 2, 1]
    assert [p for b in batches for p in b.paths] == ["a/zero.png", "b/deep/white.BMP", "b/mid.tiff", "c.JPG"]
    [(rel, message)] = [e for b in batches for e in b.errors]
    assert rel == "b/broken.png" and message == "not a readable PNG, JPEG, BMP or TIFF image"
    X = np.concatenate([b.X for b in batches])
    assert X.shape == (4, 12) and X.dtype == np.float32
    np.testing.assert_allclose(X[:3].mean(axis=1), [0.0, 1.0, 51 / 255])
    np.testing.assert_allclose(X[3].mean(), 102 / 255, atol=2 / 255)


def test_read_image_folder_infers_shape_from_first_readable(folder):
    (folder / "a" / "0_broken.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"1 of 4 images are RGB among grayscale ones and will be converted: c.JPG"):
        data = read_image_folder(folder)
    assert data.shape == (1, 3, 4)
    assert data.X.shape == (4, 12)
    assert data.paths[0] == "a/zero.png" and [e[0] for e in data.errors] == ["a/0_broken.png"]
    assert read_image_folder(folder, (3, 2, 2)).X.shape == (4, 12)


def test_read_image_folder_with_nothing_readable(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable image"):
        read_image_folder(tmp_path)


def test_save_heatmap_png(tmp_path):
    values = np.array([[0.0, 1.0], [2.0, 4.0]])
    path = tmp_path / "maps" / "sub" / "a.png.png"
    save_heatmap_png(values, path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (2, 2)
        pixels = np.asarray(image).astype(int)
    brightness = pixels.sum(axis=2)
    assert brightness[0, 0] < brightness[0, 1] < brightness[1, 0] < brightness[1, 1]
    save_heatmap_png(values, path, vmax=1.0)
    with Image.open(path) as image:
        clipped = np.asarray(image)
    assert (clipped[0, 1] == clipped[1, 1]).all()
    assert list(path.parent.iterdir()) == [path]


def test_exif_orientation_is_applied(tmp_path):
    image = gray(0, (4, 2))
    image.putpixel((0, 0), 255)
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    image.save(tmp_path / "turned.png", exif=exif)
    assert infer_image_shape(tmp_path / "turned.png") == (1, 4, 2)
    upright = load_image(tmp_path / "turned.png", (1, 4, 2)).reshape(4, 2)
    np.testing.assert_array_equal(upright, [[0, 1], [0, 0], [0, 0], [0, 0]])
