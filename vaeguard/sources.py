"""Data sources: a path in, validated chunks out, whatever the kind of data.

A path is a table (a CSV file: `.csv`, `.csv.gz`) or a folder of images; `data_kind` is the
one place that decides which. `read_training_data` loads a whole source for fitting and says
what it holds (an `InputSpec`); `iter_chunks` streams a source for scoring through the input
description a model was fitted with, as `Chunk`s of float32 rows that carry their row numbers
or relative paths, ids, labels, and the rows or files that could not be used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .images import iter_image_batches, read_image_folder
from .inputs import ImageInput, InputSpec, TableInput, not_regular
from .tabular import CHUNK_ROWS, is_table_path, iter_table_chunks, read_training_table

ON_BAD_ROW = ("fail", "skip")
MAX_IMAGES_PER_CHUNK = 1024  # decoded images are large: a table's chunk size would not bound memory


def is_parquet_input(path: str | Path) -> bool:
    """A Parquet file, a folder holding Parquet files, or a glob (see vaeguard.parquet)."""
    from .parquet import is_parquet_input as check

    return check(path)


def data_kind(path: str | Path) -> str:
    """"table" for a CSV or Parquet input, "images" for a folder; DataError for anything else."""
    if is_parquet_input(path):
        return "table"
    path = Path(path)
    if is_table_path(path):
        if not path.exists():
            raise DataError(f"{path}: no such CSV file")
        why = not_regular(path)  # a FIFO would block the reader forever
        if why is not None:
            raise DataError(f"{path}: {why}")
        return "table"
    if path.is_dir():
        return "images"
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: expected a CSV file (.csv, .csv.gz), Parquet (a .parquet file, a folder or a glob of them) or a folder of images")


@dataclass
class TrainingData:
    """Rows to fit on, what they are, and the rows or files left out (where, why)."""

    X: np.ndarray
    input_spec: InputSpec
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the columns left out, and why


def read_training_data(
    path: str | Path,
    *,
    columns: list[str] | None = None,
    exclude: list[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> TrainingData:
    """Load a CSV file or an image folder for training (see tabular and images for the rules)."""
    if data_kind(path) == "table":
        read = read_training_table
        if is_parquet_input(path):
            from .parquet import read_training_parquet as read
        table = read(path, columns=columns, exclude=exclude, id_column=id_column, label_column=label_column)
        notes = [f"left out column {name!r}: {why}" for name, why in table.dropped]
        return TrainingData(table.X, table.schema, notes=notes)
    folder = read_image_folder(path, image_shape)
    if len(folder.X) == 0:
        raise DataError(f"{path}: no readable image ({len(folder.errors)} failed)")
    return TrainingData(folder.X, ImageInput(folder.shape), folder.errors)


@dataclass
class Chunk:
    """Usable rows of one chunk of a source, and what failed in it.

    `keys` are 1-based data row numbers (tables) or paths relative to the folder (images);
    `labels` are a table's label column or an image's top-level subfolder name; `failed`
    holds (key, reason) for each row or file that could not be used.
    """

    X: np.ndarray
    keys: list
    ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    failed: list[tuple[int | str, str]] = field(default_factory=list)
    failed_ids: dict = field(default_factory=dict)  # a failed table row's id, when the row has one


def describe_key(key: int | str) -> str:
    """'row 12' for a table row, the relative path for an image."""
    return f"row {key}" if isinstance(key, (int, np.integer)) else str(key)


def iter_chunks(
    path: str | Path,
    spec: InputSpec,
    *,
    chunk_size: int = CHUNK_ROWS,
    on_bad_row: str = "fail",
    label_column: str | None = None,
    notes: list[str] | None = None,
) -> Iterator[Chunk]:
    """Stream `path` as chunks of rows the model described by `spec` can score.

    Tables: `chunk_size` rows at a time, columns matched by name; a bad row stops the run
    (on_bad_row="fail") or is listed in `failed` ("skip"). Images: `chunk_size` files at a
    time; an unreadable file is always listed in `failed` and the run goes on.
    """
    kind = data_kind(path)
    if kind != spec.kind:
        wanted = "a table (CSV or Parquet)" if isinstance(spec, TableInput) else "a folder of images"
        raise DataError(f"{path}: this model was trained on {wanted}")
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {', '.join(ON_BAD_ROW)}; got {on_bad_row!r}")
    if isinstance(spec, TableInput):
        if is_parquet_input(path):
            from .parquet import iter_parquet_chunks as read
        else:
            read = iter_table_chunks
        for chunk in read(path, spec, chunk_size=chunk_size, on_bad_row=on_bad_row, label_column=label_column, notes=notes):
            yield Chunk(chunk.X, chunk.row_numbers.tolist(), chunk.ids, chunk.labels, chunk.bad_rows, chunk.bad_ids)
        return
    for batch in iter_image_batches(path, spec.shape, batch_size=min(chunk_size, MAX_IMAGES_PER_CHUNK)):
        labels = np.asarray([p.split("/")[0] if "/" in p else "" for p in batch.paths], dtype=object)
        yield Chunk(batch.X, batch.paths, None, labels, batch.errors)
