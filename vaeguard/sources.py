"""Data sources: one object per kind of input, resolved once from a path or a DataFrame.

`open_source` is the one place that decides what an input is: a table (`CsvSource` for
`.csv`/`.csv.gz`, `ParquetSource` for a Parquet file, folder or glob, `FrameSource` for a
pandas DataFrame) or a folder of images (`ImageSource`). Every source answers the same
questions, so the code that scores, evaluates or trains asks the source instead of branching
on the kind:

- `read_training(roles)`: the whole input for fitting, and what it holds (an `InputSpec`: the
  table's feature columns by the one column rule, or the images' shape);
- `chunks(spec, ...)`: the input streamed through the description a model was fitted with,
  as `Chunk`s of float32 rows with their row numbers or relative paths, ids, labels, and the
  rows or files that could not be used (the bad-row policy: "fail" or "skip");
- `output_frame(spec, chunk, rows)` and `output_columns(spec)`: the columns of its score output;
- `labels(...)`: where its labels come from (a table's label column, an image's subfolder).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from . import parquet, tabular
from .csvrecords import read_header
from .errors import DataError
from .images import iter_image_batches, load_image, read_image_folder, save_heatmap_png
from .inputs import (
    FLAGGED,
    IMAGE_COLUMNS,
    ROW_COLUMN,
    SCORE_COLUMNS,
    TOP_COLUMNS,
    TOP_K,
    ImageInput,
    InputSpec,
    TableInput,
    check_id_column,
    check_on_bad_row,
    not_regular,
)
from .tabular import CHUNK_ROWS, ColumnRoles, TableChunk, frame_features, is_table_path, problems_text

MAX_IMAGES_PER_CHUNK = 1024  # decoded images are large: a table's chunk size would not bound memory


class ScoredRows(Protocol):
    """What a source needs from a chunk's scores to write its output (bulk.RowScores)."""

    scores: np.ndarray
    p_values: np.ndarray
    is_anomaly: np.ndarray
    feature_scores: np.ndarray | None


@dataclass
class TrainingData:
    """Rows to fit on, what they are, and the rows or files left out (where, why)."""

    X: np.ndarray
    input_spec: InputSpec
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the columns left out, and why


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
    texts: dict = field(default_factory=dict)  # a table's categorical columns: each usable row's text

    @classmethod
    def of_table(cls, chunk: TableChunk) -> "Chunk":
        return cls(chunk.X, chunk.row_numbers.tolist(), chunk.ids, chunk.labels, chunk.bad_rows, chunk.bad_ids, chunk.texts)


@dataclass(frozen=True)
class LabelRule:
    """How a source's labels read: from `column` (tables), with `normal` the normal value
    (None: labels are 0/1 or true/false), described as `where` in messages."""

    column: str | None
    normal: str | None
    where: str


def _flags(rows: ScoredRows, n_failed: int) -> pd.arrays.IntegerArray:
    """is_anomaly as 0/1, missing for the rows that failed."""
    values = np.r_[rows.is_anomaly.astype(np.int8), np.zeros(n_failed, dtype=np.int8)]
    return pd.arrays.IntegerArray(values, np.r_[np.zeros(len(rows.scores), dtype=bool), np.ones(n_failed, dtype=bool)])


def _errors(rows: ScoredRows, failed: list) -> np.ndarray:
    """The error column: FLAGGED for a score that is not finite, the reason for a failed row."""
    error = np.full(len(rows.scores) + len(failed), "", dtype=object)
    error[: len(rows.scores)][~np.isfinite(rows.scores)] = FLAGGED
    error[len(rows.scores):] = [why for _, why in failed]
    return error


def _name_values(top: np.ndarray, column: str, texts: np.ndarray, levels) -> None:
    """In `top`, `column` becomes `column=value`, and `column=value (not seen in training)` for
    a value the model never saw: the evidence, named."""
    rows, slots = np.nonzero(top == column)
    if not len(rows):
        return
    # Named once per distinct value: a column's few levels fill thousands of rows.
    cells, distinct = pd.factorize(np.asarray(texts[rows], dtype=object))  # a null cell is -1: the last value
    values = tabular.canonical_text(pd.Series([*distinct, None], dtype=object)).to_numpy(dtype=object)
    known = set(levels)
    names = np.array([f"{column}={v}" + ("" if v in known else " (not seen in training)") for v in values], dtype=object)
    top[rows, slots] = names[cells]


