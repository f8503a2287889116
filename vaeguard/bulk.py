"""Bulk scoring: files and data frames in, one row of scores per sample out.

Every path through here ends in `score_rows`, the one function that scores a chunk: one
forward pass gives the anomaly scores and the per-feature scores, then the conformal p-values,
the flags (`calibration.is_flagged`) and the top contributing features follow. Each function
takes a `Scorer` (what `vaeguard score` and the engines load: no scikit-learn) or a fitted
`VAEAnomalyDetector` (scored through its `.scorer()`, with the same result). Around it:

- `score_frame`: pandas DataFrame -> DataFrame, pure; what the Dask and Spark engines map;
- `score_file`: a CSV file or an image folder (vaeguard.sources) -> a scores CSV, streamed
  in chunks and written atomically, in input order;
- `score_labelled` / `score_normal`: scores of labelled or normal data for evaluation and
  calibration; `calibrate_file` re-thresholds a detector from a file (`vaeguard calibrate`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .calibration import is_flagged, p_values, refuse_broken_scores
from .csvwriter import write_csv
from .errors import DataError
from .scorer import Scorer, as_scorer
from .sources import FrameSource, Source, describe_key, open_source
from .tabular import CHUNK_ROWS

if TYPE_CHECKING:
    from .estimator import VAEAnomalyDetector

Progress = Callable[[int], None]
Model = Union[Scorer, "VAEAnomalyDetector"]
LINE_END = "\r\n"  # RFC 4180, as the csv module writes


@dataclass
class RowScores:
    """Scores of a chunk's rows: anomaly score, conformal p-value, flag, per-feature scores."""

    scores: np.ndarray
    p_values: np.ndarray
    is_anomaly: np.ndarray
    feature_scores: np.ndarray | None


def score_rows(model: Model, X: np.ndarray, *, explain: bool = True) -> RowScores:
    """Score a chunk of rows (in the units the model was fitted on) with one forward pass."""
    scorer = as_scorer(model)
    if len(X) == 0:
        width = X.shape[1] if X.ndim == 2 else 0
        return RowScores(np.empty(0), np.empty(0), np.empty(0, dtype=bool), np.empty((0, width)) if explain else None)
    scores, features = scorer.score_and_explain(X, explain=explain)
    return RowScores(scores, p_values(scorer.calibration_scores, scores), is_flagged(scores, scorer.threshold), features)


def score_frame(model: Model, frame: pd.DataFrame) -> pd.DataFrame:
    """Score every row of a DataFrame; pure, so any engine can map it over partitions.

    Feature columns are matched by name; extra columns are ignored. The result has the
    frame's index and the columns of the CLI's score output: the id column (when the model
    has one and the frame holds it), score, p_value, is_anomaly, top_1..top_3 and error. A row
    with a cell that is not a finite number gets NaN scores, a missing flag and an error
    naming the column.
    """
    scorer = as_scorer(model)
    source = FrameSource(frame)
    spec = source.check_model(scorer.input_spec)
    (chunk,) = source.chunks(spec, on_bad_row="skip")
    return source.output_frame(spec, chunk, score_rows(scorer, chunk.X))


@dataclass
class ScoringSummary:
    """What a bulk scoring run did: counts, notes and the output path."""

    output: Path
    n_scored: int = 0
    n_anomalies: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def is_parquet_output(path: str | Path) -> bool:
    """Scores go to Parquet when the output name ends in .parquet or .pq, else to CSV."""
    return Path(path).name.lower().endswith((".parquet", ".pq"))


