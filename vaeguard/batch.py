"""Training data from a path, and bulk scoring of CSV files and image folders.

DATA is either a CSV file (`.csv`, `.csv.gz`) or a folder of images; the kind is taken from
the path. Scoring streams: a table is read in chunks and an image folder in batches, and the
output CSV is written row by row through a temporary file that replaces the target only when
complete, so memory stays bounded and an interrupted run leaves no partial output.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .calibration import p_values
from .errors import DataError
from .estimator import VAEAnomalyDetector
from .images import iter_image_batches, read_image_folder, save_heatmap_png
from .tabular import CHUNK_ROWS, TableSchema, header_report, is_table_path, iter_table_chunks, read_training_table

Progress = Callable[[int], None]
TOP_K = 3


def data_kind(path: str | Path) -> str:
    """"table" for a CSV file, "images" for a folder; DataError for anything else."""
    path = Path(path)
    if is_table_path(path):
        if not path.is_file():
            raise DataError(f"{path}: no such CSV file")
        return "table"
    if path.is_dir():
        return "images"
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: expected a CSV file (.csv, .csv.gz) or a folder of images")


@dataclass
class TrainingData:
    """Rows to fit on, and the description of the input a model file must keep."""

    X: np.ndarray
    input_spec: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_training_data(
    path: str | Path,
    *,
    columns: list[str] | None = None,
    exclude: list[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> TrainingData:
    """Load a CSV file or an image folder for training.

    `input_spec` is {"kind": "table", "schema": ...} or {"kind": "images", "shape": [C, H, W]};
    it is stored in the model file so scoring reads new data the same way.
    """
    if data_kind(path) == "table":
        table = read_training_table(path, columns=columns, exclude=exclude, id_column=id_column, label_column=label_column)
        return TrainingData(table.X, {"kind": "table", "schema": table.schema.to_dict()})
    folder = read_image_folder(path, image_shape)
    if len(folder.X) == 0:
        raise DataError(f"{path}: no readable image ({len(folder.errors)} failed)")
    return TrainingData(folder.X, {"kind": "images", "shape": list(folder.shape)}, folder.errors)


def input_spec_of(detector: VAEAnomalyDetector, path: Path) -> dict:
    """The model's input description; DataError when it cannot read this kind of data."""
    spec = getattr(detector, "metadata_", {}).get("input")
    kind = data_kind(path)
    if spec is None:
        raise DataError("the model file holds no input description: train it with `vaeguard train`")
    if spec["kind"] != kind:
        wanted = "a CSV file" if spec["kind"] == "table" else "a folder of images"
        raise DataError(f"{path}: this model was trained on {wanted}")
    return spec


@dataclass
class BatchSummary:
    """What a bulk scoring run did: counts and the output path."""

    output: Path
    n_scored: int = 0
    n_anomalies: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return len(self.failed)


@dataclass
class ScoredBatch:
    """Scores of one chunk, in input order, with the per-feature explanation."""

    row_numbers: np.ndarray
    ids: np.ndarray | None
    scores: np.ndarray
    p_values: np.ndarray
    is_anomaly: np.ndarray
    feature_scores: np.ndarray
    labels: np.ndarray | None
    bad_rows: list[tuple[int, str]]


