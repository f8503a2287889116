"""Read CSV tables: a whole table for training, and chunks with bounded memory for scoring.

Both paths share one streaming reader (`vaeguard.csvrecords`) that keeps track of where each
row came from, so every problem is reported with the file, the column, the 1-based data row
number and the physical line number. This module matches the header to the model's columns
and turns cells into float32 features (`frame_features`, shared with Parquet and the engines).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .csvrecords import BadRow, raw_chunks, read_header, shown
from .errors import DataError
from .inputs import CHUNK_ROWS, NO_CELL, TableInput, check_id_column, check_on_bad_row, chunk_rows

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_table_path(path: str | Path) -> bool:
    """True for a `.csv` or `.csv.gz` file name (any case)."""
    name = Path(path).name.lower()
    return name.endswith(".csv") or name.endswith(".csv.gz")


@dataclass
class TrainingTable:
    """A whole CSV file as features (float64), with its schema and optional labels and ids."""

    X: np.ndarray
    schema: TableInput
    labels: np.ndarray | None = None
    ids: np.ndarray | None = None
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (column, why it is no feature)


@dataclass
class TableChunk:
    """One chunk of a table (CSV or Parquet) being read: the good rows, and the bad rows skipped in it."""

    X: np.ndarray
    row_numbers: np.ndarray
    ids: np.ndarray | None
    labels: np.ndarray | None
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    bad_ids: dict[int, object] = field(default_factory=dict)  # row number -> id, for bad rows that have one
    texts: dict[int, np.ndarray] = field(default_factory=dict)  # categorical column -> its cells' text

    @classmethod
    def of(cls, X: np.ndarray, bad: np.ndarray, rows: np.ndarray, ids: np.ndarray | None,
           labels: np.ndarray | None, bad_rows: list[tuple[int, str]], texts: dict | None = None) -> "TableChunk":
        """The chunk of a table source: its good rows, and the ids of the `bad` ones."""
        good = ~bad
        return cls(
            X=X[good] if bad.any() else X,
            row_numbers=rows[good],
            ids=None if ids is None else ids[good],
            labels=None if labels is None else labels[good],
            bad_rows=bad_rows,
            bad_ids={int(r): i for r, i in zip(rows[bad], ids[bad])} if ids is not None and bad.any() else {},
            texts={k: t[good] for k, t in (texts or {}).items()},
        )


def _positions(path: Path, header: list[str], names: list[str], what: str) -> list[int]:
    """Header position of each name; DataError for names absent or present more than once."""
    first: dict[str, int] = {}
    repeated = set()
    for i, name in enumerate(header):
        if first.setdefault(name, i) != i:
            repeated.add(name)
    missing = [n for n in names if n not in first]
    if missing:
        raise DataError(f"{path}: no {what} {', '.join(map(repr, missing))}; the file has {listing(header)}")
    twice = [n for n in names if n in repeated]
    if twice:
        raise DataError(f"{path}: column {twice[0]!r} appears more than once in the header")
    return [first[n] for n in names]


def listing(header: list[str]) -> str:
    shown = ", ".join(map(repr, header[:30]))
    more = f" and {len(header) - 30} more" if len(header) > 30 else ""
    return f"columns {shown}{more}"


def _numbers(col: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """The column as float64 (NaN where not a number) and its raw text (None when already
    numeric; None for a null cell, such as every cell of pyarrow's null type)."""
    if col.dtype.kind in "iuf":
        return col.to_numpy(dtype=np.float64, na_value=np.nan), None
    text = col.astype(str)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    raw = text.to_numpy(dtype=object)
    nulls = col.isna().to_numpy()
    if nulls.any():
        raw[nulls] = None
    return values, raw


def frame_values(frame: pd.DataFrame, keys: Sequence, skip: Sequence[int] = ()) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """`frame[keys]` as float64 (NaN where not a number), and the raw text of the columns that
    are not numeric, by position in `keys`. Numeric columns are converted as one block: one
    call per column cost minutes on a 100,000-column table. The columns at positions `skip`
    (categorical ones, whose text is encoded elsewhere) are NaN and not parsed."""
    labels = frame.columns
    if labels.is_unique:
        where = labels.get_indexer(keys)
    else:
        counts = labels.value_counts()
        twice = [k for k in keys if counts.get(k, 0) > 1]
        if twice:
            raise DataError(f"column {twice[0]!r} appears more than once")
        where = labels.get_indexer_for(keys)
    if (where < 0).any():
        raise DataError(f"no column {keys[int(np.argmin(where))]!r}")
    kinds = np.array([dtype.kind for dtype in frame.dtypes.iloc[where]], dtype="U1")
    parsed = np.ones(len(keys), dtype=bool)
    parsed[list(skip)] = False
    is_number = np.isin(kinds, ("i", "u", "f"))
    numeric = np.flatnonzero(is_number & parsed)
    values = np.empty((len(frame), len(keys)), dtype=np.float64)
    values[:, ~parsed] = np.nan
    if len(numeric):
        values[:, numeric] = frame.iloc[:, where[numeric]].to_numpy(dtype=np.float64, na_value=np.nan)
    raws = {}
    for k in np.flatnonzero(~is_number & parsed).tolist():
        values[:, k], raws[k] = _numbers(frame.iloc[:, where[k]])
    return values, raws


# Text that stands for a missing cell, besides an empty one: pandas' default NA strings, any case.
MISSING_TEXT = frozenset(
    t.lower() for t in ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "null")
)


