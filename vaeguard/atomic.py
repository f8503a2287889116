"""Write files so that an interrupted run leaves either no file or a whole one.

Every file vaeguard writes goes through `atomic_write`, which is also the one place that
guards output paths:

- an output that is the same file as an input (the data, the model, a config; compared by
  device and inode, so through symlinks and hard links too) is refused with a DataError
  naming both paths, before anything is written; so is an output inside an input folder
  (it could replace an input file, and the next run would read it as input) and an output
  that a glob input matches;
- an existing output that is not a regular file (a device such as /dev/full, a FIFO, a
  folder) is refused, never replaced;
- an output given as a symlink replaces the link's target, not the link;
- an existing output keeps its permission bits; a new one gets 0666 minus the umask;
- a text output whose name ends in `.gz` is written gzip-compressed.

The data goes to a hidden temporary file `.NAME.XXXXXXXX.part` beside the target, is fsynced
and renamed over the target only when complete. On an exception, on Ctrl-C (SIGINT) and on
SIGTERM or SIGHUP (turned into the exception `Terminated` while a write is in progress) the
temporary file is removed. A SIGKILL cannot be caught, so each writer holds an exclusive
`flock` on its temporary file while it writes; the next write to the same target removes the
`.NAME.*.part` files that are (a) named by our pattern, (b) regular files, (c) older than the
current process and (d) not locked by anyone, i.e. left behind by a run that died. A part file
being written by a live process is always locked, so it is never taken for a stale one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import glob as globbing
import gzip
import io
import os
import re
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import DataError

_PROCESS_START = time.time()
_PART_SUFFIX = ".part"
# mkstemp's random part: 8 characters of [a-z0-9_].
_PART_RANDOM = r"[a-z0-9_]{8}"
_DIR_SUFFIXES = r"\.partdir|\.old"  # atomic_dir's new and set-aside folders
_GLOB_CHARS = set("*?[")  # an input holding one of these is read as a glob (vaeguard.parquet)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a file was being written (the partial file is removed)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def is_glob(path: str | Path) -> bool:
    """True when `path` holds a glob character: such an input is read as a pattern (vaeguard.parquet)."""
    return bool(_GLOB_CHARS & set(str(path)))


def _refuse_inside(path: Path, target: Path, source: str | Path) -> None:
    """DataError when `target` (the real output path) is an input folder, lies inside one, or
    is matched by a glob input."""
    real_source = Path(os.path.realpath(source))
    if os.path.isdir(real_source) and (target == real_source or target.is_relative_to(real_source)):
        raise DataError(
            f"the output {path} is inside the input folder {source}: it could replace an input file and would be "
            f"read as input next time; choose a path outside that folder"
        )
    if is_glob(source):
        pattern = os.path.abspath(source)
        matched = {Path(os.path.realpath(p)) for p in globbing.glob(pattern, recursive=True)}
        if target in matched or fnmatch.fnmatchcase(str(target), pattern) or fnmatch.fnmatchcase(os.path.abspath(path), pattern):
            raise DataError(
                f"the output {path} matches the input pattern {source}: it could replace an input file and would be "
                f"read as input next time; choose a path the pattern does not match"
            )


def check_output(path: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """The real path to write `path` to, or DataError when writing it would destroy something.

    Refused: `path` is the same file as one of `inputs` (compared through symlinks and hard
    links), lies inside an input folder or matches an input glob, or `path` exists and is not
    a regular file. A symlink resolves to its target.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path} is {_kind(st.st_mode)}, not a regular file: refusing to replace it; choose another output path")
    for source in inputs:
        if source is None:
            continue
        same = False
        if st is not None:
            with contextlib.suppress(OSError):
                same = os.path.samefile(target, source)
        same = same or target == Path(os.path.realpath(source))
        if same:
            raise DataError(f"the output {path} is the input {source}: refusing to overwrite it; choose another output path")
        _refuse_inside(path, target, source)
    return target


