"""MNIST: find, download, verify and read the four original IDX files.

The files are looked up in an explicit folder, then in $VAEGUARD_MNIST_DIR, then in a per-user
cache that is filled from public mirrors on first use. Every download is checked against known
md5 sums before it is kept, so a broken mirror or a cut connection never leaves a bad file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ._version import __version__
from .atomic import atomic_write
from .errors import DataError, DownloadError

MNIST_DIR_ENV = "VAEGUARD_MNIST_DIR"
CACHE_DIR_ENV = "VAEGUARD_CACHE_DIR"

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# The train images accept a second sum: a copy holding the same 60,000 images and labels with
# images of one digit in another order (the project's shared CI copy) is equally valid.
MD5: dict[str, tuple[str, ...]] = {
    "train-images-idx3-ubyte.gz": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "cca5a2480530c91fbcc4f0ac2eb7efb5",
    ),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",),
}

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}

ProgressCallback = Callable[[str, int, int | None], None]


def default_cache_dir() -> Path:
    """Where downloaded MNIST files live: $VAEGUARD_CACHE_DIR (used as is), else
    $XDG_CACHE_HOME/vaeguard/mnist, else ~/.cache/vaeguard/mnist."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vaeguard" / "mnist"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or raw (told apart by content), into a native-endian array."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"IDX file {path} is a corrupt or truncated gzip file: {exc}") from None

    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(data)} bytes, no complete header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: magic number starts {data[:2].hex()}, expected 0000"
        )
    code, ndim = data[2], data[3]
    dtype = _IDX_DTYPES.get(code)
    if dtype is None:
        raise DataError(f"IDX file {path} has unknown data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"IDX file {path} declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"IDX file {path} is truncated inside its header ({ndim} dimensions need "
            f"{header_len} bytes, file has {len(data)})"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {problem}: shape {dims} needs {expected} payload bytes, "
            f"found {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def file_md5(path: str | Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _has_good_copy(path: Path) -> bool:
    return path.is_file() and file_md5(path) in MD5[path.name]


class _ChecksumMismatch(Exception):
    """A download finished but its md5 is not one we accept."""


def _fetch(
    opener: urllib.request.OpenerDirector,
    url: str,
    dest: Path,
    timeout: float,
    progress: ProgressCallback | None,
) -> None:
    """Stream `url` into `dest` atomically; the file is kept only if its md5 is accepted."""
    request = urllib.request.Request(url, headers={"User-Agent": f"vaeguard/{__version__}"})
    with opener.open(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        digest = hashlib.md5(usedforsecurity=False)
        done = 0
        with atomic_write(dest, "wb") as fh:
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(dest.name, done, total)
            if total is not None and done != total:
                raise http.client.IncompleteRead(b"", total - done)
            if digest.hexdigest() not in MD5[dest.name]:
                raise _ChecksumMismatch(
                    f"checksum mismatch (md5 {digest.hexdigest()}, expected "
                    f"{' or '.join(MD5[dest.name])}); download discarded"
                )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect: {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _is_connection_failure(exc: BaseException) -> bool:
    """True when the server was never reached (what an offline machine sees)."""
    return isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _ChecksumMismatch):
        return False
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in _RETRYABLE_HTTP
    return isinstance(exc, (OSError, http.client.HTTPException))


def _try_mirror(
    opener: urllib.request.OpenerDirector,
    url: str,
    dest: Path,
    retries: int,
    timeout: float,
    backoff: float,
    progress: ProgressCallback | None,
    sleep: Callable[[float], None],
) -> Exception | None:
    """Fetch `url` with up to `retries` attempts; return None on success, else the last error."""
    error: Exception | None = None
    for attempt in range(retries):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:
            _fetch(opener, url, dest, timeout, progress)
            return None
        except Exception as exc:  # noqa: BLE001 - the caller reports every failure
            error = exc
            if not _is_retryable(exc):
                break
    return error


def download_mnist(
    dest_dir: str | Path,
    *,
    mirrors: Sequence[str] = MIRRORS,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: ProgressCallback | None = None,
    files: Iterable[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download the MNIST files missing from `dest_dir` (or failing their checksum); return it.

    Each file is tried on every mirror in order, `retries` attempts per mirror with exponential
    backoff (`backoff`, 2*`backoff`, ...) between attempts. A download whose md5 is wrong is
    discarded and the next mirror is tried. `files` limits the work to some of the file names in
    `MD5`; `progress(name, bytes_done, bytes_total_or_None)` is called as data arrives.
    """
    if retries < 1:
        raise ValueError(f"retries must be at least 1, got {retries}")
    if not mirrors:
        raise ValueError("no mirrors given")
    dest_dir = Path(dest_dir).expanduser()
    names = list(MD5) if files is None else list(files)
    unknown = [name for name in names if name not in MD5]
    if unknown:
        raise ValueError(f"unknown MNIST file(s) {unknown}; known: {list(MD5)}")

    # Built per call so proxy settings are read from the environment now, not at import.
    opener = urllib.request.build_opener()
    for name in names:
        dest = dest_dir / name
        if _has_good_copy(dest):
            continue
        failures: list[tuple[str, BaseException]] = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            error = _try_mirror(opener, url, dest, retries, timeout, backoff, progress, sleep)
            if error is None:
                break
            failures.append((url, error))
        else:
            raise DownloadError(
                _failure_message(name, dest_dir, names, mirrors, failures, dest.exists())
            )
    return dest_dir


def _failure_message(
    name: str,
    dest_dir: Path,
    names: list[str],
    mirrors: Sequence[str],
    failures: list[tuple[str, BaseException]],
    bad_copy_present: bool,
) -> str:
    lines = [f"could not download {name} from any mirror:"]
    lines += [f"  - {url}: {_describe(exc)}" for url, exc in failures]
    if bad_copy_present:
        lines.append(f"(the existing {dest_dir / name} has an unexpected checksum)")
    if all(_is_connection_failure(exc) for _, exc in failures):
        lines.append("No mirror could be reached: this machine looks offline.")
    else:
        lines.append("No mirror served a good copy.")
    wanted = "the four files" if set(names) == set(MD5) else ", ".join(names)
    lines.append(
        f"To fix it, download {wanted} by hand into {dest_dir}, or pass --data-dir / set "
        f"{MNIST_DIR_ENV} to a folder that holds them. Mirrors: {', '.join(mirrors)}"
    )
    return "\n".join(lines)


def _needed_files(splits: Iterable[str]) -> list[str]:
    names: list[str] = []
    for split in splits:
        if split not in FILES:
            raise ValueError(f"unknown MNIST split {split!r}; expected one of {list(FILES)}")
        names.extend(FILES[split])
    return names


def _missing(directory: Path, names: list[str]) -> list[str]:
    return [name for name in names if not (directory / name).is_file()]


def resolve_mnist_dir(
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    splits: Iterable[str] = ("train", "test"),
) -> Path:
    """Return the folder holding the MNIST files for `splits`.

    Precedence: `data_dir`, then $VAEGUARD_MNIST_DIR, then `default_cache_dir()`. Only the cache
    is ever downloaded into; a user's own folder that lacks files raises DataError.
    """
    names = _needed_files(splits)
    cache = default_cache_dir()
    if data_dir is not None:
        directory, source = Path(data_dir).expanduser(), "data folder"
    elif os.environ.get(MNIST_DIR_ENV):
        directory, source = Path(os.environ[MNIST_DIR_ENV]).expanduser(), f"${MNIST_DIR_ENV}"
    else:
        directory, source = cache, None

    is_cache = directory.resolve() == cache.resolve()
    if is_cache and download:
        return download_mnist(directory, files=names)
    missing = _missing(directory, names)
    if missing:
        where = f"MNIST {source} {directory}" if source else f"MNIST cache {directory}"
        if not directory.is_dir():
            problem = "does not exist"
        else:
            problem = "lacks " + ", ".join(missing)
        hint = (
            "allow downloading or put the files there by hand"
            if is_cache
            else "put the files there, or point --data-dir / "
            f"{MNIST_DIR_ENV} at a folder that holds them"
        )
        raise DataError(f"{where} {problem}; {hint} (needed: {', '.join(names)})")
    return directory


def load_mnist(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split: X float32 (n, 784) scaled to [0, 1], y int64 digit labels."""
    if split not in FILES:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {list(FILES)}")
    directory = resolve_mnist_dir(data_dir, download=download, splits=(split,))
    images_path, labels_path = (directory / name for name in FILES[split])

    images = read_idx(images_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path} does not hold 28x28 uint8 images (dtype {images.dtype}, "
            f"shape {images.shape})"
        )
    labels = read_idx(labels_path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path} does not hold uint8 labels (dtype {labels.dtype}, shape {labels.shape})"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        row = int(np.argmax(labels > 9))
        raise DataError(f"{labels_path} has label {labels[row]} at row {row}; digits are 0-9")

    X = np.divide(images.reshape(len(images), -1), 255, dtype=np.float32)
    return X, labels.astype(np.int64)


_PART = re.compile(r"^([0-9]+)(?:\s*-\s*([0-9]+))?$")


def parse_digits(text: str) -> list[int]:
    """Parse a digit set such as "3", "0-8" or "0,2,5-7" into sorted unique digits."""
    if not isinstance(text, str):
        raise TypeError(f"digits must be given as text, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("empty digit list; give digits like 3, 0-8 or 0,2,5-7")
    digits: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        match = _PART.match(part)
        if not match:
            raise ValueError(
                f"cannot read {part!r} in digit list {text!r}; use digits 0-9, ranges like "
                "2-5, separated by commas"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        for value in (low, high):
            if value > 9:
                raise ValueError(f"{value} in digit list {text!r} is not a digit 0-9")
        if high < low:
            raise ValueError(
                f"range {part!r} in digit list {text!r} runs backwards; write {high}-{low}"
            )
        digits.update(range(low, high + 1))
    return sorted(digits)