def top_features(feature_scores: np.ndarray, names) -> np.ndarray:
    """Names of the TOP_K features contributing most to each row's score, (n, TOP_K), "" padded
    (also where a feature's score is -inf: a gap, which contributes nothing)."""
    names = np.asarray(names, dtype=object)
    k = min(TOP_K, len(names))
    top = np.full((len(feature_scores), TOP_K), "", dtype=object)
    order = np.argsort(-feature_scores, axis=1)[:, :k]
    top[:, :k] = np.where(np.take_along_axis(feature_scores, order, axis=1) == -np.inf, "", names[order])
    return top


class Source:
    """An input of one kind; subclasses say how it is read and what its scores look like."""

    kind: str  # the `kind` of the InputSpec it reads into: "table" or "images"
    unit: str  # what a progress bar counts: "rows" or "images"
    what: str  # how messages name the kind
    explains: bool  # whether its score output names the features behind each score (top_1, ...)

    def __init__(self, path):
        self.path = path

    def check_model(self, spec: InputSpec) -> InputSpec:
        """`spec` when a model of that description can read this source, else a DataError."""
        if spec.kind != self.kind:
            raise DataError(f"{self.path}: this model was trained on {_SOURCES[spec.kind].what}")
        return spec

    def read_training(self, roles: ColumnRoles = ColumnRoles(), image_shape=None) -> TrainingData:
        raise NotImplementedError

    def chunks(self, spec: InputSpec, *, chunk_size: int = CHUNK_ROWS, on_bad_row: str = "fail",
               label_column: str | None = None, notes: list[str] | None = None) -> Iterator[Chunk]:
        raise NotImplementedError

    def output_columns(self, spec: InputSpec) -> list[str]:
        raise NotImplementedError

    def output_frame(self, spec: InputSpec, chunk: Chunk, rows: ScoredRows) -> pd.DataFrame:
        raise NotImplementedError

    def labels(self, spec: InputSpec, label_column: str | None, normal_label: str | None) -> LabelRule:
        raise NotImplementedError

    def check_groups(self, groups: np.ndarray, rule: LabelRule) -> None:
        """DataError when labelled data holds no normal sample the way its labels say."""

    def load(self, spec: InputSpec, keys: Sequence, *, on_bad_row: str = "fail") -> np.ndarray:
        """The rows (in model units) of the samples named by `keys` (images in that order, table
        rows in file order)."""
        raise NotImplementedError

    def write_extras(self, spec: InputSpec, chunk: Chunk, rows: ScoredRows, heatmap_dir, protect=()) -> None:
        """Per-sample files beside the score output (image heatmaps)."""
        raise DataError(f"{self.path}: heatmaps are for image models")


def describe_key(key: int | str) -> str:
    """'row 12' for a table row, the relative path for an image."""
    return f"row {key}" if isinstance(key, (int, np.integer)) else str(key)


def table_spec(spec: InputSpec, where: str | None = None) -> TableInput:
    """`spec` when it describes a table whose scores can be written (its id column is not named
    like a score column: a model file written before such models were refused), else DataError."""
    if not isinstance(spec, TableInput):
        raise DataError("this model was trained on images: it scores image folders, not tables")
    check_id_column(spec.id_column, where, "the model's id column", "its scores cannot be written; train it again with the column renamed")
    return spec