def _is_stale(part: Path, *, folder: bool = False) -> bool:
    """True when `part` is a regular file (or, with `folder`, a folder) older than this process
    that nobody holds locked."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_DIRECTORY if folder else 0)
    try:
        fd = os.open(part, flags)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        kind_ok = stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)
        if not kind_ok or st.st_mtime >= _PROCESS_START:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False  # a live writer holds it
            raise
        return True
    finally:
        os.close(fd)


def remove_stale_parts(target: str | Path) -> list[Path]:
    """Remove `.NAME.XXXXXXXX.part` files (and the `.partdir`/`.old` folders of `atomic_dir`)
    beside `target` left by runs that died; return them."""
    import shutil

    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{_PART_RANDOM}(?P<suffix>{re.escape(_PART_SUFFIX)}|{_DIR_SUFFIXES})$")
    removed = []
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    for name in names:
        found = pattern.match(name)
        if not found:
            continue
        part = target.parent / name
        folder = found["suffix"] != _PART_SUFFIX
        with contextlib.suppress(OSError):
            if _is_stale(part, folder=folder):
                if folder:
                    shutil.rmtree(part)
                else:
                    part.unlink()
                removed.append(part)
    return removed


# Signals turned into `Terminated` while at least one write is in progress (main thread only).
_CAUGHT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_signal_lock = threading.Lock()
_signal_depth = 0
_saved_handlers: dict[int, object] = {}


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """While inside, SIGTERM/SIGHUP with the default action raise `Terminated` instead of killing."""
    global _signal_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _signal_lock:
        if _signal_depth == 0:
            for signum in _CAUGHT_SIGNALS:
                if signal.getsignal(signum) is signal.SIG_DFL:
                    _saved_handlers[signum] = signal.signal(signum, _raise_terminated)
        _signal_depth += 1
    try:
        yield
    finally:
        with _signal_lock:
            _signal_depth -= 1
            if _signal_depth == 0:
                for signum, handler in _saved_handlers.items():
                    signal.signal(signum, handler)
                _saved_handlers.clear()


@contextlib.contextmanager
def atomic_write(
    path: str | Path,
    mode: str = "w",
    *,
    inputs: Iterable[str | Path | None] = (),
    encoding: str = "utf-8",
    newline: str | None = None,
) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success, fsync it and rename it over `path`.

    `mode` is "w" (text) or "wb". `inputs` are files this output must not replace (see
    `check_output`). On any exception, SIGINT or SIGTERM the temporary file is removed and an
    existing `path` is left untouched. A text `path` ending in `.gz` is gzip-compressed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    target = check_output(path, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.stat(target)
        permissions = stat.S_IMODE(st.st_mode) & 0o777
    except FileNotFoundError:
        permissions = 0o666 & ~_umask()
    remove_stale_parts(target)
    with _signals_as_exceptions():
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_PART_SUFFIX, dir=target.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with os.fdopen(fd, "wb") as raw:
                if mode == "wb":
                    yield raw
                else:
                    compressed = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if target.name.endswith(".gz") else None
                    text = io.TextIOWrapper(compressed or raw, encoding=encoding, newline=newline)
                    yield text
                    text.flush()
                    text.detach()
                    if compressed is not None:
                        compressed.close()  # writes the gzip trailer; leaves `raw` open
                raw.flush()
                os.fsync(raw.fileno())
                os.chmod(tmp_name, permissions)
                os.replace(tmp_name, target)  # still locked until `raw` closes
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise


DATASET_MARK = "_vaeguard_output"  # a leading "_": Parquet readers (pyarrow, Dask, Spark) skip it


def check_output_folder(path: Path, inputs: Iterable[str | Path | None]) -> None:
    """DataError unless `path` may become (or be replaced by) a dataset folder written by vaeguard."""
    inputs = [i for i in inputs if i is not None]
    real = Path(os.path.realpath(path))
    for source in inputs:
        _refuse_inside(path, real, source)
        if Path(os.path.realpath(source)).is_relative_to(real):
            raise DataError(f"the output folder {path} holds the input {source}: refusing to replace it; choose another output folder")
    if not os.path.lexists(path):
        return
    if not path.is_dir() or path.is_symlink():
        raise DataError(f"{path} exists and is not a folder: refusing to replace it with a dataset folder")
    entries = os.listdir(path)
    if entries and DATASET_MARK not in entries:
        shown = ", ".join(map(repr, sorted(entries)[:5])) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise DataError(
            f"the output folder {path} exists and was not written by vaeguard (it holds {shown}): refusing to replace it; "
            f"choose a new or empty folder"
        )


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces the folder `path`.

    For datasets written as many files (Dask, Spark). The folder gets a `DATASET_MARK` file, and
    only a folder that is empty or holds that mark (a previous output) is ever replaced; one that
    is or holds an input, lies inside an input folder or is not a folder is refused (DataError).
    The existing folder is moved aside and removed only after the new one is in place. On any
    exception, SIGINT, SIGTERM or SIGHUP the temporary folder is removed and `path` is left as
    it was; one left by a SIGKILL is removed by the next run writing the same output (it is
    locked while in use, as `atomic_write`'s part files are).
    """
    import shutil

    path = Path(path)
    inputs = list(inputs)
    check_output_folder(path, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    with _signals_as_exceptions():
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partdir", dir=path.parent))
        lock = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield tmp
            (tmp / DATASET_MARK).write_text("written by vaeguard: a later run writing this output may replace this folder\n")
            os.chmod(tmp, 0o777 & ~_umask())
            check_output_folder(path, inputs)  # again: the folder may have changed while we wrote
            if os.path.lexists(path):
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(lock)
