"""Read folders of images as flat float32 rows, and write per-pixel score maps as PNGs.

Every image is converted to one fixed shape (C, H, W): grayscale ("L") or RGB, resized with
bilinear filtering, scaled to [0, 1] and flattened channel-first. Transparent pixels are
composited onto black; 16-bit and 32-bit integer grayscale is scaled by the 16-bit range (not
clipped at 255) and floating-point images are taken as [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .atomic import atomic_write
from .errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}
_HIGH_DEPTH_MAX = {"I": 65535.0, "F": 1.0}


@dataclass
class ImageBatch:
    """Images loaded from one batch of files, and the files that failed."""

    paths: list[str]
    X: np.ndarray
    errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ImageFolder:
    """A whole image folder for training: rows, their relative paths, the shape and failures."""

    X: np.ndarray
    paths: list[str]
    shape: tuple[int, int, int]
    errors: list[tuple[str, str]] = field(default_factory=list)


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise DataError(f"image shape must be (channels, height, width), got {shape!r}") from None
    if c not in (1, 3) or h < 1 or w < 1:
        raise DataError(f"image shape must have 1 or 3 channels and a positive size, got {tuple(shape)}")
    return c, h, w


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (recursively, any suffix case), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    if not found:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or below")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _is_gray(image: Image.Image) -> bool:
    if image.mode.startswith("I;16") or image.mode in _GRAY_MODES:
        return True
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [0, 0, 0], dtype=np.int64).reshape(-1, 3)
        return bool(np.all(palette == palette[:, :1]))
    return False


def _to_array(image: Image.Image, channels: int, size: tuple[int, int]) -> np.ndarray:
    """The image as float32 (H, W, C) in [0, 1] at `size` (width, height)."""
    if image.mode.startswith("I;16") or image.mode in _HIGH_DEPTH_MAX:
        top = _HIGH_DEPTH_MAX["F" if image.mode == "F" else "I"]
        values = np.clip(np.asarray(image, dtype=np.float32) / top, 0.0, 1.0)
        plane = Image.fromarray(values)
        if plane.size != size:
            plane = plane.resize(size, Image.Resampling.BILINEAR)
        gray = np.asarray(plane, dtype=np.float32)[:, :, None]
        return np.repeat(gray, channels, axis=2)
    has_alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    values = np.asarray(image, dtype=np.float32) / 255.0
    return values[:, :, None] if channels == 1 else values


class _Unreadable(Exception):
    """Why one image file could not be used (the caller adds the file name)."""


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_EXIF_ORIENTATION = 0x0112


def _open(path: Path) -> Image.Image:
    """The decoded image, turned upright as its EXIF orientation says (as viewers show it)."""
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise _Unreadable("no such file") from None
    except _DECODE_ERRORS as exc:
        raise _Unreadable(f"cannot read image: {exc}") from exc
    try:
        image.load()
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            upright = ImageOps.exif_transpose(image)
            image.close()
            image = upright
    except _DECODE_ERRORS as exc:
        image.close()
        raise _Unreadable(f"cannot read image: {exc}") from exc
    return image


def _load_row(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    with _open(path) as image:
        try:
            values = _to_array(image, c, (w, h))
        except (OSError, ValueError) as exc:
            raise _Unreadable(f"cannot convert image (mode {image.mode}): {exc}") from exc
    return np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32).reshape(-1)


def load_image(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as a flat float32 row of length C*H*W, channel-first, values in [0, 1]."""
    shape = _check_shape(shape)
    try:
        return _load_row(Path(path), shape)
    except _Unreadable as exc:
        raise DataError(f"{path}: {exc}") from exc.__cause__


def infer_image_shape(path: str | Path) -> tuple[int, int, int]:
    """(C, H, W) of one image: C = 1 for grayscale-like modes, else 3."""
    try:
        with _open(Path(path)) as image:
            return (1 if _is_gray(image) else 3, image.height, image.width)
    except _Unreadable as exc:
        raise DataError(f"{path}: {exc}") from exc.__cause__


def iter_image_batches(folder: str | Path, shape: tuple[int, int, int], *, batch_size: int = 256) -> Iterator[ImageBatch]:
    """Load the folder's images in batches of `batch_size` files; failed files go to `errors`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    c, h, w = _check_shape(shape)
    folder = Path(folder)
    files = list_images(folder)
    for start in range(0, len(files), batch_size):
        paths, rows, errors = [], [], []
        for path in files[start : start + batch_size]:
            rel = path.relative_to(folder).as_posix()
            try:
                rows.append(_load_row(path, (c, h, w)))
            except _Unreadable as exc:
                errors.append((rel, str(exc)))
                continue
            paths.append(rel)
        X = np.stack(rows) if rows else np.empty((0, c * h * w), dtype=np.float32)
        yield ImageBatch(paths, X, errors)


def read_image_folder(folder: str | Path, shape: tuple[int, int, int] | None = None) -> ImageFolder:
    """Load a whole image folder for training; `shape` defaults to that of the first readable image."""
    folder = Path(folder)
    if shape is None:
        failures = []
        for path in list_images(folder):
            try:
                shape = infer_image_shape(path)
                break
            except DataError as exc:
                failures.append(str(exc))
        else:
            raise DataError(f"{folder}: no readable image ({len(failures)} failed; first: {failures[0]})")
    shape = _check_shape(shape)
    batches = list(iter_image_batches(folder, shape))
    return ImageFolder(
        X=np.concatenate([b.X for b in batches]),
        paths=[p for b in batches for p in b.paths],
        shape=shape,
        errors=[e for b in batches for e in b.errors],
    )


def save_heatmap_png(values: np.ndarray, path: str | Path, *, vmax: float | None = None) -> None:
    """Save a (H, W) map as an 8-bit inferno-coloured PNG, 0 -> dark, `vmax` (or the map's max) -> bright."""
    import matplotlib

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise DataError(f"{path}: a heatmap must be a 2-D (height, width) array, got shape {values.shape}")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    top = float(values.max()) if vmax is None else float(vmax)
    scaled = np.clip(values / top, 0.0, 1.0) if top > 0 else np.zeros_like(values)
    rgb = matplotlib.colormaps["inferno"](scaled, bytes=True)[:, :, :3]
    with atomic_write(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(rgb)).save(fh, format="PNG")