class TableSource(Source):
    """Rows of named columns: what CSV, Parquet and DataFrame inputs share (the output columns,
    the label column, the bad-row policy)."""

    kind, unit, what, explains = "table", "rows", "a table (CSV or Parquet)", True

    def check_model(self, spec: InputSpec) -> TableInput:
        super().check_model(spec)
        return table_spec(spec, str(self.path))

    def output_columns(self, spec: TableInput) -> list[str]:
        return [ROW_COLUMN, *([spec.id_column] if spec.id_column else []), *SCORE_COLUMNS]

    def output_frame(self, spec: TableInput, chunk: Chunk, rows: ScoredRows) -> pd.DataFrame:
        """The chunk's scored and failed rows as score columns after `row` and the id, in row order."""
        n_ok, n_failed = len(rows.scores), len(chunk.failed)
        top = np.full((n_ok + n_failed, TOP_K), "", dtype=object)
        ranked = spec.column_scores(rows.feature_scores)
        gaps = np.isnan(chunk.X)
        if gaps.any():  # a gap contributes nothing: never one of the columns behind a score
            ranked = np.where(spec.column_scores(gaps) > 0, -np.inf, ranked)
        top[:n_ok] = top_features(ranked, spec.columns)
        for k, texts in chunk.texts.items():  # a categorical column is named with its value
            _name_values(top[:n_ok], spec.columns[k], texts, spec.levels[k])
        columns = {ROW_COLUMN: [*chunk.keys, *(key for key, _ in chunk.failed)]}
        if spec.id_column is not None:
            ids = list(chunk.ids) if chunk.ids is not None else [None] * n_ok
            columns[spec.id_column] = ids + [chunk.failed_ids.get(key) for key, _ in chunk.failed]
        columns |= {
            "score": np.r_[rows.scores, np.full(n_failed, np.nan)],
            "p_value": np.r_[rows.p_values, np.full(n_failed, np.nan)],
            "is_anomaly": _flags(rows, n_failed),
            **{name: top[:, i] for i, name in enumerate(TOP_COLUMNS)},
            "error": _errors(rows, chunk.failed),
        }
        frame = pd.DataFrame(columns)
        return frame.sort_values(ROW_COLUMN, kind="stable", ignore_index=True) if n_failed else frame

    def labels(self, spec: TableInput, label_column: str | None, normal_label: str | None) -> LabelRule:
        column = label_column or spec.label_column
        if column is None:
            raise DataError(f"{self.path}: name the column holding the labels with --label-column")
        return LabelRule(column, normal_label, f"{self.path}: column {column!r}")

    def holds_column(self, name: str) -> bool:
        raise NotImplementedError

    def load(self, spec: TableInput, keys: Sequence, *, on_bad_row: str = "fail") -> np.ndarray:
        """A second pass over the table, stopped once every row in `keys` is read."""
        wanted = np.asarray(keys)
        rows, n = [], 0
        for chunk in self.chunks(spec, on_bad_row=on_bad_row):
            keep = np.isin(np.asarray(chunk.keys), wanted)
            rows.append(chunk.X[keep])
            n += int(keep.sum())
            if n >= len(wanted):
                break
        return np.vstack(rows) if rows else np.empty((0, spec.n_features), dtype=np.float32)

    def read_training(self, roles: ColumnRoles = ColumnRoles(), image_shape=None) -> TrainingData:
        table = self.read_table(self.path, roles)
        return TrainingData(table.X, table.schema, notes=_dropped_notes(table.dropped))

    def chunks(self, spec, *, chunk_size=CHUNK_ROWS, on_bad_row="fail", label_column=None, notes=None):
        spec = self.check_model(spec)
        for chunk in self.iter_table(self.path, spec, chunk_size=chunk_size, on_bad_row=check_on_bad_row(on_bad_row),
                                     label_column=label_column, notes=notes):
            yield Chunk.of_table(chunk)

    def infer_schema(self, roles: ColumnRoles, chunk_size: int) -> tuple[TableInput, list[str]]:
        """The schema training would infer from the first rows, without reading the whole input
        (out-of-core training), and notes on the columns left out."""
        spec, dropped = self.sample_schema(self.path, roles, chunk_size)
        return spec, _dropped_notes(dropped)


def _dropped_notes(dropped: list[tuple[str, str]]) -> list[str]:
    return [f"left out column {name!r}: {why}" for name, why in dropped]


class CsvSource(TableSource):
    """A CSV file (`.csv`, `.csv.gz`), read by `vaeguard.tabular`."""

    read_table = staticmethod(tabular.read_training_table)
    iter_table = staticmethod(tabular.iter_table_chunks)
    sample_schema = staticmethod(tabular.sample_table_schema)

    def holds_column(self, name: str) -> bool:
        return name in read_header(Path(self.path))


class ParquetSource(TableSource):
    """A Parquet file, a folder of them or a glob, read by `vaeguard.parquet` (needs pyarrow)."""

    read_table = staticmethod(parquet.read_training_parquet)
    iter_table = staticmethod(parquet.iter_parquet_chunks)
    sample_schema = staticmethod(parquet.sample_parquet_schema)

    def holds_column(self, name: str) -> bool:
        return all(name in columns for columns in parquet.ParquetTable.open(self.path).file_columns)