def _score(detector: VAEAnomalyDetector, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = detector.anomaly_score(X)
    return scores, p_values(detector.calibration_scores_, scores), scores > detector.threshold_


def iter_scored_table(
    detector: VAEAnomalyDetector,
    path: str | Path,
    *,
    chunksize: int = CHUNK_ROWS,
    on_bad_row: str = "fail",
    label_column: str | None = None,
    notes: list[str] | None = None,
    explain: bool = True,
) -> Iterator[ScoredBatch]:
    """Score a CSV file chunk by chunk with the schema stored in the model.

    With `explain`, each chunk also carries its per-feature scores (one more forward pass).
    """
    path = Path(path)
    schema = TableSchema.from_dict(input_spec_of(detector, path)["schema"])
    report = header_report(path, schema)
    if notes is not None:
        if report["extra"]:
            notes.append(f"ignored {len(report['extra'])} extra column(s): {', '.join(map(str, report['extra']))}")
        if report["reordered"]:
            notes.append("columns are in another order than at training: matched by name")
    for chunk in iter_table_chunks(path, schema, chunksize=chunksize, on_bad_row=on_bad_row, label_column=label_column):
        if len(chunk.X):
            scores, pv, flagged = _score(detector, chunk.X)
            contributions = detector.feature_scores(chunk.X) if explain else np.empty((len(chunk.X), 0))
        else:
            scores, pv, flagged = np.empty(0), np.empty(0), np.empty(0, dtype=bool)
            contributions = np.empty((0, len(schema.columns)))
        yield ScoredBatch(chunk.row_numbers, chunk.ids, scores, pv, flagged, contributions, chunk.labels, chunk.bad_rows)


def score_table(
    detector: VAEAnomalyDetector,
    path: str | Path,
    output: str | Path,
    *,
    chunksize: int = CHUNK_ROWS,
    on_bad_row: str = "fail",
    progress: Progress | None = None,
) -> BatchSummary:
    """Score every row of a CSV file into `output`, in input order.

    Columns: row (1-based data row), the id column when the model has one, score, p_value,
    is_anomaly, top_1..top_3 (the columns contributing most to the reconstruction part of the
    score) and error (why a skipped row has no score).
    """
    summary = BatchSummary(Path(output))
    schema = TableSchema.from_dict(input_spec_of(detector, Path(path))["schema"])
    names = np.asarray(schema.columns, dtype=object)
    top_k = min(TOP_K, len(names))
    id_header = [schema.id_column] if schema.id_column else []
    padding = [""] * (TOP_K - top_k)
    with atomic_write(output, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", *id_header, "score", "p_value", "is_anomaly", *[f"top_{i + 1}" for i in range(TOP_K)], "error"])
        for batch in iter_scored_table(detector, path, chunksize=chunksize, on_bad_row=on_bad_row, notes=summary.notes):
            top = np.argsort(-batch.feature_scores, axis=1)[:, :top_k]
            ids = batch.ids if batch.ids is not None else [None] * len(batch.scores)
            rows = [
                (int(r), [int(r), *([i] if id_header else []), f"{s:.6g}", f"{p:.6g}", int(a), *names[t], *padding, ""])
                for r, i, s, p, a, t in zip(batch.row_numbers, ids, batch.scores, batch.p_values, batch.is_anomaly, top)
            ]
            rows += [(r, [r, *[""] * len(id_header), "", "", "", *[""] * TOP_K, reason]) for r, reason in batch.bad_rows]
            rows.sort(key=lambda item: item[0])
            writer.writerows(row for _, row in rows)
            summary.n_scored += len(batch.scores)
            summary.n_anomalies += int(batch.is_anomaly.sum())
            summary.failed += [(f"row {r}", reason) for r, reason in batch.bad_rows]
            if progress is not None:
                progress(len(batch.scores) + len(batch.bad_rows))
    return summary


def score_images(
    detector: VAEAnomalyDetector,
    folder: str | Path,
    output: str | Path,
    *,
    batch_size: int = 256,
    heatmap_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> BatchSummary:
    """Score every image under `folder` into `output`: path, score, p_value, is_anomaly, error.

    An unreadable file gets a row with its error and no score; the run goes on. With
    `heatmap_dir`, each image's per-pixel contributions are written as `<path>.png` there.
    """
    summary = BatchSummary(Path(output))
    shape = tuple(input_spec_of(detector, Path(folder))["shape"])
    with atomic_write(output, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score", "p_value", "is_anomaly", "error"])
        for batch in iter_image_batches(folder, shape, batch_size=batch_size):
            rows = []
            if len(batch.X):
                scores, pv, flagged = _score(detector, batch.X)
                rows = [(p, [p, f"{s:.6g}", f"{q:.6g}", int(a), ""]) for p, s, q, a in zip(batch.paths, scores, pv, flagged)]
                summary.n_scored += len(scores)
                summary.n_anomalies += int(flagged.sum())
                if heatmap_dir is not None:
                    maps = detector.feature_scores(batch.X).reshape(len(batch.X), *shape).sum(axis=1)
                    for rel, heatmap in zip(batch.paths, maps):
                        save_heatmap_png(heatmap, Path(heatmap_dir) / f"{rel}.png")
            rows += [(p, [p, "", "", "", reason]) for p, reason in batch.errors]
            rows.sort(key=lambda item: item[0])
            writer.writerows(row for _, row in rows)
            summary.failed += batch.errors
            if progress is not None:
                progress(len(batch.paths) + len(batch.errors))
    return summary


_TRUE, _FALSE = {"1", "1.0", "true", "yes", "anomaly"}, {"0", "0.0", "false", "no", "normal"}


def anomaly_labels(raw, normal_label: str | None = None, source: str = "labels") -> np.ndarray:
    """Turn raw labels into 1 (anomaly) / 0 (normal).

    With `normal_label`, every other value is an anomaly; without it, labels must read as
    0/1 or true/false.
    """
    text = np.asarray([str(v).strip() for v in raw], dtype=object)
    if normal_label is not None:
        return (text != str(normal_label)).astype(int)
    lowered = np.char.lower(text.astype(str))
    unknown = sorted(set(lowered.tolist()) - _TRUE - _FALSE)
    if unknown:
        raise DataError(
            f"{source}: labels must be 0/1 (1 = anomaly) or true/false, found {unknown[:5]}; "
            "pass --normal-label VALUE to name the normal class instead"
        )
    return np.isin(lowered, list(_TRUE)).astype(int)


@dataclass
class LabelledScores:
    """Anomaly scores of labelled data, ready for metrics and a report."""

    scores: np.ndarray
    is_anomaly: np.ndarray
    groups: np.ndarray
    keys: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)


def score_labelled(
    detector: VAEAnomalyDetector,
    path: str | Path,
    *,
    label_column: str | None = None,
    normal_label: str | None = None,
    on_bad_row: str = "fail",
    chunksize: int = CHUNK_ROWS,
    batch_size: int = 256,
) -> LabelledScores:
    """Score labelled data: a CSV with a label column, or an image folder whose top-level
    subfolders name the class (e.g. normal/, scratch/, dent/; `normal_label` names the normal one).
    """
    path = Path(path)
    scores, groups, keys, failed = [], [], [], []
    if data_kind(path) == "table":
        if label_column is None:
            raise DataError(f"{path}: name the column holding the labels with --label-column")
        for batch in iter_scored_table(detector, path, chunksize=chunksize, on_bad_row=on_bad_row, label_column=label_column, explain=False):
            scores.append(batch.scores)
            groups.append(np.asarray([str(v) for v in batch.labels], dtype=object))
            keys += [str(r) for r in batch.row_numbers]
            failed += [(f"row {r}", reason) for r, reason in batch.bad_rows]
        source = f"{path}: column {label_column!r}"
    else:
        shape = tuple(input_spec_of(detector, path)["shape"])
        for batch in iter_image_batches(path, shape, batch_size=batch_size):
            if len(batch.X):
                scores.append(detector.anomaly_score(batch.X))
                groups.append(np.asarray([p.split("/")[0] if "/" in p else "" for p in batch.paths], dtype=object))
                keys += batch.paths
            failed += batch.errors
        normal_label = "normal" if normal_label is None else normal_label
        source = f"{path}: subfolder names"
    scores_all = np.concatenate(scores) if scores else np.empty(0)
    groups_all = np.concatenate(groups) if groups else np.empty(0, dtype=object)
    return LabelledScores(scores_all, anomaly_labels(groups_all, normal_label, source), groups_all, keys, failed)


def score_normal(detector: VAEAnomalyDetector, path: str | Path, *, on_bad_row: str = "fail", chunksize: int = CHUNK_ROWS) -> np.ndarray:
    """Anomaly scores of unlabelled (normal) data, streamed; unreadable images are left out."""
    path = Path(path)
    if data_kind(path) == "table":
        batches = iter_scored_table(detector, path, chunksize=chunksize, on_bad_row=on_bad_row, explain=False)
        parts = [b.scores for b in batches]
    else:
        shape = tuple(input_spec_of(detector, path)["shape"])
        parts = [detector.anomaly_score(b.X) for b in iter_image_batches(path, shape) if len(b.X)]
    return np.concatenate(parts) if parts else np.empty(0)