def _missing(values: np.ndarray, raws: dict[int, np.ndarray]) -> np.ndarray:
    """Which cells are missing: NaN in a numeric column (how a null arrives in Parquet and
    pandas), a null, or text in MISSING_TEXT. A missing cell is left out of the row's likelihood;
    text that is not a number is a bad cell."""
    missing = np.isnan(values)
    for k, raw in raws.items():
        rows = np.flatnonzero(missing[:, k])
        if len(rows):
            missing[rows, k] = [t is None or t.strip().lower() in MISSING_TEXT for t in raw[rows]]
    return missing


def first_gap(X: np.ndarray) -> tuple[str, int] | None:
    """("column", j) for the first feature of training rows X with no value, else ("row", i)
    for the first row with none, else None."""
    missing = np.isnan(X)
    if not missing.any():
        return None
    for axis, what in ((0, "column"), (1, "row")):
        empty = missing.all(axis=axis)
        if empty.any():
            return what, int(np.argmax(empty))
    return None


def problems_text(found: list[tuple[str | None, str]]) -> str:
    """A bad row's problems, as the error column says them: "column 'a': why; column 'b': why"."""
    return "; ".join(why if column is None else f"column {column!r}: {why}" for column, why in found)


def cell_problem(value: float, raw: str | None) -> str:
    """Why a cell that is not missing is not usable as a feature value (`raw` is its text, None
    if already numeric)."""
    raw = str(value) if raw is None else raw
    if np.isfinite(value):
        return f"{shown(raw)} is too large (beyond float32)"
    if np.isnan(value) and raw.strip().lower().lstrip("+-") != "nan":
        return f"{shown(raw)} is not a number"
    return f"{shown(raw)} is not a finite number"


