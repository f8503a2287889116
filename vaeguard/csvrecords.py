"""CSV bytes to records that know where they came from: the reader under `vaeguard.tabular`.

The reader cuts the bytes into records itself (vectorised with NumPy; quoted fields may span
lines, and a record is named by the line it starts on), counts their fields, and hands only
well-formed records to pandas' C parser, so every parsed row maps to a known 1-based data row
(the header is not a row; blank lines are skipped and not counted, as in pandas) and physical
line without reading any pandas message. A record with fewer fields than the header, or with
more unless the extra ones are empty (trailing commas), is a malformed row.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

_MAX_SHOWN = 40


@dataclass
class BadRow:
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
class RawChunk:
    """Non-blank records of one chunk (columns by header position) with their row and line numbers."""

    frame: pd.DataFrame
    rows: np.ndarray
    lines: np.ndarray
    malformed: list[BadRow]


def out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or pandas' C tokenizer saying it could not allocate (a ParserError)."""
    return isinstance(exc, MemoryError) or (isinstance(exc, pd.errors.ParserError) and "C error: out of memory" in str(exc))


def shown(text: str) -> str:
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...")


def _gzipped(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _open_text(path: Path):
    # Bytes that are not UTF-8 decode to surrogates here: only the header's are an error now,
    # the data's are reported with their line by the reader.
    opener = gzip.open if _gzipped(path) else open
    return opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")


def read_header(path: Path) -> list[str]:
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
    quotes = quotes[quotes < cut]
    if int((stops - starts).max()) < 1 << 16:
        # Summing booleans in 16 bits is several times faster than in 64, and exact for short records.
        commas = within == 44
        fields = np.add.reduceat(commas, starts, dtype=np.uint16).astype(np.int64) + 1
        inside = np.add.reduceat(commas, quotes, dtype=np.uint16)[0::2] if len(quotes) else quotes  # from each opening quote
    else:
        # Long records: commas in [i, j) by binary search among comma positions (np.add.reduceat
        # in 64 bits took seconds on 20,000-column records).
        comma_at = np.flatnonzero(within == 44)
        fields = np.searchsorted(comma_at, stops) - np.searchsorted(comma_at, starts) + 1
        closing = np.append(quotes[1::2], cut)[: len(quotes[0::2])]
        inside = np.searchsorted(comma_at, closing) - np.searchsorted(comma_at, quotes[0::2])
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


def _not_utf8(block: bytes, rec: _Records) -> dict[int, str]:
    """Records of `block` (cut at `rec.cut`) that are not UTF-8 text, with the reason."""
    if block.isascii():
        return {}
    try:
        block.decode("utf-8")
        return {}
    except UnicodeDecodeError as exc:
        first = int(np.searchsorted(rec.stops, exc.start, side="right"))
    found = {}
    for i in range(first, len(rec.starts)):  # a newline never falls inside a UTF-8 sequence
        try:
            block[rec.starts[i] : rec.stops[i]].decode("utf-8")
        except UnicodeDecodeError as exc:
            found[i] = f"not UTF-8 text ({exc.reason})"
    return found


def _lone_cr(block: bytes, rec: _Records) -> dict[int, str]:
    """Records holding a `\\r` inside a line outside quotes, where pandas would end the record."""
    a = np.frombuffer(block, np.uint8)
    cr = np.flatnonzero(a == 13)
    lone = cr[(cr + 1 < len(a)) & (a[np.minimum(cr + 1, len(a) - 1)] != 10)]
    if len(lone):
        quotes = np.flatnonzero(a == 34)
        lone = lone[(np.searchsorted(quotes, lone) & 1) == 0]
    why = "a carriage return (\\r) inside the line; lines must end with \\n or \\r\\n"
    return dict.fromkeys(np.unique(np.searchsorted(rec.stops, lone, side="right")).tolist(), why)


def raw_chunks(path: Path, header: list[str], text_columns: list[int], chunk_size: int,
               columns: list[int] | None = None) -> Iterator[RawChunk]:
    """Stream the file in chunks of about `chunk_size` lines, dropping blank lines and numbering
    rows and lines; `columns` (header positions) are the ones parsed, by default all.

    The reader cuts the bytes into records itself, so it knows the line each record starts on
    and its number of fields; only well-formed records go to pandas' C parser, one frame row
    per record. A record with more fields than the header is `malformed` unless the extra
    fields are all empty (trailing commas); one with fewer fields is `malformed` too, and so
    is one that is not UTF-8 text or holds a lone `\\r`. Blank lines are not rows. Quoted
    fields may span lines: the record keeps its first line number.
    """
    n_columns = len(header)
    dtype = {i: str for i in text_columns}
    try:
        fh = gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open the file: {exc}") from exc
    blocks = _LineBlocks(fh)
    next_line, next_row, want, header_left = 1, 1, chunk_size + 1, True  # + the header line
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
                    want += chunk_size
                    continue
            want = chunk_size
            lines = next_line + rec.lines
            counted = ~rec.blank
            if header_left:  # the header is not a row
                counted[0] = header_left = False
            broken = _not_utf8(block[: rec.cut], rec)
            if terminator == 10 and block.find(b"\r", 0, rec.cut) >= 0:
                broken = _lone_cr(block[: rec.cut], rec) | broken
            numbered = next_row - 1 + np.cumsum(counted)
            next_row += int(counted.sum())
            next_line += int(np.searchsorted(ends, rec.cut))
            good = counted & (rec.fields == n_columns) & ~rec.unclosed
            good[list(broken)] = False
            malformed = []
            for i in np.flatnonzero(counted & ~good):
                if i in broken:
                    text = broken[i]
                elif rec.unclosed[i]:
                    text = "a quoted field is not closed before the end of the file"
                elif rec.fields[i] > n_columns and _surplus_empty(block[rec.starts[i] : rec.stops[i]], n_columns):
                    good[i] = True
                    continue
                else:
                    text = f"expected {n_columns} fields, saw {rec.fields[i]}"
                malformed.append(BadRow(int(numbered[i]), int(lines[i]), None, text))
            frame = _parse_records(path, block, rec, good, n_columns, columns, dtype, int(lines[0]))
            if len(frame) or malformed:
                yield RawChunk(frame, numbered[good], lines[good], malformed)


def _parse_records(path: Path, block: bytes, rec: _Records, good: np.ndarray, n_columns: int,
                   columns: list[int] | None, dtype: dict, first_line: int) -> pd.DataFrame:
    """The `good` records of a block as a frame with columns `columns` (header positions, by
    default 0..n_columns-1), one row per record."""
    n_good = int(good.sum())
    if not n_good:
        return pd.DataFrame({i: pd.Series(dtype=object) for i in (range(n_columns) if columns is None else sorted(columns))})
    if n_good == len(good) and rec.cut == len(block):
        text = block
    else:  # join the runs of consecutive good records
        edges = np.flatnonzero(np.diff(np.concatenate([[0], good.view(np.int8), [0]])))
        text = b"".join(block[rec.starts[s] : rec.stops[e - 1]] for s, e in zip(edges[0::2], edges[1::2]))
    width = int(rec.fields[good].max())
    try:
        frame = pd.read_csv(
            io.BytesIO(text),
            header=None,
            names=list(range(width)),
            usecols=columns if columns is not None else list(range(n_columns)) if width > n_columns else None,
            index_col=False,
            dtype=dtype,
            na_filter=False,
            skip_blank_lines=False,
            encoding="utf-8",
            engine="c",
            # One pass over the block (already bounded by the chunk size): one type per column, and
            # half the time on wide tables, where low_memory's pieces are joined column by column.
            low_memory=False,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        if out_of_memory(exc):
            raise MemoryError(str(exc)) from exc
        raise DataError(f"{path}: cannot parse the file near line {first_line}: {exc}") from exc
    if len(frame) != n_good:  # our records and pandas' disagree: never misnumber rows
        raise DataError(f"{path}: cannot parse the file near line {first_line}: found {len(frame)} records, expected {n_good}")
    return frame
