"""Parquet tables: one file, a folder of files or a glob, read in record batches.

A Parquet input is one logical table: its files in sorted path order, rows numbered from 1
across all of them (the `row` of score outputs). Reading streams record batches with
pyarrow's `iter_batches`, and column chunks are read in buffered pieces, so memory is bounded
by the batch and the page size, not by the row group or the file.
Needs the `parquet` extra (pyarrow).
"""

from __future__ import annotations

import glob as globbing
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import is_glob
from .errors import DataError
from .extras import require
from .inputs import NO_CELL, TableInput, chunk_rows, not_regular, walk_files
from .tabular import (
    CHUNK_ROWS,
    CellCounts,
    ColumnRoles,
    TableChunk,
    TrainingTable,
    assemble,
    categorical_texts,
    cell_problem,
    chunk_memory_error,
    first_gap,
    frame_features,
    frame_values,
    listing,
    note_extra_columns,
    problems_text,
    texts_of,
)

PARQUET_SUFFIXES = (".parquet", ".pq")
READ_BUFFER_BYTES = 64 * 1024  # per column being read
_HIDDEN = (".", "_")


def _is_parquet_name(path: Path | str) -> bool:
    name = Path(path).name
    return name.lower().endswith(PARQUET_SUFFIXES) and not name.startswith(_HIDDEN)


def is_parquet_input(path: str | Path) -> bool:
    """A `.parquet`/`.pq` name, a glob (Parquet is the only input read from a glob), or a
    folder holding entries named like Parquet files (at any depth, as Dask and Spark write
    datasets; a FIFO so named counts, to be refused by `parquet_files`, not read as images)."""
    if is_glob(path):
        return True
    path = Path(path)
    if _is_parquet_name(path):
        return True
    if not path.is_dir():
        return False
    for _, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(_HIDDEN)]
        if any(_is_parquet_name(f) for f in files):
            return True
    return False


def _regular_files(files: list[Path], source: str | Path) -> list[Path]:
    """The regular files of `files`; the others (a FIFO or a folder named `a.parquet`) are left
    out with one warning naming them, as opening a FIFO would wait forever."""
    reasons = [(f, not_regular(f)) for f in files]
    left_out = [f"{f} ({why})" for f, why in reasons if why is not None]
    if left_out:
        warnings.warn(
            f"{source}: left out {len(left_out)} entr{'y' if len(left_out) == 1 else 'ies'} named like Parquet files: "
            f"{', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}",
            UserWarning,
            stacklevel=3,
        )
    return [f for f, why in reasons if why is None]


def parquet_files(path: str | Path) -> list[Path]:
    """The files of a Parquet input in sorted order; DataError when there are none.

    In a folder, names starting with "." or "_" are not data (as for pyarrow datasets: Spark's
    `_SUCCESS` and `_temporary/`, part files being written), nor are the folders so named.
    """
    if is_glob(path):
        matches = sorted(Path(p) for p in globbing.glob(str(path), recursive=True))
        files = _regular_files([p for p in matches if _is_parquet_name(p)], path)
        if not files:
            raise DataError(f"{path}: no Parquet file (.parquet, .pq) matches this pattern")
        return files
    path = Path(path)
    if path.is_dir():
        files = _regular_files(sorted(walk_files(path, _is_parquet_name, _HIDDEN)), path)
        if not files:
            raise DataError(f"{path}: the folder holds no Parquet file (.parquet, .pq)")
        return files
    if not path.exists():
        raise DataError(f"{path}: no such Parquet file")
    why = not_regular(path)
    if why is not None:
        raise DataError(f"{path}: {why}")
    return [path]