def _usable(values: np.ndarray) -> np.ndarray:
    """Finite and within float32 range, as the model computes in float32."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (np.abs(values) <= _FLOAT32_MAX)


def not_numeric(finite: int, nonempty: int, booleans: int, infinite: int) -> str | None:
    """Why a CSV column is not a feature by default, from counts of its cells (None: it is one).

    The one rule for training in memory and out of core: a column is numeric when at least
    half its non-empty cells are finite numbers, so a numeric column with a typo is reported
    rather than silently dropped. Text such as "NA" counts as a non-empty cell that is not a number.
    """
    if finite > 0 and 2 * finite >= nonempty:
        return None
    if nonempty == 0:
        return "every cell is empty"
    if 2 * booleans >= nonempty:
        return "true/false values, not numbers"
    if 2 * infinite >= nonempty:
        return "infinite values"
    return "mostly text, not numbers"


@dataclass(frozen=True)
class ColumnRoles:
    """What the user says about a table's columns: the features (None: the default rule picks
    them), columns to leave out, the id column and the label column."""

    columns: Sequence[str] | None = None
    exclude: Sequence[str] | None = None
    id_column: str | None = None
    label_column: str | None = None

    @property
    def special(self) -> list[str]:
        return [c for c in (self.id_column, self.label_column) if c is not None]

    def candidates(self, where, header: list[str], check: Callable[[list[str], str], None]) -> list[str]:
        """The columns that may be features, after the checks every table reader makes:
        `check(names, what)` raises when a named column is absent (or repeated) in `header`."""
        check_id_column(self.id_column, str(where))
        check(self.special, "column")
        if self.exclude:
            check(list(self.exclude), "column to exclude")
        if self.columns is not None:
            if not self.columns:
                raise DataError(f"{where}: the list of feature columns is empty")
            clash = [c for c in self.columns if c in self.special]
            if clash:
                raise DataError(f"{where}: column {clash[0]!r} cannot be both a feature and the id or label column")
            names = list(dict.fromkeys(self.columns))
        else:
            skip = {*self.special, *(self.exclude or [])}
            # Unnamed columns (such as a pandas index written by to_csv) are never picked by default.
            names = [c for c in dict.fromkeys(header) if c not in skip and c.strip()]
            if not names:
                raise DataError(f"{where}: no columns left to use as features; the file has {listing(header)}")
        check(names, "column")
        return names


# Column names that say "label" (any case): never a feature unless the user says so.
LABEL_NAMES = frozenset({"label", "labels", "target", "class", "y", "is_anomaly", "anomaly", "outlier", "is_outlier", "fraud", "is_fraud"})
_ID_NAME = re.compile(r"^(id|uuid|guid)$|[_\-\s.](id|uuid|key)$", re.IGNORECASE)
_CAMEL_ID = re.compile(r"[a-z]I[dD]$")  # customerId, userID
# Rows of distinct integers before a column counts as a row identifier: 20 values increasing
# in file order by chance have a probability of 1/20!.
ID_MIN_ROWS = 20
# A column that is text (or true/false) rather than numbers is categorical: one model feature
# per distinct value seen in training, scored by a categorical likelihood. By default only when
# its values repeat: at most FEW_LEVELS values, or at least ROWS_PER_LEVEL rows per value on
# average, never a different value in every row, and never over MAX_LEVELS (free text, names,
# e-mails and ids are left out with a note).
FEW_LEVELS, ROWS_PER_LEVEL, MAX_LEVELS = 20, 10, 1000
TEXT_REASONS = ("mostly text, not numbers", "true/false values, not numbers")
ROLE_NOTES = {
    "label": "named like a label; declare it with --label-column, or keep it as a feature with --columns",
    "id": "a unique row identifier; declare it with --id-column, or keep it as a feature with --columns",
}


def looks_like_label(name: str) -> bool:
    return str(name).strip().lower() in LABEL_NAMES


def looks_like_id(name: str) -> bool:
    """An id by its name: id, uuid, customer_id, order-key, userId."""
    name = str(name).strip()
    return bool(_ID_NAME.search(name) or _CAMEL_ID.search(name))


class CellCounts:
    """What the one default column rule (`CellCounts.choose`) needs to know about each candidate
    column, gathered a block of rows at a time: counts of finite, non-empty, true/false and
    infinite cells (`not_numeric`), whether every value is of an integer type, the value range
    (a constant column), whether integer values are distinct: strictly increasing in file
    order, or never repeated in a column named like an id (a row identifier), and the values of
    a column read as text (its levels, if it is categorical)."""

    def __init__(self, names: Sequence[str]):
        n_columns = len(names)
        self.finite, self.nonempty, self.booleans, self.infinite = (np.zeros(n_columns, dtype=np.int64) for _ in range(4))
        self.integral = np.ones(n_columns, dtype=bool)
        self.low, self.high = np.full(n_columns, np.inf), np.full(n_columns, -np.inf)
        self.increasing = np.ones(n_columns, dtype=bool)
        self.last = np.full(n_columns, -np.inf)
        self.seen = {k: set() for k, name in enumerate(names) if looks_like_id(name)}
        self.distinct = {k: True for k in self.seen}
        self.texts: dict[int, dict[str, int]] = {}  # per column read as text: its values (to MAX_LEVELS + 1)

    def add(self, values: np.ndarray, raws: dict[int, np.ndarray], dtypes: Sequence) -> np.ndarray:
        """Count a block of rows (`frame_values`' output); returns which cells are bad: neither
        usable numbers nor missing."""
        ok = _usable(values)
        missing = ~ok & _missing(values, raws)
        self.finite += ok.sum(axis=0)
        self.infinite += np.isinf(values).sum(axis=0)
        self.nonempty += (~missing).sum(axis=0)
        for k, raw in raws.items():
            cells = canonical_text(pd.Series(raw[~missing[:, k]], dtype=object))
            self.booleans[k] += int(cells.isin(("true", "false")).sum())
            levels = self.texts.setdefault(k, {})
            if len(levels) <= MAX_LEVELS:
                for level, n in cells.value_counts(sort=False).items():
                    levels[level] = levels.get(level, 0) + int(n)
        self.integral &= np.array([dtype.kind in "iu" for dtype in dtypes], dtype=bool)
        if len(values):
            with np.errstate(invalid="ignore"):
                usable = np.where(ok, values, np.nan)
                self.low = np.fmin(self.low, np.nanmin(np.where(ok, values, np.inf), axis=0))
                self.high = np.fmax(self.high, np.nanmax(np.where(ok, values, -np.inf), axis=0))
                rising = ok.all(axis=0) & (usable[0] > self.last)
                if len(values) > 1:
                    rising &= (np.diff(usable, axis=0) > 0).all(axis=0)
            self.increasing &= rising
            self.last = usable[-1]
            for k, seen in self.seen.items():
                if self.distinct[k] and self.integral[k]:
                    column = values[:, k][ok[:, k]]
                    fresh = set(column.tolist())
                    self.distinct[k] = len(fresh) == len(column) and not (fresh & seen)
                    seen |= fresh
        return ~ok & ~missing

    def role(self, k: int, name: str) -> str | None:
        """"label" or "id" when candidate column k looks like one (by its name, or as distinct
        integers), else None."""
        if looks_like_label(name):
            return "label"
        if self.integral[k] and self.finite[k] >= ID_MIN_ROWS and (self.increasing[k] or self.distinct.get(k, False)):
            return "id"
        return None

    def is_text(self, k: int) -> bool:
        """Whether column k is text (or yes/no) rather than numbers: a categorical column."""
        why = not_numeric(self.finite[k], self.nonempty[k], self.booleans[k], self.infinite[k])
        return why in TEXT_REASONS and bool(self.texts.get(k))

    def levels(self, k: int) -> tuple[str, ...]:
        return tuple(sorted(self.texts[k]))

    def _too_many_levels(self, k: int) -> str | None:
        """Why text column k is not a categorical feature by default: too many distinct values."""
        n, cells = len(self.texts[k]), int(self.nonempty[k])
        if n > MAX_LEVELS:
            return f"over {MAX_LEVELS:,} distinct text values (free text, names or ids)"
        if n == cells >= 2:
            return "a different text value in every row (names or ids); name it with --columns to use its values as categories"
        if n > max(FEW_LEVELS, cells / ROWS_PER_LEVEL):
            return (
                f"{n:,} distinct text values in {cells:,} cells, fewer than {ROWS_PER_LEVEL} rows per value "
                "(free text, names or ids); name it with --columns to use its values as categories"
            )
        return None

    def _why_not(self, k: int, name: str) -> str | None:
        """Why candidate column k is not a feature by default (None: it is one)."""
        if looks_like_label(name):
            return ROLE_NOTES["label"]
        if self.is_text(k):
            levels = self.texts[k]
            return self._too_many_levels(k) or (f"the same value ({next(iter(levels))!r}) in every row" if len(levels) == 1 else None)
        why = not_numeric(self.finite[k], self.nonempty[k], self.booleans[k], self.infinite[k])
        if why is not None:
            return why
        if self.low[k] == self.high[k] and self.finite[k] == self.nonempty[k]:  # a typo is reported, not hidden
            return f"the same value ({self.low[k]:g}) in every row"
        role = self.role(k, name)
        return ROLE_NOTES[role] if role else None

    def choose(self, where, names: list[str], roles: ColumnRoles) -> tuple[list[int], list[tuple[str, str]], TableInput]:
        """Positions of the feature columns among `names`, (column, why) for those left out, and
        the schema of the features: the user's columns all; by default those the rule accepts
        (`_why_not`; DataError if none)."""
        if roles.columns is not None:
            crowded = [k for k in range(len(names)) if self.is_text(k) and len(self.texts[k]) > MAX_LEVELS]
            if crowded:
                raise DataError(f"{where}: column {names[crowded[0]]!r} holds over {MAX_LEVELS:,} distinct text values: too many to use as categories")
            chosen = list(range(len(names)))
            return chosen, [], self._schema(names, chosen, roles)
        whys = [self._why_not(k, name) for k, name in enumerate(names)]
        chosen = [k for k, why in enumerate(whys) if why is None]
        if not chosen:
            whys = "; ".join(f"{name!r}: {why}" for name, why in zip(names[:5], whys))
            raise DataError(f"{where}: no numeric columns to use as features ({whys}{' ...' if len(names) > 5 else ''})")
        return chosen, [(names[k], why) for k, why in enumerate(whys) if why is not None], self._schema(names, chosen, roles)

    def _schema(self, names: list[str], chosen: list[int], roles: ColumnRoles) -> TableInput:
        text = [self.is_text(k) for k in chosen]
        return TableInput(
            tuple(names[k] for k in chosen),
            tuple("text" if t else "int64" if self.integral[k] else "float64" for k, t in zip(chosen, text)),
            roles.id_column,
            roles.label_column,
            tuple(self.levels(k) if t else None for k, t in zip(chosen, text)),
        )


def role_warnings(frame: pd.DataFrame) -> list[str]:
    """Warnings for the numeric columns of a DataFrame that look like a label or a row id. The
    estimator keeps every column it is given, as scikit-learn's estimators do, but says so."""
    numeric = [k for k, dtype in enumerate(frame.dtypes) if dtype.kind in "iufb"]
    names = [str(frame.columns[k]) for k in numeric]
    counts = CellCounts(names)
    counts.add(frame.iloc[:, numeric].to_numpy(dtype=np.float64, na_value=np.nan), {}, frame.dtypes.iloc[numeric])
    what = {"label": "a label", "id": "a row identifier"}
    return [
        f"column {name!r} looks like {what[role]} and is used as a feature; drop it from X unless it is one"
        for k, name in enumerate(names)
        if (role := counts.role(k, name)) is not None
    ]


def _header_check(path: Path, header: list[str]) -> Callable[[list[str], str], None]:
    return lambda names, what: _positions(path, header, names, what) and None


def read_training_table(path: str | Path, roles: ColumnRoles = ColumnRoles()) -> TrainingTable:
    """Read a whole CSV file for training.

    Features are `roles.columns` when given, else every numeric column other than the id,
    label and excluded ones (`not_numeric`, the one default rule). Any cell of a feature column
    that is not a finite number is a DataError naming it.
    """
    path = Path(path)
    header = read_header(path)
    candidates = roles.candidates(path, header, _header_check(path, header))
    positions = _positions(path, header, candidates, "column")
    special_positions = _positions(path, header, roles.special, "column")
    id_pos = special_positions[0] if roles.id_column is not None else None
    label_pos = special_positions[-1] if roles.label_column is not None else None
    d = len(candidates)
    counts = CellCounts(candidates)
    first_bad: list[BadRow | None] = [None] * d
    parts, numbers, ids, labels, n_rows = [], [], [], [], 0
    malformed: BadRow | None = None
    rows_at_a_time = chunk_rows(CHUNK_ROWS, len(header))
    try:
        for chunk in raw_chunks(path, header, special_positions, rows_at_a_time, columns=list(dict.fromkeys(positions + special_positions))):
            if chunk.malformed and malformed is None:
                malformed = chunk.malformed[0]
            if not len(chunk.rows):
                continue
            n_rows += len(chunk.rows)
            values, raws = frame_values(chunk.frame, positions)
            broken = counts.add(values, raws, chunk.frame.dtypes.loc[positions])
            for k in np.flatnonzero(broken.any(axis=0)).tolist():
                if first_bad[k] is None:
                    i = int(np.argmax(broken[:, k]))
                    why = cell_problem(values[i, k], raws[k][i] if k in raws else None)
                    first_bad[k] = BadRow(int(chunk.rows[i]), int(chunk.lines[i]), candidates[k], why)
            parts.append((values, raws))
            numbers.append(np.stack([chunk.rows, chunk.lines], axis=1))
            if id_pos is not None:
                ids.append(chunk.frame[id_pos].to_numpy(dtype=object))
            if label_pos is not None:
                labels.append(chunk.frame[label_pos].to_numpy(dtype=object))
        if n_rows == 0:
            if malformed is not None:
                raise malformed.error(path)
            raise DataError(f"{path}: no data rows (only a header)")
        try:
            chosen, dropped, schema = counts.choose(path, candidates, roles)
        except DataError:
            if malformed is not None:  # what is wrong with the file comes first
                raise malformed.error(path) from None
            raise
        # A malformed line is reported together with bad cells, whichever comes first in the file.
        problems = [first_bad[k] for k, lv in zip(chosen, schema.levels) if lv is None and first_bad[k] is not None]
        problems += [malformed] if malformed else []
        if problems:
            first = min(problems, key=lambda b: (b.row, b.line))
            hint = "; fix the value or leave the column out with exclude" if roles.columns is None and first.column else ""
            raise DataError(f"{first.error(path)}{hint}")
        X = np.concatenate([assemble(values, texts, chosen, schema.levels) for values, texts in parts])
        del parts
        gap = first_gap(X)
        if gap is not None and gap[0] == "column":
            raise DataError(f"{path}: {schema.feature_label(gap[1])}: every training cell is missing")
        if gap is not None:
            row, line = np.concatenate(numbers)[gap[1]]
            raise BadRow(int(row), int(line), None, NO_CELL).error(path)
    except MemoryError:
        raise DataError(
            f"{path}: not enough memory to load the table ({n_rows:,} rows or more, {d:,} columns) for training; "
            "train with --out-of-core, which streams the file"
        ) from None
    return TrainingTable(
        X,
        schema,
        np.concatenate(labels) if label_pos is not None else None,
        np.concatenate(ids) if id_pos is not None else None,
        dropped,
    )


def sample_table_schema(path: str | Path, roles: ColumnRoles, chunk_size: int) -> tuple[TableInput, list[tuple[str, str]]]:
    """The schema `read_training_table` would infer, from the first CHUNK_ROWS data rows only
    (what out-of-core training reads before its first pass), read `chunk_size` rows at a time
    (fewer for a wide table), and the columns left out, with why."""
    path = Path(path)
    header = read_header(path)
    rows = chunk_rows(chunk_size, len(header))
    candidates = roles.candidates(path, header, _header_check(path, header))
    positions = _positions(path, header, candidates, "column")
    counts = CellCounts(candidates)
    n = 0
    try:
        for chunk in raw_chunks(path, header, [], rows, columns=positions):
            if len(chunk.rows):
                values, raws = frame_values(chunk.frame, positions)
                counts.add(values, raws, chunk.frame.dtypes.loc[positions])
                n += len(chunk.rows)
            if n >= CHUNK_ROWS:
                break
    except MemoryError:
        raise chunk_memory_error(path, rows, len(header)) from None
    _, dropped, schema = counts.choose(f"{path} (first {n:,} rows)", candidates, roles)
    return schema, dropped


def header_report(path: str | Path, schema: TableInput, *, label_column: str | None = None) -> dict:
    """How a file's header compares with a schema.

    `missing`: feature columns absent from the file; `extra`: columns the model does not use
    (other than the id and label columns); `reordered`: features present in another order;
    `missing_id`: the schema has an id column the file lacks (scoring goes on without ids).
    """
    return _compare_header(read_header(Path(path)), schema, label_column)


def _compare_header(header: list[str], schema: TableInput, label_column: str | None) -> dict:
    features, names = set(schema.columns), set(header)
    used = features | {c for c in (schema.id_column, label_column) if c is not None}
    present = [c for c in header if c in features]
    return {
        "missing": [c for c in schema.columns if c not in names],
        "extra": [c for c in header if c not in used],
        "reordered": present != [c for c in schema.columns if c in names],
        "missing_id": schema.id_column is not None and schema.id_column not in names,
    }


def texts_of(column: pd.Series) -> np.ndarray:
    """A column's cells as text (object array), None where null: how categorical values read."""
    return column.astype("string").to_numpy(dtype=object, na_value=None)


def canonical_text(cells: pd.Series) -> pd.Series:
    """Text cells as categorical values: stripped, and true/false in lower case whatever its case
    (a reader may have parsed them as booleans, which print as True/False)."""
    cells = cells.str.strip()
    lowered = cells.str.lower()
    return cells.where(~lowered.isin(("true", "false")), lowered)


def level_codes(texts: np.ndarray, levels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text cell's position in `levels` (-1 for a value never seen in training) and whether
    it is missing (None, or text in MISSING_TEXT), as `canonical_text` reads it.

    The text is canonicalised once per distinct value, not once per cell: a chunk holds a
    column's few levels thousands of times over."""
    cells, distinct = pd.factorize(np.asarray(texts, dtype=object))  # a null cell is -1
    values = canonical_text(pd.Series(distinct, dtype=object))
    missing = np.append(values.isna().to_numpy() | values.str.lower().isin(MISSING_TEXT).to_numpy(), True)
    codes = np.append(pd.Index(list(levels), dtype=object).get_indexer(values), -1)
    return codes[cells], missing[cells]


def assemble(values: np.ndarray, texts: dict[int, np.ndarray], chosen: Sequence[int], levels: Sequence, dtype=np.float64) -> np.ndarray:
    """The model features of a block: the `chosen` columns of `values` in order, each categorical
    one (`levels` not None) one-hot from `texts` (see `_stack`)."""
    encoded = {k: level_codes(texts[k], lv) for k, lv in zip(chosen, levels) if lv is not None}
    return _stack(values, encoded, chosen, levels, dtype)


def _stack(values: np.ndarray, encoded: dict[int, tuple[np.ndarray, np.ndarray]], chosen: Sequence[int], levels: Sequence,
           dtype) -> np.ndarray:
    """`assemble` with the categorical columns already encoded (`level_codes`, by column), written
    straight into one array of `dtype`: a categorical column is one-hot over its levels, NaN
    across its levels for a missing cell, all zeros for a value never seen in training."""
    if not encoded:
        return values[:, list(chosen)].astype(dtype, copy=False)
    widths = [1 if lv is None else len(lv) for lv in levels]
    out = np.zeros((len(values), sum(widths)), dtype=dtype)
    at = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for k, lv, width in zip(chosen, levels, widths):
            if lv is None:
                out[:, at] = values[:, k]
            else:
                codes, missing = encoded[k]
                seen = np.flatnonzero(codes >= 0)
                out[seen, at + codes[seen]] = 1.0
                out[missing, at : at + width] = np.nan
            at += width
    return out


def categorical_texts(frame: pd.DataFrame, keys: Sequence, levels: Sequence | None) -> dict[int, np.ndarray]:
    """The text of each categorical column's cells (by position in `keys`): what the score
    output names when such a column contributes most."""
    return {k: texts_of(frame[keys[k]]) for k, lv in enumerate(levels or ()) if lv is not None}


def frame_features(frame: pd.DataFrame, keys: Sequence, names: Sequence[str], dtype=np.float32, levels: Sequence | None = None,
                   texts: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, list[list[tuple[str, str]]]]:
    """The feature matrix of `frame[keys]` as `dtype`, which rows are unusable, and why.

    A missing cell (empty, null, NaN, "NA", ...: `_missing`) is NaN in X: the model leaves it out
    of the row's likelihood. A cell that is present but not a finite number within float32 is
    bad, and so is a row with no cell present. Returns (X, bad, problems): X has a row for
    every frame row (bad rows hold garbage), and problems[k] lists (column name or None, reason)
    for the k-th bad row. Shared by the CSV and Parquet
    readers and `vaeguard.bulk.score_frame`, so every engine reports a bad cell in the same words.
    """
    values, raws = frame_values(frame, keys, [k for k, lv in enumerate(levels or ()) if lv is not None])
    usable = _usable(values)
    missing = ~usable & _missing(values, raws)
    texts = categorical_texts(frame, keys, levels) if texts is None else texts
    encoded = {k: level_codes(texts[k], levels[k]) for k in texts}
    for k, (_, gaps) in encoded.items():  # any text is a value of a categorical column: only a gap is not
        missing[:, k] = gaps
        usable[:, k] = ~gaps
    broken = ~usable & ~missing
    bad = broken.any(axis=1) | missing.all(axis=1)
    problems = [
        [(names[j], cell_problem(values[i, j], raws[j][i] if j in raws else None)) for j in np.flatnonzero(broken[i]).tolist()]
        or [(None, NO_CELL)]
        for i in np.flatnonzero(bad).tolist()
    ]
    if encoded:
        return _stack(values, encoded, range(len(keys)), levels, dtype), bad, problems
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype, copy=False), bad, problems


NOTE_COLUMNS = 10  # extra columns named in the note; the rest are counted


def note_extra_columns(notes: list[str], extra: Sequence) -> None:
    """Tell the user which columns of the input the model does not read (CSV and Parquet alike)."""
    if extra:
        more = f" and {len(extra) - NOTE_COLUMNS:,} more" if len(extra) > NOTE_COLUMNS else ""
        notes.append(f"ignored {len(extra):,} extra column(s): {', '.join(map(str, extra[:NOTE_COLUMNS]))}{more}")


def iter_table_chunks(
    path: str | Path,
    schema: TableInput,
    *,
    chunk_size: int = CHUNK_ROWS,
    on_bad_row: str = "fail",
    label_column: str | None = None,
    notes: list[str] | None = None,
) -> Iterator[TableChunk]:
    """Stream a CSV file as float32 feature chunks in schema order, matching columns by name.

    `notes`, when given, receives what the header says beyond the schema: extra columns
    ignored, features in another order. A wide table is read in fewer rows than `chunk_size`
    at a time (`inputs.chunk_rows`), so a chunk fits the memory budget.

    Missing feature columns are always a DataError. A bad row (a cell that is not a finite
    number, or a line with the wrong number of fields) is a DataError with `on_bad_row="fail"`
    and is dropped and listed in the chunk's `bad_rows` with `"skip"`. Chunks whose rows are
    all bad are still yielded, so counts add up. Without the schema's id column in the file,
    `ids` is None.
    """
    check_on_bad_row(on_bad_row)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    path = Path(path)
    header = read_header(path)
    report = _compare_header(header, schema, label_column)
    if notes is not None:
        note_extra_columns(notes, report["extra"])
        if report["reordered"]:
            notes.append("columns are in another order than at training: matched by name")
    if report["missing"]:
        raise DataError(
            f"{path}: missing column{'s' if len(report['missing']) > 1 else ''} "
            f"{', '.join(map(repr, report['missing']))} that the model needs; the file has {listing(header)}"
        )
    positions = _positions(path, header, list(schema.columns), "column")
    id_pos = None
    if schema.id_column is not None and not report["missing_id"]:
        id_pos = _positions(path, header, [schema.id_column], "id column")[0]
    label_pos = None if label_column is None else _positions(path, header, [label_column], "label column")[0]
    categorical = [p for p, lv in zip(positions, schema.levels) if lv is not None]
    text_positions = [p for p in (id_pos, label_pos, *categorical) if p is not None]
    used = list(dict.fromkeys(positions + text_positions))
    rows_at_a_time = chunk_rows(chunk_size, len(header))
    try:
        for chunk in raw_chunks(path, header, text_positions, rows_at_a_time, columns=used):
            texts = categorical_texts(chunk.frame, positions, schema.levels)
            X, bad, cell_problems = frame_features(chunk.frame, positions, schema.columns, levels=schema.levels, texts=texts)
            problems = list(chunk.malformed)
            for i, found in zip(np.flatnonzero(bad), cell_problems):
                problems.append(BadRow(int(chunk.rows[i]), int(chunk.lines[i]), found[0][0], found[0][1], problems_text(found[1:])))
            if problems and on_bad_row == "fail":
                raise min(problems, key=lambda b: (b.row, b.line)).error(path)
            yield TableChunk.of(
                X,
                bad,
                chunk.rows,
                None if id_pos is None else chunk.frame[id_pos].to_numpy(dtype=object),
                None if label_pos is None else chunk.frame[label_pos].to_numpy(dtype=object),
                sorted((b.row, b.reason()) for b in problems),
                texts,
            )
    except MemoryError:
        raise chunk_memory_error(path, rows_at_a_time, len(header)) from None


def chunk_memory_error(path, rows: int, n_columns: int) -> DataError:
    """What to say when a chunk of a table does not fit in memory while being read."""
    return DataError(
        f"{path}: not enough memory to read {rows:,} rows of {n_columns:,} columns at a time; "
        "pass a smaller --chunk-size"
    )

