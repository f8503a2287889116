"""Read CSV files: a whole table for training, and chunks with bounded memory for scoring.

Both paths share one streaming reader that keeps track of where each row came from, so
every problem is reported with the file, the column, the 1-based data row number (the header
is not a row, blank lines are skipped and not counted, as in pandas) and the physical line
number. The reader cuts the bytes into records itself (vectorised with NumPy; quoted fields
may span lines, and a record is named by the line it starts on), counts their fields, and
hands only well-formed records to pandas' C parser, so every parsed row maps to a known row
and line without reading any pandas message. A record with fewer fields than the header, or
with more unless the extra ones are empty (trailing commas), is a malformed row.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .inputs import CHUNK_ROWS, TableInput

_FLOAT32_MAX = float(np.finfo(np.float32).max)
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

    @classmethod
    def of(cls, X: np.ndarray, bad: np.ndarray, rows: np.ndarray, ids: np.ndarray | None,
           labels: np.ndarray | None, bad_rows: list[tuple[int, str]]) -> "TableChunk":
        """The chunk of a table source: its good rows, and the ids of the `bad` ones."""
        good = ~bad
        return cls(
            X=X[good] if bad.any() else X,
            row_numbers=rows[good],
            ids=None if ids is None else ids[good],
            labels=None if labels is None else labels[good],
            bad_rows=bad_rows,
            bad_ids={int(r): i for r, i in zip(rows[bad], ids[bad])} if ids is not None and bad.any() else {},
        )


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
    # Bytes that are not UTF-8 decode to surrogates here: only the header's are an error now,
    # the data's are reported with their line by the reader.
    opener = gzip.open if _gzipped(path) else open
    return opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")


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
    try:
        "".join(header).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{path}: line 1: the header is not UTF-8 text") from None
    return header


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


class _LineBlocks:
    """A file's bytes handed out in blocks of whole lines, with the offset of every line end.

    The line terminator is `\\n` (which also ends `\\r\\n` lines), or `\\r` for a file whose
    first line ends in a lone `\\r` (old Mac style). A leading UTF-8 byte order mark is dropped.
    """

    def __init__(self, fh, read_size: int = 1 << 22):
        self._fh, self._read_size = fh, read_size
        self._buf, self._pos, self._ends, self._k = b"", 0, np.empty(0, np.int64), 0
        self.eof = False
        self.terminator = 0  # set by the first read

    def take(self, n_lines: int) -> tuple[bytes, np.ndarray, bool]:
        """The next `n_lines` lines (fewer at the end), the offsets of their terminators, and
        whether they run to the end of the file."""
        while len(self._ends) - self._k < n_lines and not self.eof:
            self._fill()
        k = min(self._k + n_lines, len(self._ends))
        if k == len(self._ends) and not self.eof:
            self._fill()  # is there anything after the last line?
            k = min(self._k + n_lines, len(self._ends))
        stop = int(self._ends[k - 1]) + 1 if k > self._k and k - self._k == n_lines else len(self._buf)
        block, ends = self._buf[self._pos:stop], self._ends[self._k:k] - self._pos
        self._pos, self._k = stop, k
        return block, ends, self.eof and stop == len(self._buf)

    def push_back(self, n_bytes: int) -> None:
        """Give back the last `n_bytes` of the block just taken; the next block starts with them."""
        self._pos -= n_bytes
        self._k = int(np.searchsorted(self._ends, self._pos))

    def _fill(self) -> None:
        data = self._fh.read(self._read_size)
        if not data:
            self.eof = True
            return
        if not self.terminator:
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            cr, lf = data.find(b"\r"), data.find(b"\n")
            lone_cr = cr >= 0 and (lf < 0 or cr < lf) and data[cr + 1 : cr + 2] not in (b"\n", b"")
            self.terminator = 13 if lone_cr else 10
        rest = self._buf[self._pos:]
        new = np.flatnonzero(np.frombuffer(data, np.uint8) == self.terminator) + len(rest)
        self._ends = np.concatenate([self._ends[self._k:] - self._pos, new])
        self._buf, self._pos, self._k = rest + data, 0, 0


@dataclass
class _Records:
    """The records of one block: byte spans, first line (0-based in the block), field counts."""

    starts: np.ndarray
    stops: np.ndarray  # past the terminator
    lines: np.ndarray
    fields: np.ndarray
    blank: np.ndarray
    unclosed: np.ndarray  # a quoted field still open at the end of the file
    cut: int  # bytes from here on belong to a record that continues in the next block


def _clean_quotes(a: np.ndarray, quotes: np.ndarray, terminator: int) -> bool:
    """True when every quote opens a field, closes one, or is a doubled quote inside one.

    Then a newline or comma is inside a quoted field exactly when an odd number of quotes
    precede it in the block. Quotes elsewhere (`5"`, `a"b`) are literal text to pandas and the
    csv module, which the parity rule would misread.
    """
    if not len(quotes):
        return True
    opening, closing = quotes[0::2], quotes[1::2]
    before = a[np.maximum(opening - 1, 0)]
    if not ((opening == 0) | (before == 44) | (before == terminator) | (before == 10) | (before == 34)).all():
        return False
    after = a[np.minimum(closing + 1, len(a) - 1)]
    return bool(((closing + 1 == len(a)) | (after == 44) | (after == 10) | (after == 13) | (after == 34)).all())


def _split_records(block: bytes, ends: np.ndarray, terminator: int, final: bool) -> _Records | None:
    """Cut a block into records and count their fields; None when the quoting needs the csv module."""
    a = np.frombuffer(block, np.uint8)
    quotes = np.flatnonzero(a == 34) if block.find(b'"') >= 0 else np.empty(0, np.int64)
    if not _clean_quotes(a, quotes, terminator):
        return None
    record_ends = ends[(np.searchsorted(quotes, ends) & 1) == 0] if len(quotes) else ends  # outside quotes
    stops = record_ends + 1
    cut = int(stops[-1]) if len(stops) else 0
    unclosed = np.zeros(len(stops), dtype=bool)
    if cut < len(block) and final:
        stops = np.append(stops, len(block))
        unclosed = np.append(unclosed, len(quotes) % 2 == 1)
        cut = len(block)
    if not len(stops):
        empty = np.empty(0, np.int64)
        return _Records(empty, empty, empty, empty, np.empty(0, bool), np.empty(0, bool), cut)
    starts = np.concatenate([[0], stops[:-1]]).astype(np.int64)
    within = a[:cut]
    commas = within == 44
    # Summing booleans in 16 bits is several times faster than in 64, and exact for short records.
    count_type = np.uint16 if int((stops - starts).max()) < 1 << 16 else np.int64
    fields = np.add.reduceat(commas, starts, dtype=count_type).astype(np.int64) + 1
    quotes = quotes[quotes < cut]
    if len(quotes):
        inside = np.add.reduceat(commas, quotes, dtype=count_type)[0::2]  # from each opening quote
        if inside.any():
            owner = np.searchsorted(stops, quotes[0::2][inside > 0], side="right")
            fields -= np.bincount(owner, weights=inside[inside > 0], minlength=len(starts)).astype(np.int64)
    content_end = stops - (within[stops - 1] == terminator)
    if terminator == 10:
        content_end -= (content_end > starts) & (within[np.maximum(content_end - 1, 0)] == 13)
    # Line of each record's start; when no record spans lines, record i starts line i.
    lines = np.arange(len(starts)) if len(record_ends) == len(ends) else np.searchsorted(ends, starts)
    return _Records(starts, stops, lines, fields, content_end == starts, unclosed, cut)


def _split_records_csv(path: Path, block: bytes, ends: np.ndarray, final: bool, first_line: int) -> _Records:
    """`_split_records` by the csv module, line by line: for quotes in unusual places."""
    bounds = np.concatenate([[0], ends + 1]).astype(np.int64)
    if bounds[-1] < len(block):
        bounds = np.append(bounds, len(block))
    n_lines = len(bounds) - 1
    ran_out = False

    def decoded():
        nonlocal ran_out  # csv asks for a line past the block only inside a quoted field
        for j in range(n_lines):
            yield block[bounds[j] : bounds[j + 1]].decode("utf-8", "replace")
        ran_out = True

    reader = csv.reader(decoded())
    starts, first_lines, fields, blank, unclosed = [], [], [], [], []
    line = 0
    while line < n_lines:
        try:
            record = next(reader)
        except csv.Error as exc:
            raise DataError(f"{path}: line {first_line + reader.line_num - 1}: {exc}") from exc
        if ran_out and not final:
            break
        starts.append(bounds[line])
        first_lines.append(line)
        fields.append(len(record))
        blank.append(not record)
        unclosed.append(ran_out)
        line = reader.line_num
    cut = int(bounds[line])
    starts_a = np.asarray(starts, dtype=np.int64)
    stops = np.append(starts_a[1:], cut).astype(np.int64) if len(starts) else starts_a
    return _Records(starts_a, stops, np.asarray(first_lines, dtype=np.int64), np.asarray(fields, dtype=np.int64),
                    np.asarray(blank, dtype=bool), np.asarray(unclosed, dtype=bool), cut)


def _surplus_empty(record: bytes, n_fields: int) -> bool:
    """Whether every field of `record` after the first `n_fields` is empty (trailing commas)."""
    if b'"' not in record:
        return record.rstrip(b"\r\n").rstrip(b",").count(b",") < n_fields
    fields = next(csv.reader(io.StringIO(record.decode("utf-8", "replace"), newline="")), [])
    return all(not f for f in fields[n_fields:])


def _bad_text_line(path: Path, block: bytes, ends: np.ndarray, first_line: int, exc: Exception) -> DataError:
    """DataError naming the first line of `block` that is not UTF-8 text."""
    bounds = [0, *(ends + 1).tolist(), len(block)]
    for j in range(len(bounds) - 1):
        try:
            block[bounds[j] : bounds[j + 1]].decode("utf-8")
        except UnicodeDecodeError as line_exc:
            return DataError(f"{path}: line {first_line + j}: not UTF-8 text ({line_exc.reason})")
    return DataError(f"{path}: cannot parse the file near line {first_line}: {exc}")


def _raw_chunks(path: Path, header: list[str], text_columns: list[int], chunksize: int) -> Iterator[_RawChunk]:
    """Stream the file in chunks of about `chunksize` lines, dropping blank lines and numbering
    rows and lines.

    The reader cuts the bytes into records itself, so it knows the line each record starts on
    and its number of fields; only well-formed records go to pandas' C parser, one frame row
    per record. A record with more fields than the header is `malformed` unless the extra
    fields are all empty (trailing commas); one with fewer fields is `malformed` too. Blank
    lines are not rows. Quoted fields may span lines: the record keeps its first line number.
    """
    n_columns = len(header)
    dtype = {i: str for i in text_columns}
    try:
        fh = gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open the file: {exc}") from exc
    blocks = _LineBlocks(fh)
    next_line, next_row, want, header_left = 1, 1, chunksize + 1, True  # + the header line
    with fh:
        while True:
            try:
                block, ends, final = blocks.take(want)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{path}: cannot read the file after line {next_line - 1}: {exc}") from exc
            if not block:
                break
            terminator = blocks.terminator
            rec = _split_records(block, ends, terminator, final)
            if rec is None:
                rec = _split_records_csv(path, block, ends, final, next_line)
            if rec.cut < len(block):
                blocks.push_back(len(block) - rec.cut)
                if not len(rec.starts):  # one record longer than the block: read more lines at once
                    want += chunksize
                    continue
            want = chunksize
            lines = next_line + rec.lines
            counted = ~rec.blank
            if header_left:  # the header is not a row
                counted[0] = header_left = False
            if terminator == 10 and block.find(b"\r", 0, rec.cut) >= 0:
                _reject_lone_cr(path, block[: rec.cut], rec, lines)
            numbered = next_row - 1 + np.cumsum(counted)
            next_row += int(counted.sum())
            next_line += int(np.searchsorted(ends, rec.cut))
            good = counted & (rec.fields == n_columns) & ~rec.unclosed
            malformed = []
            for i in np.flatnonzero(counted & ~good):
                if rec.unclosed[i]:
                    text = "a quoted field is not closed before the end of the file"
                elif rec.fields[i] > n_columns and _surplus_empty(block[rec.starts[i] : rec.stops[i]], n_columns):
                    good[i] = True
                    continue
                else:
                    text = f"expected {n_columns} fields, saw {rec.fields[i]}"
                malformed.append(_Bad(int(numbered[i]), int(lines[i]), None, text))
            frame = _parse_records(path, block, rec, good, n_columns, dtype, int(lines[0]), ends)
            if len(frame) or malformed:
                yield _RawChunk(frame, numbered[good], lines[good], malformed)


def _reject_lone_cr(path: Path, block: bytes, rec: _Records, lines: np.ndarray) -> None:
    """DataError for a `\\r` inside a line outside quotes: pandas would end the record there."""
    a = np.frombuffer(block, np.uint8)
    cr = np.flatnonzero(a == 13)
    lone = cr[(cr + 1 < len(a)) & (a[np.minimum(cr + 1, len(a) - 1)] != 10)]
    if not len(lone):
        return
    quotes = np.flatnonzero(a == 34)
    lone = lone[(np.searchsorted(quotes, lone) & 1) == 0]
    if len(lone):
        i = int(np.searchsorted(rec.stops, lone[0], side="right"))
        line = int(lines[i]) + block.count(b"\n", int(rec.starts[i]), int(lone[0]))
        raise DataError(f"{path}: line {line}: a carriage return (\\r) inside the line; lines must end with \\n or \\r\\n")


def _parse_records(path: Path, block: bytes, rec: _Records, good: np.ndarray, n_columns: int,
                   dtype: dict, first_line: int, ends: np.ndarray) -> pd.DataFrame:
    """The `good` records of a block as a frame with columns 0..n_columns-1, one row per record."""
    n_good = int(good.sum())
    if not n_good:
        return pd.DataFrame({i: pd.Series(dtype=object) for i in range(n_columns)})
    if n_good == len(good) and rec.cut == len(block):
        text = block
    else:  # join the runs of consecutive good records
        edges = np.flatnonzero(np.diff(np.concatenate([[0], good.view(np.int8), [0]])))
        text = b"".join(block[rec.starts[s] : rec.stops[e - 1]] for s, e in zip(edges[0::2], edges[1::2]))
    width = int(rec.fields[good].max())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            frame = pd.read_csv(
                io.BytesIO(text),
                header=None,
                names=list(range(width)),
                usecols=list(range(n_columns)) if width > n_columns else None,
                index_col=False,
                dtype=dtype,
                na_filter=False,
                skip_blank_lines=False,
                encoding="utf-8",
                engine="c",
            )
    except UnicodeDecodeError as exc:
        raise _bad_text_line(path, block, ends, first_line, exc) from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse the file near line {first_line}: {exc}") from exc
    if len(frame) != n_good:  # our records and pandas' disagree: never misnumber rows
        raise DataError(f"{path}: cannot parse the file near line {first_line}: found {len(frame)} records, expected {n_good}")
    return frame


def _numbers(col: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """The column as float64 (NaN where not a number) and its raw text (None when already numeric)."""
    if col.dtype.kind in "iuf":
        return col.to_numpy(dtype=np.float64), None
    text = col.astype(str)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, text.to_numpy(dtype=object)


def _why(value: float, raw: str | None) -> str:
    """Why a cell is not usable as a feature value (`raw` is its text, None if already numeric).

    In a numeric column (Parquet, a DataFrame) NaN is how a null arrives, so it is a missing value.
    """
    if raw is None and np.isnan(value):
        return "missing value (null or NaN)"
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
    booleans = np.zeros(len(candidates), dtype=np.int64)
    infinite = np.zeros(len(candidates), dtype=np.int64)
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
            infinite[k] += int(np.isinf(vals).sum())
            if raw is not None:
                booleans[k] += int(np.isin(np.char.lower(raw.astype(str)), ("true", "false")).sum())
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

    dropped: list[tuple[str, str]] = []
    if columns is not None:
        chosen = list(range(len(candidates)))
    else:
        chosen = [k for k in range(len(candidates)) if finite[k] > 0 and 2 * finite[k] >= nonempty[k]]
        for k in sorted(set(range(len(candidates))) - set(chosen)):
            if nonempty[k] == 0:
                why = "every cell is empty"
            elif 2 * booleans[k] >= nonempty[k]:
                why = "true/false values, not numbers"
            elif 2 * infinite[k] >= nonempty[k]:
                why = "infinite values"
            else:
                why = "mostly text, not numbers"
            dropped.append((candidates[k], why))
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
        dropped,
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
        yield TableChunk.of(
            X,
            bad,
            chunk.rows,
            None if id_pos is None else chunk.frame[id_pos].to_numpy(dtype=object),
            None if label_pos is None else chunk.frame[label_pos].to_numpy(dtype=object),
            sorted((b.row, b.reason()) for b in problems),
        )