@dataclass
class ParquetTable:
    """The files of one Parquet input, their column names and row counts (footers only)."""

    source: str
    files: list[Path]
    columns: list[str]
    file_columns: list[list[str]]
    file_rows: list[int]

    @classmethod
    def open(cls, path: str | Path) -> ParquetTable:
        pq = require("pyarrow.parquet", "parquet")
        files = parquet_files(path)
        file_columns, file_rows = [], []
        for f in files:
            try:
                meta = pq.ParquetFile(f)
                file_columns.append(list(meta.schema_arrow.names))
                file_rows.append(int(meta.metadata.num_rows))
            except Exception as exc:  # pyarrow raises its own types for corrupt files
                raise DataError(f"{f}: cannot read this Parquet file: {exc}") from None
        return cls(str(path), files, file_columns[0], file_columns, file_rows)

    @property
    def n_rows(self) -> int:
        return sum(self.file_rows)

    def check_columns(self, needed: list[str], optional: tuple = ()) -> None:
        """DataError naming the first file that lacks any of `needed`, or that holds one of
        `needed` or `optional` under a repeated name (which of the two is meant?)."""
        for f, cols in zip(self.files, self.file_columns):
            counts = Counter(cols)
            missing = [c for c in needed if c not in counts]
            if missing:
                raise DataError(
                    f"{f}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                    f"that the model needs; the file has {listing(cols)}"
                )
            repeated = [c for c in (*needed, *optional) if counts[c] > 1]
            if repeated:
                raise DataError(f"{f}: column {repeated[0]!r} appears {counts[repeated[0]]} times; give each column its own name")

    def where(self, file: Path, row: int) -> str:
        """"file: row N", or "input: row N (in file)" when the input has several files."""
        return f"{file}: row {row}" if len(self.files) == 1 else f"{self.source}: row {row} (in {file})"

    def iter_frames(self, columns: list[str], batch_rows: int = CHUNK_ROWS) -> Iterator[tuple[Path, pd.DataFrame, np.ndarray]]:
        """(file, frame, row numbers) per record batch; `columns` absent from a file are left out."""
        pq = require("pyarrow.parquet", "parquet")
        first = 1
        for f, cols in zip(self.files, self.file_columns):
            have = set(cols)
            present = [c for c in columns if c in have]
            try:
                # pre_buffer=False: the default pre-buffers column chunks ahead and, measured on a
                # 1 GB file, held the whole file in memory (1.2 GB peak against 0.23 GB without).
                # buffer_size: read each column chunk in small pieces, not whole; a 1M-row row
                # group of 21 columns cost 221 MB without, 90 MB with (benchmarks/bigdata.py).
                reader = pq.ParquetFile(f, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
                for batch in reader.iter_batches(batch_size=batch_rows, columns=present):
                    frame = batch.to_pandas()
                    rows = np.arange(first, first + len(frame), dtype=np.int64)
                    first += len(frame)
                    yield f, frame, rows
            except DataError:
                raise
            except Exception as exc:
                raise DataError(f"{f}: cannot read this Parquet file near row {first}: {exc}") from None


def _readable_field(field) -> bool:
    """A column of numbers, text or true/false values (a candidate feature)."""
    import pyarrow as pa

    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(test(t) for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean,
                                    pa.types.is_string, pa.types.is_large_string))


def _why_not_readable(field) -> str:
    """Why a column of this Parquet type is not picked as a feature by default."""
    import pyarrow as pa

    if pa.types.is_null(field.type):
        return "every cell is null"
    return f"of type {field.type}, not numbers or text"


def parquet_features(table: ParquetTable, roles: ColumnRoles) -> tuple[list[str], list[tuple[str, str]]]:
    """The candidate feature columns of a Parquet input, and (column, why) for those left out
    by their type: the user's columns, else every column of a numeric, text or true/false
    type other than the id, label and excluded ones. Which candidates are features, numeric or
    categorical, the values decide (`tabular.CellCounts`), in memory and out of core alike."""

    def check(names: list[str], what: str) -> None:
        missing = [c for c in names if c not in table.columns]
        if missing:
            raise DataError(f"{table.files[0]}: no {what} {', '.join(map(repr, missing))}; the file has {listing(table.columns)}")

    candidates = roles.candidates(table.files[0], table.columns, check)
    if roles.columns is not None:
        return candidates, []
    pq = require("pyarrow.parquet", "parquet")
    fields = {f.name: f for f in pq.ParquetFile(table.files[0]).schema_arrow}
    features = [c for c in candidates if _readable_field(fields[c])]
    if not features:
        raise DataError(f"{table.files[0]}: no numeric columns to use as features; the file has {listing(table.columns)}")
    return features, [(c, _why_not_readable(fields[c])) for c in candidates if not _readable_field(fields[c])]


