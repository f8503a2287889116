"""Read CSV files: a whole table for training, and chunks with bounded memory for scoring.

Both paths share one streaming reader (pandas' C engine) that keeps track of where each row
came from, so every problem is reported with the file, the column, the 1-based data row
number (the header is not a row, blank lines are skipped and not counted, as in pandas) and
the physical line number. Line numbers assume no quoted field spans several lines.
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .inputs import CHUNK_ROWS, TableInput

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): ([^\n]*)")
_FIELD_COUNT = re.compile(r"saw (\d+)")
_MAX_SHOWN = 40



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


@dataclass
class TableChunk:
    """One chunk of a CSV file being scored: the good rows, and the bad rows skipped in it."""

    X: np.ndarray
    row_numbers: np.ndarray
    ids: np.ndarray | None
    labels: np.ndarray | None
    bad_rows: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class _Bad:
    """One problem found at a row: a bad cell (with its column) or a malformed line."""

    row: int
    line: int
    column: str | None
    text: str
    more: str = ""

    def reason(self) -> str:
        reason = f"column {self.column!r}: {self.text}" if self.column is not None else self.text
        return f"{reason}; {self.more}" if self.more else reason

    def error(self, path: Path) -> DataError:
        where = f"column {self.column!r}, " if self.column is not None else ""
        return DataError(f"{path}: {where}row {self.row} (line {self.line}): {self.text}")


@dataclass
class _RawChunk:
    """Non-blank records of one chunk (columns by header position) with their row and line numbers."""

    frame: pd.DataFrame
    rows: np.ndarray
    lines: np.ndarray
    malformed: list[_Bad]


def _shown(text: str) -> str:
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...")


def _gzipped(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _open_text(path: Path):
    opener = gzip.open if _gzipped(path) else open
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def _read_header(path: Path) -> list[str]:
    """Column names from the first line; DataError for a missing, unreadable or empty file."""
    try:
        with _open_text(path) as fh:
            header = next(csv.reader(fh), None)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the header line: {exc}") from exc
    if not header or all(not name.strip() for name in header):
        raise DataError(f"{path}: the file is empty (expected a header line with column names)")
    return header


def _first_record_width(path: Path) -> int:
    """Number of fields on the first non-blank data line (0 if there is none)."""
    try:
        with _open_text(path) as fh:
            records = csv.reader(fh)
            next(records, None)
            return next((len(r) for r in records if r), 0)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return 0  # pandas reports the problem with its position


def _positions(path: Path, header: list[str], names: list[str], what: str) -> list[int]:
    """Header position of each name; DataError for names absent or present more than once."""
    missing = [n for n in names if n not in header]
    if missing:
        raise DataError(f"{path}: no {what} {', '.join(map(repr, missing))}; the file has {_listing(header)}")
    repeated = [n for n in names if header.count(n) > 1]
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} appears more than once in the header")
    return [header.index(n) for n in names]


def _listing(header: list[str]) -> str:
    shown = ", ".join(map(repr, header[:30]))
    more = f" and {len(header) - 30} more" if len(header) > 30 else ""
    return f"columns {shown}{more}"


def _malformed_lines(caught: list[warnings.WarningMessage], n_fields: int) -> list[tuple[int, str]]:
    found = []
    for w in caught:
        for line, text in _SKIPPED_LINE.findall(str(w.message)):
            saw = _FIELD_COUNT.search(text)
            found.append((int(line), f"expected {n_fields} fields, saw {saw.group(1)}" if saw else text))
    return found


def _raw_chunks(path: Path, header: list[str], text_columns: list[int], chunksize: int) -> Iterator[_RawChunk]:
    """Stream the file in chunks, dropping blank lines and numbering rows and lines.

    Lines with more fields than the header are `malformed` (trailing empty fields are
    tolerated). pandas drops lines longer than it expects and names them in warnings; those get
    row numbers in sequence too. pandas takes its expected width from the first data line when
    that is longer than the header, so the reader is made that wide and the surplus fields
    are checked here.
    """
    n_columns = len(header)
    width = max(n_columns, _first_record_width(path))
    reader = pd.read_csv(
        path,
        header=None,
        names=list(range(width)),
        skiprows=1,
        index_col=False,
        dtype={i: str for i in [*text_columns, *range(n_columns, width)]},
        na_filter=False,
        skip_blank_lines=False,
        on_bad_lines="warn",
        chunksize=chunksize,
        encoding="utf-8-sig",
        compression="gzip" if _gzipped(path) else None,
        engine="c",
    )
    next_line, next_row = 2, 1
    pending: list[tuple[int, str]] = []
    with reader:
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                warnings.simplefilter("ignore", pd.errors.DtypeWarning)
                try:
                    frame = next(reader)
                except StopIteration:
                    frame = None
                except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
                    raise DataError(f"{path}: cannot parse the file near line {next_line}: {exc}") from exc
            if any("does not match length of data" in str(w.message) for w in caught):
                # Only if csv and pandas disagree on the first line's width: never drop fields silently.
                raise DataError(f"{path}: the first data line has more fields than the header ({n_columns})")
            pending = sorted(pending + _malformed_lines(caught, n_columns))
            if frame is None:
                break
            m = len(frame)
            # Records sit on consecutive lines except where pandas dropped a malformed line.
            bad_lines = np.array([line for line, _ in pending], dtype=np.int64)
            candidates = np.arange(next_line, next_line + m + len(pending), dtype=np.int64)
            lines = candidates[~np.isin(candidates, bad_lines)][:m]
            last = lines[-1] if m else next_line - 1
            dropped = [p for p in pending if p[0] < last]
            pending = [p for p in pending if p[0] >= last]
            blank = _blank_rows(frame)
            all_lines = np.concatenate([lines, np.array([line for line, _ in dropped], dtype=np.int64)])
            counts = np.concatenate([~blank, np.ones(len(dropped), dtype=bool)])
            order = np.argsort(all_lines, kind="stable")
            numbered = np.empty(len(all_lines), dtype=np.int64)
            numbered[order] = next_row - 1 + np.cumsum(counts[order])
            next_row += int(counts.sum())
            next_line = int(all_lines.max()) + 1 if len(all_lines) else next_line
            malformed = [_Bad(int(r), line, None, text) for r, (line, text) in zip(numbered[m:], dropped)]
            keep = ~blank
            if width > n_columns:
                surplus = (frame.iloc[:, n_columns:] != "").to_numpy(dtype=bool)
                long = surplus.any(axis=1) & keep
                for i in np.flatnonzero(long):
                    saw = n_columns + 1 + int(np.flatnonzero(surplus[i])[-1])
                    malformed.append(_Bad(int(numbered[i]), int(lines[i]), None, f"expected {n_columns} fields, saw {saw}"))
                keep &= ~long
                frame = frame.iloc[:, :n_columns]
            if keep.any() or malformed:
                yield _RawChunk(frame[keep], numbered[:m][keep], lines[keep], sorted(malformed, key=lambda b: b.row))
    if pending:
        rows = np.arange(next_row, next_row + len(pending), dtype=np.int64)
        malformed = [_Bad(int(r), line, None, text) for r, (line, text) in zip(rows, pending)]
        yield _RawChunk(pd.DataFrame(columns=range(n_columns)), np.empty(0, np.int64), np.empty(0, np.int64), malformed)


def _blank_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose every field is empty: blank lines (numeric columns are never empty)."""
    blank = np.ones(len(frame), dtype=bool)
    for _, col in frame.items():
        if col.dtype.kind in "iufb":
            return np.zeros(len(frame), dtype=bool)
        blank &= (col == "").to_numpy(dtype=bool)
    return blank