class _ParquetFrames:
    """Append score frames to one Parquet file, a row group per chunk (needs pyarrow)."""

    def __init__(self, fh):
        from .extras import require

        self.pa = require("pyarrow", "parquet")
        self.pq = require("pyarrow.parquet", "parquet")
        self.fh, self.writer = fh, None

    def __call__(self, frame: pd.DataFrame) -> None:
        if self.writer is None:
            table = self.pa.Table.from_pandas(frame, preserve_index=False)
            self.writer = self.pq.ParquetWriter(self.fh, table.schema)
        else:
            table = self.pa.Table.from_pandas(frame, schema=self.writer.schema, preserve_index=False)
        self.writer.write_table(table)

    def close(self) -> None:
        """Write the footer. Also on error, while the file is still open: a writer left to the
        garbage collector would close itself onto a closed file and print a traceback."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()


def score_file(
    model: Model,
    path: str | Path,
    output: str | Path,
    *,
    chunk_size: int = CHUNK_ROWS,
    on_bad_row: str = "fail",
    heatmap_dir: str | Path | None = None,
    progress: Progress | None = None,
    protect=(),
) -> ScoringSummary:
    """Score every row of a table (CSV or Parquet) or every image of a folder into `output`,
    a CSV file, or a Parquet file when its name ends in .parquet (typed columns). Floats are
    written exactly in both: a CSV score reads back as the same float as the Parquet one.

    Table output: row (1-based data row), the id column when the model has one, score,
    p_value, is_anomaly, top_1..top_3 (the columns contributing most to the reconstruction
    part of the score) and error (why a skipped row has no score). Image output: path, score,
    p_value, is_anomaly, error; with `heatmap_dir`, each image's per-pixel contributions are
    written as a PNG there, named like the image (`a/b.png`; `a/c.jpg` gives `a/c.jpg.png`).
    Rows keep the input order; memory is bounded by `chunk_size`. `output` (and every heatmap)
    must not be `path`, one of its images or one of `protect` (e.g. the model file).
    """
    summary = ScoringSummary(Path(output))
    scorer = as_scorer(model)
    source = open_source(path)
    path = source.path
    spec = source.check_model(scorer.input_spec)
    chunks = source.chunks(spec, chunk_size=chunk_size, on_bad_row=on_bad_row, notes=summary.notes)
    as_parquet = is_parquet_output(output)
    text = {} if as_parquet else {"newline": ""}
    with atomic_write(output, "wb" if as_parquet else "w", inputs=[path, *protect], **text) as fh, contextlib.ExitStack() as stack:
        header = True
        write = stack.enter_context(contextlib.closing(_ParquetFrames(fh))) if as_parquet else None
        for chunk in chunks:
            rows = score_rows(scorer, chunk.X, explain=source.explains or heatmap_dir is not None)
            frame = source.output_frame(spec, chunk, rows)
            if write is not None:
                write(frame)
            else:  # floats in their shortest exact repr: they read back bit for bit
                write_csv(fh, frame, header=header, line_end=LINE_END)
            header = False
            if heatmap_dir is not None:
                source.write_extras(spec, chunk, rows, heatmap_dir, protect)
            summary.n_scored += len(rows.scores)
            summary.n_anomalies += int(rows.is_anomaly.sum())
            summary.failed += [(describe_key(key), reason) for key, reason in chunk.failed]
            if progress is not None:
                progress(len(rows.scores) + len(chunk.failed))
        if header:  # an empty source still gets a header line
            empty = pd.DataFrame(columns=source.output_columns(spec))
            if write is not None:
                write(empty)
            else:
                write_csv(fh, empty, header=True, line_end=LINE_END)
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
    keys: list
    failed: list[tuple[str, str]] = field(default_factory=list)


def _scored_chunks(
    scorer: Scorer, source: Source, label_column: str | None, on_bad_row: str, chunk_size: int
) -> tuple[np.ndarray, np.ndarray, list, list[tuple[str, str]]]:
    """Scores, labels (as text: the label column, an image's subfolder, else ""), keys and
    failed rows of every chunk of `source`, streamed."""
    scores, groups, keys, failed = [], [], [], []
    for chunk in source.chunks(scorer.input_spec, chunk_size=chunk_size, on_bad_row=on_bad_row, label_column=label_column):
        scores.append(score_rows(scorer, chunk.X, explain=False).scores)
        labels = chunk.labels if chunk.labels is not None else [""] * len(chunk.keys)
        groups.append(np.asarray([str(v) for v in labels], dtype=object))
        keys += chunk.keys
        failed += [(describe_key(key), reason) for key, reason in chunk.failed]
    scores_all = np.concatenate(scores) if scores else np.empty(0)
    return scores_all, np.concatenate(groups) if groups else np.empty(0, dtype=object), keys, failed


def score_labelled(
    model: Model,
    path: str | Path,
    *,
    label_column: str | None = None,
    normal_label: str | None = None,
    on_bad_row: str = "fail",
    chunk_size: int = CHUNK_ROWS,
) -> LabelledScores:
    """Score labelled data: a table with a label column (by default the one the model was
    trained with), or an image folder whose top-level subfolders name the class (e.g. normal/,
    scratch/, dent/; `normal_label` names the normal one, "normal" by default).
    """
    scorer = as_scorer(model)
    source = open_source(path)
    rule = source.labels(source.check_model(scorer.input_spec), label_column, normal_label)
    scores, groups, keys, failed = _scored_chunks(scorer, source, rule.column, on_bad_row, chunk_size)
    source.check_groups(groups, rule)
    return LabelledScores(scores, anomaly_labels(groups, rule.normal, rule.where), groups, keys, failed)


def score_normal(
    model: Model, path: str | Path, *, on_bad_row: str = "fail", chunk_size: int = CHUNK_ROWS
) -> np.ndarray:
    """Anomaly scores of unlabelled (normal) data, streamed; unreadable images are left out."""
    return _scored_chunks(as_scorer(model), open_source(path), None, on_bad_row, chunk_size)[0]


def calibrate_file(
    detector: VAEAnomalyDetector,
    path: str | Path,
    *,
    fpr: float | None = None,
    label_column: str | None = None,
    normal_label: str | None = None,
    rule: str = "f1",
    recall: float | None = None,
    on_bad_row: str = "fail",
    chunk_size: int = CHUNK_ROWS,
) -> list[str]:
    """Re-threshold a fitted detector from the data in `path` (what `vaeguard calibrate` runs).

    With `label_column` or `normal_label` the data is labelled (see `score_labelled`) and the
    threshold follows `rule`. Otherwise the data is normal and the threshold is the conformal
    quantile at `fpr`; when the model stores a label column (`train --label-column`) and the
    table holds it, only the rows labelled normal are used. A NaN or infinite score is a
    DataError naming its row: no threshold is learned from one. Returns notes for the user.
    """
    scorer = as_scorer(detector)
    source = open_source(path)
    stored = getattr(scorer.input_spec, "label_column", None)
    notes = []
    if label_column is not None or normal_label is not None:
        scored = score_labelled(scorer, path, label_column=label_column, normal_label=normal_label, on_bad_row=on_bad_row, chunk_size=chunk_size)
        scores, keys, y = scored.scores, scored.keys, scored.is_anomaly
    elif stored is not None and source.holds_column(stored):
        scored = score_labelled(scorer, path, on_bad_row=on_bad_row, chunk_size=chunk_size)
        normal = scored.is_anomaly == 0
        scores, keys, y = scored.scores[normal], [k for k, n in zip(scored.keys, normal) if n], None
        notes.append(f"calibrated on the {len(scores):,} rows labelled normal in column {stored!r}; "
                     f"left out {int((~normal).sum()):,} labelled as anomalies")
    else:
        scores, _, keys, _ = _scored_chunks(scorer, source, None, on_bad_row, chunk_size)
        y = None
    refuse_broken_scores(scores, lambda i: f"{path}: {describe_key(keys[i])}")
    if y is None:
        detector.calibrate_scores(scores, fpr=fpr)
    else:
        detector.calibrate_scores(scores, y, rule=rule, recall=recall)
    return notes
