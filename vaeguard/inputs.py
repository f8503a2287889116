"""What a model reads: the typed description of its input, stored in the model file.

A detector is fitted on a table (named numeric columns, optionally an id and a label column)
or on images (a fixed channels x height x width that every image is converted to). `fit` sets
the description from a DataFrame, an array or a folder alike; bulk scoring, the CLI and the
engines read new data through it, so a detector fitted in Python scores files too.
The feature scaling (standardisation) is part of the fitted estimator (`mean_`, `scale_`), not
of this description: it is learned, this is declared. Also here, as every reader needs them:
the names of the score output columns (an id column must not take one), the rows per chunk
for a table of a given width, and the walk through an input folder.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import os
import stat
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .limits import MEMORY_BUDGET_BYTES

IMAGE_RESIZE = "bilinear"
# Rows read per chunk when streaming a table. Measured with 20 columns and the fused score on
# 4.9M rows: `vaeguard score` peaks near 440 MB (CSV) and 450 MB (Parquet), whatever the file
# size (README, "Parquet, Dask, Spark and out-of-core training").
CHUNK_ROWS = 20_000
# Bytes one cell of a chunk may cost while it is read and scored (text, parsed columns, features,
# per-feature scores and their ranking), with a margin: measured at 37 (peak RSS scoring a
# 20,000-column CSV 300 rows at a time against 30 rows at a time), 15 when the model reads 3
# of the columns.
CHUNK_BYTES_PER_CELL = 64
# A chunk of a wide table is cut to fit this share of the memory budget (the model has the rest).
CHUNK_BUDGET_BYTES = MEMORY_BUDGET_BYTES // 4

# The columns of a score output: a table's (after `row` and the id column) and an image folder's.
TOP_K = 3
TOP_COLUMNS = tuple(f"top_{i + 1}" for i in range(TOP_K))
SCORE_COLUMNS = ("score", "p_value", "is_anomaly", *TOP_COLUMNS, "error")
IMAGE_COLUMNS = ("path", "score", "p_value", "is_anomaly", "error")
ROW_COLUMN = "row"
NO_CELL = "every feature cell is missing: nothing to score"  # the error of a row without a value
NOT_FINITE = "score is not finite (values far outside the training data)"
FLAGGED = f"{NOT_FINITE}: flagged"  # the error column of a row whose score is NaN or infinite
# Names an id column cannot take: it is written beside these in a table's score output.
RESERVED_ID_NAMES = (ROW_COLUMN, *SCORE_COLUMNS)

# What a reader does with a row (or image) it cannot use: stop naming it, or list it and go on.
ON_BAD_ROW = ("fail", "skip")


def check_on_bad_row(on_bad_row: str) -> str:
    """`on_bad_row` itself; ValueError for anything but "fail" or "skip" (the one check)."""
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {', '.join(ON_BAD_ROW)}; got {on_bad_row!r}")
    return on_bad_row


def chunk_rows(chunk_size: int, n_columns: int) -> int:
    """Rows to read at a time: `chunk_size`, or fewer when rows of `n_columns` cells would not fit
    CHUNK_BUDGET_BYTES (a 100,000-column table at 20,000 rows a chunk would need 16 GB)."""
    return max(1, min(chunk_size, CHUNK_BUDGET_BYTES // (max(1, n_columns) * CHUNK_BYTES_PER_CELL)))


def check_id_column(id_column: str | None, where: str | None, whose: str = "the id column",
                    advice: str = "rename the column in the data") -> None:
    """DataError when the id column has the name of a score output column (scores could not be
    written beside it)."""
    if id_column in RESERVED_ID_NAMES:
        raise DataError(
            f"{where + ': ' if where else ''}{whose} {id_column!r} has the name of a score output column "
            f"({', '.join(RESERVED_ID_NAMES)}); {advice}"
        )


def walk_files(folder: Path, wanted: Callable[[str], bool], hidden: tuple[str, ...] = (".",)) -> list[Path]:
    """Every entry under `folder` whose name is `wanted` and that is not a folder, in walk order.

    Subfolders whose names start with one of `hidden` are not entered. A subfolder that cannot
    be listed (permissions) is left out with one warning naming it; an unreadable `folder`
    itself is a DataError. Entries are returned whatever their type: callers refuse FIFOs and
    devices themselves, naming them.
    """
    unreadable: list[OSError] = []
    found = []
    for root, dirs, files in os.walk(folder, onerror=unreadable.append):
        dirs[:] = [d for d in dirs if not d.startswith(hidden)]
        found += [Path(root, f) for f in files if wanted(f)]
    top = [e for e in unreadable if Path(e.filename) == folder]
    if top:
        raise DataError(f"{folder}: cannot list the folder: {top[0].strerror or top[0]}")
    if unreadable:
        names = [f"{Path(e.filename).relative_to(folder).as_posix()} ({e.strerror or e})" for e in unreadable]
        warnings.warn(
            f"{folder}: left out {len(names)} subfolder(s) that cannot be read: {', '.join(names[:5])}"
            f"{' ...' if len(names) > 5 else ''}",
            UserWarning,
            stacklevel=3,
        )
    return found


def not_regular(path: Path) -> str | None:
    """None for a regular file (or a link to one), else what the entry is instead."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((f"{what}, not a regular file" for test, what in kinds if test(mode)), "not a regular file")


