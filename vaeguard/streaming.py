"""Training rows streamed from disk: tables larger than memory.

A `TableStream` reads a CSV or Parquet input chunk by chunk, as many times as training needs
(once for statistics, once per epoch, once for calibration), and never holds more than a
chunk plus a shuffle buffer of rows:

- **Split by a seeded hash of the row.** Each row's feature values, hashed with the seed,
  give a number in [0, 1) that puts it in calibration, validation or training, the same way
  on every pass, without an index of row positions. Validation and calibration are capped
  (`max_validation_rows`, `max_calibration_rows`): on a very large file the fractions shrink
  so that what is held in memory stays bounded. Identical rows land in the same split.
- **Statistics in a first pass**: row counts, per-feature mean and standard deviation of the
  training rows (Chan's pairwise update, float64), each feature's recording step (`Levels`,
  the same accumulator in-memory training uses, so both give the same scale floor) and the
  value range (for the likelihood).
- **Shuffled mini-batches** from a buffer of `buffer_rows` rows: chunks are read in file
  order, the buffer is shuffled and half of it emitted as batches, so rows mix within a
  window of the file (shuffle the file itself if it is sorted by something the model should
  not see in order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .inputs import CHUNK_ROWS
from .tabular import ColumnRoles

_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _MIX1
    h = h ^ (h >> np.uint64(27))
    h = h * _MIX2
    return h ^ (h >> np.uint64(31))


def row_hash_unit(X: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per row from its float32 values and the seed (splitmix64 per cell)."""
    bits = np.ascontiguousarray(X, dtype=np.float32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = np.full(len(X), np.uint64(seed) * _GOLDEN + _GOLDEN, dtype=np.uint64)
        for j in range(bits.shape[1]):
            h = _splitmix(h ^ (bits[:, j] + _GOLDEN * np.uint64(j + 1)))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# A feature whose training values repeat (at most this many distinct values, and at most half
# as many as its training cells) is recorded in steps (a flag, a count, 8-bit grey levels):
# its smallest step between values floors its scale (vaeguard.scorer.feature_scales).
# Otherwise it is continuous (step 0): on 300 rows of measurements every value is distinct.
MAX_STEP_VALUES = 1024


class Levels:
    """Per feature, the distinct training values while there are at most MAX_STEP_VALUES of them,
    gathered chunk by chunk; `steps()` is the same whatever the chunking (a union of sets)."""

    def __init__(self, n_features: int):
        self.levels: list[np.ndarray | None] = [np.empty(0, dtype=np.float32) for _ in range(n_features)]
        self.cells = np.zeros(n_features, dtype=np.int64)  # training cells present, per feature

    def update(self, X: np.ndarray) -> Levels:
        """Add the values of rows X (NaN, a missing cell, is no value); returns self."""
        if not len(X):
            return self
        ordered = np.sort(np.asarray(X, dtype=np.float32), axis=0)  # NaN last
        self.cells += (~np.isnan(ordered)).sum(axis=0)
        new = np.diff(ordered, axis=0) > 0  # False next to NaN
        distinct = new.sum(axis=0) + ~np.isnan(ordered[0])
        for j in np.flatnonzero([level is not None for level in self.levels]):
            if distinct[j] > MAX_STEP_VALUES:
                self.levels[j] = None
                continue
            column = ordered[:, j]
            values = column[np.r_[True, new[:, j]] & ~np.isnan(column)]
            merged = np.union1d(self.levels[j], values)
            self.levels[j] = merged if len(merged) <= MAX_STEP_VALUES else None
        return self

    def steps(self) -> np.ndarray:
        """Per feature (float64): the smallest difference between two distinct training values
        when the values repeat (2 to MAX_STEP_VALUES of them, at most half the cells), else 0."""
        return np.array([
            float(np.diff(v.astype(np.float64)).min()) if v is not None and 1 < len(v) <= cells / 2 else 0.0
            for v, cells in zip(self.levels, self.cells)
        ])


@dataclass
class StreamStats:
    """What the first pass learned: counts per split, training-row moments and value range."""

    n_rows: int
    n_train: int
    mean: np.ndarray
    std: np.ndarray
    steps: np.ndarray  # per feature: the recording step (Levels.steps)
    low: float
    high: float
    validation: np.ndarray  # the validation rows themselves (at most max_validation_rows)
    n_calibration: int
    reference: np.ndarray  # up to `reference_rows` training rows, chosen by the hash


class TableStream:
    """A CSV or Parquet table read again and again in chunks, split by a seeded row hash."""

    def __init__(
        self,
        path: str | Path,
        *,
        columns: list[str] | None = None,
        exclude: list[str] | None = None,
        id_column: str | None = None,
        label_column: str | None = None,
        chunk_size: int = CHUNK_ROWS,
        buffer_rows: int = 65_536,
        max_validation_rows: int = 50_000,
        max_calibration_rows: int = 100_000,
    ):
        from .sources import TableSource, open_source

        self.source = open_source(path)
        if not isinstance(self.source, TableSource):
            raise DataError(f"{path}: out-of-core training reads tables (CSV or Parquet), not image folders")
        if buffer_rows < 2:
            raise ValueError(f"buffer_rows must be at least 2, not {buffer_rows}")
        self.path, self.chunk_size, self.buffer_rows = path, chunk_size, buffer_rows
        self.max_validation_rows, self.max_calibration_rows = max_validation_rows, max_calibration_rows
        roles = ColumnRoles(columns, exclude, id_column, label_column)
        # notes: the columns left out, and why (as in-memory training says)
        self.input_spec, self.notes = self.source.infer_schema(roles, chunk_size)
        self._cuts: tuple[float, float] | None = None

    def chunks(self) -> Iterator[np.ndarray]:
        """Every row's features (float32, model order), a chunk at a time; a bad cell is a DataError."""
        for chunk in self.source.chunks(self.input_spec, chunk_size=self.chunk_size, on_bad_row="fail"):
            yield chunk.X

    def prepare(self, seed: int, validation_fraction: float, calibration_fraction: float, reference_rows: int = 0) -> StreamStats:
        """First pass: split points, training-row statistics, the validation rows, and up to
        `reference_rows` training rows picked by the hash (for scores that compare with codes
        of training data)."""
        self.seed = seed
        n_rows = sum(len(X) for X in self.chunks())
        if n_rows < 3:
            raise DataError(f"{self.path}: out-of-core training needs at least 3 rows, found {n_rows}")
        cal = min(calibration_fraction, self.max_calibration_rows / n_rows)
        val = min(validation_fraction, self.max_validation_rows / n_rows)
        self._cuts = (cal, cal + val)
        d = self.input_spec.n_features
        count, mean, m2 = np.zeros(d), np.zeros(d), np.zeros(d)  # per feature: cells present
        low, high, n_cal, n_train, validation, reference = np.inf, -np.inf, 0, 0, [], []
        levels = Levels(d)
        expected_train = max(1.0, n_rows * (1 - cal - val))
        ref_cut = cal + val + (1 - cal - val) * min(1.0, reference_rows / expected_train)
        for X in self.chunks():
            u = row_hash_unit(X, seed)
            low, high = min(low, float(np.nanmin(X))), max(high, float(np.nanmax(X)))
            n_cal += int((u < cal).sum())
            validation.append(X[(u >= cal) & (u < cal + val)])
            if reference_rows:
                reference.append(X[(u >= cal + val) & (u < ref_cut)])
            train = X[u >= cal + val].astype(np.float64)
            n_train += len(train)
            levels.update(train)
            if len(train):  # Chan et al.: merge this chunk's mean and squared deviations, per feature
                present = ~np.isnan(train)
                n_b = present.sum(axis=0)
                mean_b = np.where(present, train, 0.0).sum(axis=0) / np.maximum(n_b, 1)
                m2_b = np.where(present, (train - mean_b) ** 2, 0.0).sum(axis=0)
                delta, total = mean_b - mean, count + n_b
                mean = mean + delta * n_b / np.maximum(total, 1)
                m2 = m2 + m2_b + delta**2 * count * n_b / np.maximum(total, 1)
                count = total
        if n_train == 0 or n_cal == 0:
            raise DataError(
                f"{self.path}: {n_rows} rows are too few to hold out calibration rows and keep training rows; "
                "use more rows or train in memory"
            )
        d_empty = np.empty((0, d), dtype=np.float32)
        picked = np.concatenate(reference)[:reference_rows] if reference else d_empty
        if count.min() == 0:
            name = self.input_spec.columns[int(np.argmin(count))]
            raise DataError(f"{self.path}: column {name!r}: every training cell is missing")
        return StreamStats(n_rows, n_train, mean, np.sqrt(m2 / count), levels.steps(), low, high, np.concatenate(validation), n_cal, picked)

    def _split(self, X: np.ndarray) -> np.ndarray:
        if self._cuts is None:
            raise RuntimeError("call prepare() first")
        return row_hash_unit(X, self.seed)

    def train_batches(self, epoch: int, batch_size: int, transform=None) -> Iterator[np.ndarray]:
        """One epoch of shuffled training mini-batches, through a buffer of `buffer_rows` rows."""
        rng = np.random.default_rng([self.seed, epoch])
        buffer: list[np.ndarray] = []
        held = 0
        for X in self.chunks():
            train = X[self._split(X) >= self._cuts[1]]
            if transform is not None:
                train = transform(train)
            buffer.append(train)
            held += len(train)
            if held >= self.buffer_rows:
                rows = np.concatenate(buffer)
                rows = rows[rng.permutation(len(rows))]
                keep = self.buffer_rows // 2
                emit = len(rows) - keep
                emit -= emit % batch_size  # whole batches; the rest stays to mix with what follows
                for start in range(0, emit, batch_size):
                    yield rows[start : start + batch_size]
                buffer, held = [rows[emit:]], len(rows) - emit
        if held:
            rows = np.concatenate(buffer)
            rows = rows[rng.permutation(len(rows))]
            for start in range(0, len(rows), batch_size):
                yield rows[start : start + batch_size]

    def calibration_chunks(self) -> Iterator[np.ndarray]:
        """The calibration rows, a chunk at a time."""
        for X in self.chunks():
            rows = X[self._split(X) < self._cuts[0]]
            if len(rows):
                yield rows
