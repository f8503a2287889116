"""What a model reads: the typed description of its input, stored in the model file.

A detector is fitted on a table (named numeric columns, optionally an id and a label column)
or on images (a fixed channels x height x width that every image is converted to). `fit` sets
the description from a DataFrame, an array or a folder alike; bulk scoring, the CLI and the
engines read new data through it, so a detector fitted in Python scores files too.
The feature scaling (standardisation) is part of the fitted estimator (`mean_`, `scale_`), not
of this description: it is learned, this is declared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import DataError

IMAGE_RESIZE = "bilinear"
# Rows read per chunk when streaming a table. Measured with 20 columns and the fused score on
# 4.9M rows: `vaeguard score` peaks near 440 MB (CSV) and 450 MB (Parquet), whatever the file
# size (README, "Parquet, Dask, Spark and out-of-core training").
CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class TableInput:
    """Feature columns in model order (with their dtypes), and the optional id and label columns."""

    columns: tuple[str, ...]
    dtypes: tuple[str, ...]
    id_column: str | None = None
    label_column: str | None = None
    kind = "table"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "dtypes", tuple(self.dtypes))

    @property
    def n_features(self) -> int:
        return len(self.columns)

    def describe(self) -> str:
        shown = ", ".join(self.columns[:12]) + (" ..." if len(self.columns) > 12 else "")
        return f"table, {len(self.columns)} columns: {shown}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "columns": list(self.columns),
            "dtypes": list(self.dtypes),
            "id_column": self.id_column,
            "label_column": self.label_column,
        }


@dataclass(frozen=True)
class ImageInput:
    """Images converted to `shape` = (channels, height, width), resized bilinearly, in [0, 1]."""

    shape: tuple[int, int, int]
    kind = "images"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))

    @property
    def n_features(self) -> int:
        return math.prod(self.shape)

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
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(f"{where}: field 'columns' repeats {repeated}")
    for key in ("id_column", "label_column"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise DataError(f"{where}: field {key!r} must be a string or null")
    return TableInput(tuple(columns), tuple(dtypes), d.get("id_column"), d.get("label_column"))


def default_columns(n_features: int) -> tuple[str, ...]:
    """Names for the columns of an unnamed array, as scikit-learn's get_feature_names_out: x0, x1, ..."""
    return tuple(f"x{i}" for i in range(n_features))