class FrameSource(TableSource):
    """A pandas DataFrame in memory: one chunk, keyed by position; its score output carries the
    frame's index instead of a `row` column, and the id column only when the frame holds it."""

    def __init__(self, frame: pd.DataFrame):
        super().__init__("the data frame")
        self.frame = frame

    def read_training(self, roles: ColumnRoles = ColumnRoles(), image_shape=None) -> TrainingData:
        """The frame's features by the one column rule (its text, true/false and category
        columns categorical); a bad cell (text in a numeric column, an infinity) is a DataError."""
        frame = self.frame
        names = [str(c) for c in frame.columns]

        def check(wanted: list[str], what: str) -> None:
            absent = [c for c in wanted if c not in names]
            if absent:
                raise DataError(f"no {what} {', '.join(map(repr, absent))}; the frame has {tabular.listing(names)}")

        candidates = roles.candidates(self.path, names, check)
        keys = [frame.columns[names.index(c)] for c in candidates]
        values, raws = tabular.frame_values(frame, keys)
        counts = tabular.CellCounts(candidates)
        broken = counts.add(values, raws, frame.dtypes.loc[keys])
        chosen, dropped, spec = counts.choose(self.path, candidates, roles)
        for k, lv in zip(chosen, spec.levels):
            if lv is None and broken[:, k].any():
                i = int(np.argmax(broken[:, k]))
                why = tabular.cell_problem(values[i, k], raws[k][i] if k in raws else None)
                raise DataError(f"row {frame.index[i]!r}, column {candidates[k]!r}: {why}")
        texts = {k: tabular.texts_of(frame[keys[k]]) for k, lv in zip(chosen, spec.levels) if lv is not None}
        return TrainingData(tabular.assemble(values, texts, chosen, spec.levels), spec, notes=_dropped_notes(dropped))

    def features(self, spec: TableInput) -> np.ndarray:
        """Every row as the model's features (float64; NaN for a gap): what the estimator scores;
        a bad cell is a DataError naming its row and column."""
        spec = self.check_model(spec)
        X, bad, problems = frame_features(self.frame, list(spec.columns), spec.columns, np.float64, spec.levels)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"row {self.frame.index[i]!r}: {problems_text(problems[0])}")
        return X

    def check_model(self, spec: InputSpec) -> TableInput:
        spec = table_spec(spec)
        missing = [c for c in spec.columns if c not in self.frame.columns]
        if missing:
            raise DataError(f"missing column(s) {', '.join(map(repr, missing))} that the model needs")
        return spec

    def chunks(self, spec, *, chunk_size=CHUNK_ROWS, on_bad_row="fail", label_column=None, notes=None):
        spec = self.check_model(spec)
        frame = self.frame
        texts = tabular.categorical_texts(frame, list(spec.columns), spec.levels)
        X, bad, problems = frame_features(frame, list(spec.columns), spec.columns, levels=spec.levels, texts=texts)
        positions = np.arange(len(frame))
        failed = [(int(i), problems_text(found)) for i, found in zip(positions[bad], problems)]
        if failed and check_on_bad_row(on_bad_row) == "fail":
            raise DataError(f"row {frame.index[failed[0][0]]!r}: {failed[0][1]}")
        ids = frame[spec.id_column].to_numpy(dtype=object) if spec.id_column in frame.columns else None
        labels = frame[label_column].to_numpy(dtype=object) if label_column is not None else None
        yield Chunk.of_table(TableChunk.of(X, bad, positions, ids, labels, failed, texts))

    def output_frame(self, spec: TableInput, chunk: Chunk, rows: ScoredRows) -> pd.DataFrame:
        out = super().output_frame(spec, chunk, rows).drop(columns=ROW_COLUMN)
        if spec.id_column is not None and spec.id_column not in self.frame.columns:
            out = out.drop(columns=spec.id_column)
        out.index = self.frame.index
        return out

    def holds_column(self, name: str) -> bool:
        return name in self.frame.columns