def _numbers(col: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """The column as float64 (NaN where not a number) and its raw text (None when already numeric)."""
    if col.dtype.kind in "iuf":
        return col.to_numpy(dtype=np.float64), None
    text = col.astype(str)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, text.to_numpy(dtype=object)


def _why(value: float, raw: str | None) -> str:
    """Why a cell is not usable as a feature value (`raw` is its text, None if parsed by pandas)."""
    raw = str(value) if raw is None else raw
    if not raw.strip():
        return "empty value"
    if np.isfinite(value):
        return f"{_shown(raw)} is too large (beyond float32)"
    if np.isnan(value) and raw.strip().lower().lstrip("+-") != "nan":
        return f"{_shown(raw)} is not a number"
    return f"{_shown(raw)} is not a finite number"


def _usable(values: np.ndarray) -> np.ndarray:
    """Finite and within float32 range, as the model computes in float32."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (np.abs(values) <= _FLOAT32_MAX)


def read_training_table(
    path: str | Path,
    *,
    columns: list[str] | None = None,
    exclude: list[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
) -> TrainingTable:
    """Read a whole CSV file for training.

    Features are `columns` when given, else every numeric column other than the id, label
    and excluded ones. A column counts as numeric when at least half its non-empty cells are
    finite numbers, so a numeric column with a typo is reported rather than silently dropped.
    Any cell of a feature column that is not a finite number is a DataError naming it.
    """
    path = Path(path)
    header = _read_header(path)
    special = [c for c in (id_column, label_column) if c is not None]
    _positions(path, header, special, "column")
    if exclude:
        _positions(path, header, list(exclude), "column to exclude")
    if columns is not None:
        if not columns:
            raise DataError(f"{path}: the list of feature columns is empty")
        clash = [c for c in columns if c in special]
        if clash:
            raise DataError(f"{path}: column {clash[0]!r} cannot be both a feature and the id or label column")
        candidates = list(dict.fromkeys(columns))
        positions = _positions(path, header, candidates, "column")
    else:
        skip = set(special) | set(exclude or [])
        # Unnamed columns (such as a pandas index written by to_csv) are never picked by default.
        candidates = [c for c in dict.fromkeys(header) if c not in skip and c.strip()]
        if not candidates:
            raise DataError(f"{path}: no columns left to use as features; the file has {_listing(header)}")
        positions = _positions(path, header, candidates, "column")

    text_positions = [header.index(c) for c in special]
    values: list[list[np.ndarray]] = [[] for _ in candidates]
    integral = [True] * len(candidates)
    finite = np.zeros(len(candidates), dtype=np.int64)
    nonempty = np.zeros(len(candidates), dtype=np.int64)
    first_bad: list[_Bad | None] = [None] * len(candidates)
    ids, labels, n_rows = [], [], 0
    malformed: _Bad | None = None
    for chunk in _raw_chunks(path, header, text_positions, chunksize=CHUNK_ROWS):
        if chunk.malformed and malformed is None:
            malformed = chunk.malformed[0]
        n_rows += len(chunk.rows)
        for k, pos in enumerate(positions):
            vals, raw = _numbers(chunk.frame[pos])
            ok = _usable(vals)
            values[k].append(vals)
            integral[k] &= raw is None and chunk.frame[pos].dtype.kind in "iu"
            finite[k] += int(ok.sum())
            nonempty[k] += len(vals) if raw is None else int(chunk.frame[pos].astype(str).str.strip().ne("").sum())
            if first_bad[k] is None and not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                why = _why(vals[i], None if raw is None else raw[i])
                first_bad[k] = _Bad(int(chunk.rows[i]), int(chunk.lines[i]), candidates[k], why)
        if id_column is not None:
            ids.append(chunk.frame[header.index(id_column)].to_numpy(dtype=object))
        if label_column is not None:
            labels.append(chunk.frame[header.index(label_column)].to_numpy(dtype=object))
    if n_rows == 0:
        if malformed is not None:
            raise malformed.error(path)
        raise DataError(f"{path}: no data rows (only a header)")

    if columns is not None:
        chosen = list(range(len(candidates)))
    else:
        chosen = [k for k in range(len(candidates)) if finite[k] > 0 and 2 * finite[k] >= nonempty[k]]
        if not chosen:
            raise DataError(
                f"{path}: no numeric columns to use as features; the file has {_listing(header)}"
            )
    # A malformed line is reported together with bad cells, whichever comes first in the file.
    problems = [first_bad[k] for k in chosen if first_bad[k] is not None] + ([malformed] if malformed else [])
    if problems:
        first = min(problems, key=lambda b: (b.row, b.line))
        hint = "; fix the value or leave the column out with exclude" if columns is None and first.column else ""
        raise DataError(f"{first.error(path)}{hint}")
    X = np.column_stack([np.concatenate(values[k]) for k in chosen]).astype(np.float64, copy=False)
    schema = TableInput(
        tuple(candidates[k] for k in chosen),
        tuple("int64" if integral[k] else "float64" for k in chosen),
        id_column,
        label_column,
    )
    return TrainingTable(
        X,
        schema,
        np.concatenate(labels) if label_column is not None else None,
        np.concatenate(ids) if id_column is not None else None,
    )


def header_report(path: str | Path, schema: TableInput, *, label_column: str | None = None) -> dict:
    """How a file's header compares with a schema.

    `missing`: feature columns absent from the file; `extra`: columns the model does not use
    (other than the id and label columns); `reordered`: features present in another order;
    `missing_id`: the schema has an id column the file lacks (scoring goes on without ids).
    """
    return _compare_header(_read_header(Path(path)), schema, label_column)


def _compare_header(header: list[str], schema: TableInput, label_column: str | None) -> dict:
    used = set(schema.columns) | {c for c in (schema.id_column, label_column) if c is not None}
    present = [c for c in header if c in set(schema.columns)]
    return {
        "missing": [c for c in schema.columns if c not in header],
        "extra": [c for c in header if c not in used],
        "reordered": present != [c for c in schema.columns if c in header],
        "missing_id": schema.id_column is not None and schema.id_column not in header,
    }


def frame_features(frame: pd.DataFrame, keys: Sequence, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[list[tuple[str, str]]]]:
    """The feature matrix of `frame[keys]` as float32, which rows are unusable, and why.

    A cell is unusable when it is empty, not a number, not finite or beyond float32. Returns
    (X, bad, problems): X has a row for every frame row (bad rows hold garbage), and
    problems[k] lists (column name, reason) for the k-th bad row. Shared by the CSV reader
    and `vaeguard.bulk.score_frame`, so every engine reports a bad cell in the same words.
    """
    m = len(frame)
    X = np.empty((m, len(keys)), dtype=np.float32)
    bad = np.zeros(m, dtype=bool)
    cells = []
    for j, key in enumerate(keys):
        vals, raw = _numbers(frame[key])
        with np.errstate(over="ignore", invalid="ignore"):
            X[:, j] = vals
        col_bad = ~_usable(vals)
        if col_bad.any():
            bad |= col_bad
            cells.append((j, vals, raw, col_bad))
    problems = [
        [(names[j], _why(vals[i], None if raw is None else raw[i])) for j, vals, raw, col_bad in cells if col_bad[i]]
        for i in np.flatnonzero(bad)
    ]
    return X, bad, problems


def iter_table_chunks(
    path: str | Path,
    schema: TableInput,
    *,
    chunksize: int = CHUNK_ROWS,
    on_bad_row: str = "fail",
    label_column: str | None = None,
    notes: list[str] | None = None,
) -> Iterator[TableChunk]:
    """Stream a CSV file as float32 feature chunks in schema order, matching columns by name.

    `notes`, when given, receives what the header says beyond the schema: extra columns
    ignored, features in another order.

    Missing feature columns are always a DataError. A bad row (a cell that is not a finite
    number, or a line with the wrong number of fields) is a DataError with `on_bad_row="fail"`
    and is dropped and listed in the chunk's `bad_rows` with `"skip"`. Chunks whose rows are
    all bad are still yielded, so counts add up. Without the schema's id column in the file,
    `ids` is None.
    """
    if on_bad_row not in ("fail", "skip"):
        raise ValueError(f"on_bad_row must be 'fail' or 'skip', not {on_bad_row!r}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, not {chunksize}")
    path = Path(path)
    header = _read_header(path)
    report = _compare_header(header, schema, label_column)
    if notes is not None:
        if report["extra"]:
            notes.append(f"ignored {len(report['extra'])} extra column(s): {', '.join(map(str, report['extra']))}")
        if report["reordered"]:
            notes.append("columns are in another order than at training: matched by name")
    if report["missing"]:
        raise DataError(
            f"{path}: missing column{'s' if len(report['missing']) > 1 else ''} "
            f"{', '.join(map(repr, report['missing']))} that the model needs; the file has {_listing(header)}"
        )
    positions = _positions(path, header, list(schema.columns), "column")
    id_pos = None
    if schema.id_column is not None and not report["missing_id"]:
        id_pos = _positions(path, header, [schema.id_column], "id column")[0]
    label_pos = None if label_column is None else _positions(path, header, [label_column], "label column")[0]
    text_positions = [p for p in (id_pos, label_pos) if p is not None]

    for chunk in _raw_chunks(path, header, text_positions, chunksize):
        X, bad, cell_problems = frame_features(chunk.frame, positions, schema.columns)
        problems = list(chunk.malformed)
        for i, found in zip(np.flatnonzero(bad), cell_problems):
            more = "; ".join(f"column {c!r}: {why}" for c, why in found[1:])
            problems.append(_Bad(int(chunk.rows[i]), int(chunk.lines[i]), found[0][0], found[0][1], more))
        if problems and on_bad_row == "fail":
            raise min(problems, key=lambda b: (b.row, b.line)).error(path)
        good = ~bad
        yield TableChunk(
            X=X[good] if bad.any() else X,
            row_numbers=chunk.rows[good],
            ids=None if id_pos is None else chunk.frame[id_pos].to_numpy(dtype=object)[good],
            labels=None if label_pos is None else chunk.frame[label_pos].to_numpy(dtype=object)[good],
            bad_rows=sorted((b.row, b.reason()) for b in problems),
        )