def read_training_parquet(path: str | Path, roles: ColumnRoles = ColumnRoles()) -> TrainingTable:
    """Read a whole Parquet input for training, as `tabular.read_training_table` reads a CSV,
    with the columns of `parquet_features`. Any cell of a feature column that is null or not a
    finite number is a DataError naming the file, column and row."""
    table = ParquetTable.open(path)
    features, dropped = parquet_features(table, roles)
    special = roles.special
    id_column, label_column = roles.id_column, roles.label_column
    table.check_columns(features + special)
    parts, where, ids, labels = [], [], [], []
    counts = CellCounts(features)
    first_bad: dict[int, str] = {}  # column -> the first bad cell, for the columns that stay numeric
    batch_rows = chunk_rows(CHUNK_ROWS, len(features) + len(special))
    try:
        for f, frame, rows in table.iter_frames(features + special, batch_rows):
            values, raws = frame_values(frame, features)
            broken = counts.add(values, raws, frame.dtypes.loc[features])
            for k in np.flatnonzero(broken.any(axis=0)).tolist():
                if k not in first_bad:
                    i = int(np.argmax(broken[:, k]))
                    first_bad[k] = (int(rows[i]), f"{table.where(f, int(rows[i]))}: column {features[k]!r}: {cell_problem(values[i, k], raws[k][i] if k in raws else None)}")
            parts.append((values, {k: texts_of(frame[features[k]]) for k in raws}))
            where += [(f, r) for r in rows.tolist()]
            if id_column is not None:
                ids.append(frame[id_column].to_numpy(dtype=object))
            if label_column is not None:
                labels.append(frame[label_column].to_numpy(dtype=object))
        if not where:
            raise DataError(f"{path}: no data rows")
        chosen, left_out, schema = counts.choose(path, features, roles)
        bad = [first_bad[k] for k, lv in zip(chosen, schema.levels) if lv is None and k in first_bad]
        if bad:
            raise DataError(min(bad)[1])
        X = np.concatenate([assemble(values, texts, chosen, schema.levels) for values, texts in parts])
    except MemoryError:
        raise DataError(
            f"{path}: not enough memory to load the table ({table.n_rows:,} rows, {len(features):,} columns) "
            "for training; train with --out-of-core, which streams the file"
        ) from None
    gap = first_gap(X)
    if gap is not None and gap[0] == "column":
        raise DataError(f"{path}: {schema.feature_label(gap[1])}: every training cell is missing")
    if gap is not None:
        raise DataError(f"{table.where(*where[gap[1]])}: {NO_CELL}")
    return TrainingTable(
        X,
        schema,
        np.concatenate(labels) if label_column is not None else None,
        np.concatenate(ids) if id_column is not None else None,
        dropped + left_out,
    )


def sample_parquet_schema(path: str | Path, roles: ColumnRoles, chunk_size: int) -> tuple[TableInput, list[tuple[str, str]]]:
    """The schema `read_training_parquet` would infer, from the first CHUNK_ROWS rows only (what
    out-of-core training reads before its first pass), and the columns left out, with why."""
    table = ParquetTable.open(path)
    features, dropped = parquet_features(table, roles)
    table.check_columns(features + roles.special)
    counts = CellCounts(features)
    n = 0
    for _, frame, _ in table.iter_frames(features, chunk_rows(chunk_size, len(features))):
        counts.add(*frame_values(frame, features), frame.dtypes.loc[features])
        n += len(frame)
        if n >= CHUNK_ROWS:
            break
    _, left_out, schema = counts.choose(f"{path} (first rows)", features, roles)
    return schema, dropped + left_out


def iter_parquet_chunks(
    path: str | Path,
    spec: TableInput,
    *,
    chunk_size: int = CHUNK_ROWS,
    on_bad_row: str = "fail",
    label_column: str | None = None,
    notes: list[str] | None = None,
) -> Iterator[TableChunk]:
    """Stream a Parquet input as float32 feature chunks in model order, matching columns by name.

    The same rules as `tabular.iter_table_chunks`: missing feature columns are a DataError; a
    row with an unusable cell stops the run (on_bad_row="fail") or is listed in `bad_rows`
    ("skip"); without the id column in the data, `ids` is None.
    """
    table = ParquetTable.open(path)
    table.check_columns(list(spec.columns) + ([label_column] if label_column else []), (spec.id_column,))
    used = set(spec.columns) | {spec.id_column, label_column}
    if notes is not None:
        note_extra_columns(notes, [c for c in table.columns if c not in used])
    has_id = spec.id_column is not None and all(spec.id_column in cols for cols in table.file_columns)
    wanted = list(dict.fromkeys(list(spec.columns) + ([spec.id_column] if has_id else []) + ([label_column] if label_column else [])))
    batch_rows = chunk_rows(chunk_size, len(wanted))
    try:
        for f, frame, rows in table.iter_frames(wanted, batch_rows):
            texts = categorical_texts(frame, list(spec.columns), spec.levels)
            X, bad, problems = frame_features(frame, list(spec.columns), spec.columns, levels=spec.levels, texts=texts)
            failed = [(int(r), problems_text(found)) for r, found in zip(rows[bad], problems)]
            if failed and on_bad_row == "fail":
                raise DataError(f"{table.where(f, failed[0][0])}: {failed[0][1]}")
            yield TableChunk.of(
                X,
                bad,
                rows,
                frame[spec.id_column].to_numpy(dtype=object) if has_id else None,
                frame[label_column].to_numpy(dtype=object) if label_column else None,
                failed,
                texts,
            )
    except MemoryError:
        raise chunk_memory_error(path, batch_rows, len(wanted)) from None