class ImageSource(Source):
    """A folder of images (PNG, JPEG, ...), converted to the model's shape by `vaeguard.images`;
    an image's label is its top-level subfolder (normal/, scratch/, ...)."""

    kind, unit, what, explains = "images", "images", "a folder of images", False

    def read_training(self, roles: ColumnRoles = ColumnRoles(), image_shape=None) -> TrainingData:
        folder = read_image_folder(self.path, image_shape)
        if len(folder.X) == 0:
            raise DataError(f"{self.path}: no readable image ({len(folder.errors)} failed)")
        return TrainingData(folder.X, ImageInput(folder.shape), folder.errors)

    def chunks(self, spec, *, chunk_size=CHUNK_ROWS, on_bad_row="fail", label_column=None, notes=None):
        """An unreadable image is always listed in `failed` and the run goes on."""
        spec = self.check_model(spec)
        check_on_bad_row(on_bad_row)
        for batch in iter_image_batches(self.path, spec.shape, batch_size=min(chunk_size, MAX_IMAGES_PER_CHUNK)):
            labels = np.asarray([p.split("/")[0] if "/" in p else "" for p in batch.paths], dtype=object)
            yield Chunk(batch.X, batch.paths, None, labels, batch.errors)

    def output_columns(self, spec: ImageInput) -> list[str]:
        return list(IMAGE_COLUMNS)

    def output_frame(self, spec: ImageInput, chunk: Chunk, rows: ScoredRows) -> pd.DataFrame:
        """The chunk's scored and unreadable images, in path order."""
        n_failed = len(chunk.failed)
        frame = pd.DataFrame(
            {
                "path": [*chunk.keys, *(key for key, _ in chunk.failed)],
                "score": np.r_[rows.scores, np.full(n_failed, np.nan)],
                "p_value": np.r_[rows.p_values, np.full(n_failed, np.nan)],
                "is_anomaly": _flags(rows, n_failed),
                "error": _errors(rows, chunk.failed),
            }
        )
        return frame.sort_values("path", kind="stable", ignore_index=True) if n_failed else frame

    def labels(self, spec: ImageInput, label_column: str | None, normal_label: str | None) -> LabelRule:
        return LabelRule(None, "normal" if normal_label is None else normal_label, f"{self.path}: subfolder names")

    def check_groups(self, groups: np.ndarray, rule: LabelRule) -> None:
        if len(groups) and not (groups == rule.normal).any():
            found = sorted(set(groups.tolist()) - {""})
            raise DataError(
                f"{self.path}: no subfolder named {rule.normal!r} holds normal images (subfolders: "
                f"{', '.join(found[:8]) or 'none'}); name the normal one with --normal-label"
            )

    def load(self, spec: ImageInput, keys: Sequence, *, on_bad_row: str = "fail") -> np.ndarray:
        if not len(keys):
            return np.empty((0, spec.n_features), dtype=np.float32)
        return np.stack([load_image(Path(self.path) / key, spec.shape) for key in keys])

    def write_extras(self, spec: ImageInput, chunk: Chunk, rows: ScoredRows, heatmap_dir, protect=()) -> None:
        """Each image's per-pixel contributions as a PNG in `heatmap_dir`, named like the image
        (`a/b.png`; `a/c.jpg` gives `a/c.jpg.png`)."""
        maps = rows.feature_scores.reshape(len(chunk.X), *spec.shape).sum(axis=1)
        for rel, heatmap in zip(chunk.keys, maps):
            name = rel if rel.lower().endswith(".png") else f"{rel}.png"
            save_heatmap_png(heatmap, Path(heatmap_dir) / name, inputs=[Path(self.path) / rel, *protect])


_SOURCES = {"table": TableSource, "images": ImageSource}


def open_source(data) -> Source:
    """The source for `data`: a DataFrame, or the path of a CSV file, a Parquet input or a
    folder of images (a Source is returned as it is); DataError naming the path for anything else."""
    if isinstance(data, Source):
        return data
    if isinstance(data, pd.DataFrame):
        return FrameSource(data)
    if parquet.is_parquet_input(data):
        return ParquetSource(data)
    path = Path(data)
    if is_table_path(path):
        if not path.exists():
            raise DataError(f"{path}: no such CSV file")
        why = not_regular(path)  # a FIFO would block the reader forever
        if why is not None:
            raise DataError(f"{path}: {why}")
        return CsvSource(path)
    if path.is_dir():
        return ImageSource(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: expected a CSV file (.csv, .csv.gz), Parquet (a .parquet file, a folder or a glob of them) or a folder of images")


def read_training_data(
    path: str | Path,
    *,
    columns: list[str] | None = None,
    exclude: list[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> TrainingData:
    """Load a table or an image folder for training (see the sources' `read_training`)."""
    return open_source(path).read_training(ColumnRoles(columns, exclude, id_column, label_column), image_shape)


def iter_chunks(path: str | Path, spec: InputSpec, **options) -> Iterator[Chunk]:
    """Stream `path` as chunks of rows the model described by `spec` can score (see `Source.chunks`)."""
    return open_source(path).chunks(spec, **options)