@dataclass(frozen=True)
class TableInput:
    """Feature columns in model order (with their dtypes), and the optional id and label columns.

    A column is numeric (its `levels` entry is None: one model feature) or categorical (its
    levels as seen in training, text or yes/no: one model feature per level, a one-hot group
    scored by one categorical likelihood). `n_features` counts model features, `columns`
    the columns."""

    columns: tuple[str, ...]
    dtypes: tuple[str, ...]
    id_column: str | None = None
    label_column: str | None = None
    levels: tuple[tuple[str, ...] | None, ...] = ()
    # per column, (center, width) of a heavy-tailed numeric column's compression (`compress`),
    # None for the others; set at training (vaeguard.scorer.tail_compression)
    tails: tuple[tuple[float, float] | None, ...] = ()
    kind = "table"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "dtypes", tuple(self.dtypes))
        levels = tuple(None if lv is None else tuple(lv) for lv in self.levels) or (None,) * len(self.columns)
        object.__setattr__(self, "levels", levels)
        tails = tuple(None if t is None else (float(t[0]), float(t[1])) for t in self.tails) or (None,) * len(self.columns)
        object.__setattr__(self, "tails", tails)

    def compress(self, X):
        """X with each heavy-tailed column's values x as c + w * asinh((x - c) / w): unchanged
        within about one width w of the center c, logarithmic beyond, so a column whose values
        span many orders of magnitude is modelled on a scale where its bulk has a spread.
        A copy when a column is compressed, X itself otherwise."""
        import numpy as np

        return self._map_tails(X, np.arcsinh)

    def expand(self, X):
        """The inverse of `compress` (model outputs back to the column's own units)."""
        import numpy as np

        return self._map_tails(X, np.sinh)

    def _map_tails(self, X, warp):
        """X with each tail column x as c + w * warp((x - c) / w), float64; X itself if none."""
        import numpy as np

        if not any(self.tails):
            return X
        X = np.array(X, dtype=np.float64)
        with np.errstate(over="ignore"):  # sinh beyond float64: inf, as the model said
            for start, tail in zip(self.starts, self.tails):
                if tail is not None:
                    center, width = tail
                    X[:, start] = center + width * warp((X[:, start] - center) / width)
        return X

    image_shape = None  # not images

    @functools.cached_property
    def widths(self) -> tuple[int, ...]:
        """Model features per column: 1 for a numeric column, its number of levels for a categorical one."""
        return tuple(1 if lv is None else len(lv) for lv in self.levels)

    @functools.cached_property
    def starts(self) -> tuple[int, ...]:
        """Index of each column's first model feature."""
        return (0, *itertools.accumulate(self.widths[:-1]))

    @functools.cached_property
    def groups(self) -> tuple[tuple[int, int], ...]:
        """(first feature, width) of each categorical column."""
        return tuple((s, w) for s, w, lv in zip(self.starts, self.widths, self.levels) if lv is not None)

    @property
    def n_features(self) -> int:
        return self.starts[-1] + self.widths[-1] if self.columns else 0

    @property
    def feature_names(self) -> tuple[str, ...]:
        """A name per model feature: the column, or `column=level` for a categorical one."""
        return tuple(c if lv is None else f"{c}={v}" for c, lv in zip(self.columns, self.levels) for v in (lv or (None,)))

    def feature_label(self, j: int) -> str:
        """How a message names model feature j."""
        return f"column {self.columns[self.column_of(j)]!r}"

    def column_of(self, j: int) -> int:
        """The column that model feature j belongs to."""
        return bisect.bisect_right(self.starts, j) - 1

    def column_scores(self, feature_scores):
        """Per-feature scores (n, n_features) summed per column, (n, len(columns))."""
        import numpy as np

        if not self.groups:
            return feature_scores
        return np.add.reduceat(feature_scores, list(self.starts), axis=1)

    def schema_rows(self, mean=None, scale=None, limit: int = 30) -> list[str]:
        """One line per column (the first `limit`): its type, and its levels or its scaling."""
        lines = []
        for name, dtype, levels, start, tail in list(zip(self.columns, self.dtypes, self.levels, self.starts, self.tails))[:limit]:
            if levels is None:
                scaling = f"  mean {mean[start]:.6g}, scale {scale[start]:.6g}" if mean is not None else ""
                if tail is not None:
                    scaling += f" (heavy-tailed: compressed as asinh around {tail[0]:.6g}, width {tail[1]:.6g})"
                lines.append(f"{name}: numeric ({dtype}){scaling}")
            else:
                shown = ", ".join(levels[:8]) + (f" and {len(levels) - 8} more" if len(levels) > 8 else "")
                lines.append(f"{name}: categorical, {len(levels)} levels: {shown}")
        if len(self.columns) > limit:
            lines.append(f"... and {len(self.columns) - limit:,} more columns")
        return lines

    def describe(self) -> str:
        shown = ", ".join(self.columns[:12]) + (" ..." if len(self.columns) > 12 else "")
        text = sum(lv is not None for lv in self.levels)
        kinds = f" ({len(self.columns) - text} numeric, {text} categorical)" if text else ""
        return f"table, {len(self.columns)} columns{kinds}: {shown}"

    def to_dict(self) -> dict:
        out = {
            "kind": self.kind,
            "columns": list(self.columns),
            "dtypes": list(self.dtypes),
            "id_column": self.id_column,
            "label_column": self.label_column,
        }
        if self.groups:  # a numeric table's description stays what it was
            out["levels"] = [None if lv is None else list(lv) for lv in self.levels]
        if any(self.tails):
            out["tails"] = [None if t is None else list(t) for t in self.tails]
        return out


