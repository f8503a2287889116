"""Read folders of images as flat float32 rows, and write per-pixel score maps as PNGs.

Every image is converted to one fixed shape (C, H, W): grayscale ("L") or RGB, resized with
bilinear filtering, scaled to [0, 1] and flattened channel-first. Transparent pixels are
composited onto black; 16-bit and 32-bit integer grayscale is scaled by the 16-bit range (not
clipped at 255) and floating-point images are taken as [0, 1].
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .errors import DataError
from .inputs import walk_files
from .limits import MAX_IMAGE_PIXELS, check_image_shape

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
    check_image_shape((c, h, w))
    return c, h, w


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (recursively, any suffix case), sorted by relative path.

    Hidden files and folders are left out; so is a subfolder that cannot be read, with a warning.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    found = walk_files(folder, lambda name: name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."))
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


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning)
_EXIF_ORIENTATION = 0x0112
# The only decoders vaeguard lets Pillow use: a file of any other format (an EPS, a PDF, an
# SVG ...) is refused whatever its name says, so no external program (Ghostscript) ever runs.
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")


def _open_regular(path: Path):
    """A binary file object for `path`, refusing anything that is not a regular file.

    The stat check comes first and the file is opened with O_NONBLOCK, so a FIFO or a device
    named like an image is refused instead of blocking the run forever.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Unreadable("no such file") from None
    except OSError as exc:
        raise _Unreadable(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Unreadable("not a regular file (a FIFO, device or folder named like an image)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _Unreadable(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the two calls
        os.close(fd)
        raise _Unreadable("not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _header(path: Path) -> Image.Image:
    """The image with only its header parsed: format and size checked, pixels not decoded yet."""
    fh = _open_regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fh, formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        fh.close()
        raise _Unreadable(f"not a readable {', '.join(ACCEPTED_FORMATS[:-1])} or {ACCEPTED_FORMATS[-1]} image") from None
    except _DECODE_ERRORS as exc:
        fh.close()
        raise _Unreadable(f"cannot read image: {exc}") from exc
    image._vaeguard_file = fh  # closed with the image (see _close)
    pixels = image.width * image.height
    if pixels > MAX_IMAGE_PIXELS:
        _close(image)
        raise _Unreadable(
            f"{image.width}x{image.height} pixels is over the limit of {MAX_IMAGE_PIXELS:,} pixels per image"
        )
    return image


def _close(image: Image.Image) -> None:
    fh = getattr(image, "_vaeguard_file", None)
    image.close()
    if fh is not None:
        fh.close()


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The one way vaeguard opens an image file: decoded and upright, then closed.

    Only regular files, only the PNG, JPEG, BMP and TIFF decoders, at most MAX_IMAGE_PIXELS
    pixels (checked from the header, before decoding; Pillow's decompression-bomb limit is
    an error too). Every refusal is `_Unreadable` (a per-file error) with the reason.
    """
    image = _header(Path(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                upright = ImageOps.exif_transpose(image)
                _close(image)
                image = upright
    except _DECODE_ERRORS as exc:
        _close(image)
        raise _Unreadable(f"cannot read image: {exc}") from exc
    try:
        yield image
    finally:
        _close(image)


def _load_row(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    with open_image(path) as image:
        try:
            values = _to_array(image, c, (w, h))
        except (OSError, ValueError) as exc:
            raise _Unreadable(f"cannot convert image (mode {image.mode}): {exc}") from exc
    if not np.isfinite(values).all():
        raise _Unreadable(f"holds {int((~np.isfinite(values)).sum())} NaN or infinite pixel values")
    return np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32).reshape(-1)


def load_image(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as a flat float32 row of length C*H*W, channel-first, values in [0, 1]."""
    shape = _check_shape(shape)
    try:
        return _load_row(Path(path), shape)
    except _Unreadable as exc:
        raise DataError(f"{path}: {exc}") from exc.__cause__


def _header_shape(image: Image.Image) -> tuple[int, int, int]:
    """(C, H, W) from the header alone, as the upright image will have it."""
    height, width = image.height, image.width
    with contextlib.suppress(*_DECODE_ERRORS):
        if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # turned by 90 degrees
            height, width = width, height
    return (1 if _is_gray(image) else 3, height, width)


def _shape_of(path: Path) -> tuple[int, int, int]:
    image = _header(path)
    try:
        return _header_shape(image)
    finally:
        _close(image)


def infer_image_shape(path: str | Path) -> tuple[int, int, int]:
    """(C, H, W) of one image from its header: C = 1 for grayscale-like modes, else 3."""
    try:
        return _shape_of(Path(path))
    except _Unreadable as exc:
        raise DataError(f"{path}: {exc}") from exc.__cause__


def shown_name(path: Path, folder: Path) -> str:
    """The path relative to `folder`, '/'-separated; bytes that are not UTF-8 as \\xNN escapes."""
    rel = path.relative_to(folder).as_posix()
    return os.fsencode(rel).decode("utf-8", errors="backslashreplace")


def _valid_name(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder).as_posix().encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_image_batches(folder: str | Path, shape: tuple[int, int, int], *, batch_size: int = 256,
                       files: list[Path] | None = None) -> Iterator[ImageBatch]:
    """Load the folder's images (`files`, by default `list_images(folder)`) in batches of
    `batch_size` files; failed files go to `errors`.

    A file whose name is not valid UTF-8 is listed as an error under its escaped name.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    c, h, w = _check_shape(shape)
    folder = Path(folder)
    files = list_images(folder) if files is None else files
    for start in range(0, len(files), batch_size):
        paths, rows, errors = [], [], []
        for path in files[start : start + batch_size]:
            rel = shown_name(path, folder)
            if not _valid_name(path, folder):
                errors.append((rel, "the file name is not valid UTF-8; rename the file"))
                continue
            try:
                rows.append(_load_row(path, (c, h, w)))
            except _Unreadable as exc:
                errors.append((rel, str(exc)))
                continue
            paths.append(rel)
        X = np.stack(rows) if rows else np.empty((0, c * h * w), dtype=np.float32)
        yield ImageBatch(paths, X, errors)


def _folder_shape(folder: Path, files: list[Path]) -> tuple[int, int, int]:
    """The shape every readable image among `files` (in `folder`) shares, read from the headers.

    Height and width must agree: otherwise a DataError names the odd files and asks for
    --image-size (resizing silently to whichever file sorts first made wrong models). The
    channel count is the majority's; files with the other count are converted (grey to RGB
    repeats the plane, RGB to grey averages it) and named in a warning.
    """
    shapes: dict[str, tuple[int, int, int]] = {}
    failures = []
    for path in files:
        try:
            shapes[shown_name(path, folder)] = _shape_of(path)
        except _Unreadable as exc:
            failures.append(f"{shown_name(path, folder)}: {exc}")
    if not shapes:
        raise DataError(f"{folder}: no readable image ({len(failures)} failed; first: {failures[0]})")
    sizes = Counter(s[1:] for s in shapes.values())
    (h, w), count = sizes.most_common(1)[0]
    if len(sizes) > 1:
        odd = [f"{name} ({s[1]}x{s[2]})" for name, s in shapes.items() if s[1:] != (h, w)]
        raise DataError(
            f"{folder}: the images differ in size: {count} of {len(shapes)} are {h}x{w}, but "
            f"{', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}; pass --image-size HEIGHTxWIDTH "
            "to resize them all to one size"
        )
    channels = Counter(s[0] for s in shapes.values())
    c = channels.most_common(1)[0][0]
    if len(channels) > 1:
        odd = [name for name, s in shapes.items() if s[0] != c]
        warnings.warn(
            f"{folder}: {len(odd)} of {len(shapes)} images are {'RGB' if c == 1 else 'grayscale'} "
            f"among {'grayscale' if c == 1 else 'RGB'} ones and will be converted: "
            f"{', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}; pass --channels to choose",
            UserWarning,
            stacklevel=3,
        )
    return c, h, w


def read_image_folder(folder: str | Path, shape: tuple[int, int, int] | None = None) -> ImageFolder:
    """Load a whole image folder for training; `shape` defaults to the one every image shares."""
    folder = Path(folder)
    files = list_images(folder)  # once: a subfolder left out is named in one warning
    shape = _check_shape(_folder_shape(folder, files) if shape is None else shape)
    batches = list(iter_image_batches(folder, shape, files=files))
    return ImageFolder(
        X=np.concatenate([b.X for b in batches]),
        paths=[p for b in batches for p in b.paths],
        shape=shape,
        errors=[e for b in batches for e in b.errors],
    )


def save_heatmap_png(values: np.ndarray, path: str | Path, *, vmax: float | None = None, inputs=()) -> None:
    """Save a (H, W) map as an 8-bit inferno-coloured PNG, 0 -> dark, `vmax` (or the map's max) -> bright."""
    import matplotlib

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise DataError(f"{path}: a heatmap must be a 2-D (height, width) array, got shape {values.shape}")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    top = float(values.max()) if vmax is None else float(vmax)
    scaled = np.clip(values / top, 0.0, 1.0) if top > 0 else np.zeros_like(values)
    rgb = matplotlib.colormaps["inferno"](scaled, bytes=True)[:, :, :3]
    with atomic_write(path, "wb", inputs=inputs) as fh:
        Image.fromarray(np.ascontiguousarray(rgb)).save(fh, format="PNG")