@dataclass(frozen=True)
class ImageInput:
    """Images converted to `shape` = (channels, height, width), resized bilinearly, in [0, 1]."""

    shape: tuple[int, int, int]
    kind = "images"
    tails = ()  # no pixel is compressed (TableInput.compress)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))

    def compress(self, X):
        return X

    expand = compress

    @property
    def n_features(self) -> int:
        return math.prod(self.shape)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shape

    @property
    def feature_names(self) -> tuple[str, ...]:
        return default_columns(self.n_features)

    def feature_label(self, j: int) -> str:
        return f"feature {j}"

    def describe(self) -> str:
        c, h, w = self.shape
        return f"images, {h}x{w}, {c} channel{'s' if c > 1 else ''}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "resize": IMAGE_RESIZE}


InputSpec = TableInput | ImageInput


def _string_list(d: dict, key: str, where: str) -> list[str]:
    value = d.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field {key!r} must be a list of strings")
    return value


def input_from_dict(d, where: str = "input description") -> InputSpec:
    """Rebuild a TableInput or ImageInput from `to_dict()`; DataError naming the bad field."""
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a mapping, got {type(d).__name__}")
    kind = d.get("kind")
    if kind == "images":
        shape = d.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
        ):
            raise DataError(f"{where}: field 'shape' must be [channels, height, width] of positive integers")
        if shape[0] not in (1, 3):
            raise DataError(f"{where}: field 'shape' must have 1 or 3 channels, got {shape[0]}")
        return ImageInput(tuple(shape))
    if kind != "table":
        raise DataError(f"{where}: field 'kind' must be 'table' or 'images', got {kind!r}")
    columns = _string_list(d, "columns", where)
    dtypes = _string_list(d, "dtypes", where)
    if not columns:
        raise DataError(f"{where}: field 'columns' is empty")
    if len(dtypes) != len(columns):
        raise DataError(f"{where}: field 'dtypes' has {len(dtypes)} entries for {len(columns)} columns")
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if repeated:
        raise DataError(f"{where}: field 'columns' repeats {repeated}")
    for key in ("id_column", "label_column"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise DataError(f"{where}: field {key!r} must be a string or null")
    levels = d.get("levels", [None] * len(columns))
    if (
        not isinstance(levels, list)
        or len(levels) != len(columns)
        or not all(lv is None or (isinstance(lv, list) and lv and all(isinstance(v, str) for v in lv) and len(set(lv)) == len(lv)) for lv in levels)
    ):
        raise DataError(f"{where}: field 'levels' must hold, per column, null or a list of distinct strings")
    tails = d.get("tails", [None] * len(columns))
    if (
        not isinstance(tails, list)
        or len(tails) != len(columns)
        or not all(t is None or _is_tail(t) for t in tails)
        or any(t is not None and lv is not None for t, lv in zip(tails, levels))
    ):
        raise DataError(f"{where}: field 'tails' must hold, per column, null or [center, width > 0] of a numeric column")
    return TableInput(tuple(columns), tuple(dtypes), d.get("id_column"), d.get("label_column"), tuple(levels), tuple(tails))


def _is_tail(t) -> bool:
    """[center, width]: finite numbers, width > 0."""
    return (
        isinstance(t, list) and len(t) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in t)
        and t[1] > 0
    )


def default_columns(n_features: int) -> tuple[str, ...]:
    """Names for the columns of an unnamed array, as scikit-learn's get_feature_names_out: x0, x1, ..."""
    return tuple(f"x{i}" for i in range(n_features))
