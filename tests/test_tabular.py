"""CSV reading: training tables, streamed chunks, and every kind of bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from vaeguard.errors import DataError
from vaeguard.inputs import TableInput
from vaeguard.tabular import (
    ColumnRoles,
    header_report,
    is_table_path,
    iter_table_chunks,
    read_training_table,
)

SCHEMA = TableInput(("x1", "x2"), ("float64", "float64"), "id")


def write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def chunks(path, schema=SCHEMA, **kwargs):
    return list(iter_table_chunks(path, schema, **kwargs))


def test_is_table_path():
    assert is_table_path("a.csv") and is_table_path("dir/A.CSV") and is_table_path("b.csv.gz") and is_table_path("B.Csv.GZ")
    assert not is_table_path("a.tsv") and not is_table_path("a.gz") and not is_table_path("images/")


def test_training_defaults_to_numeric_columns(tmp_path):
    path = write(tmp_path, "id,x1,name,x2,label\n7,1,a,0.5,0\n8,2,b,1.5,1\n9,3,c,2.5,0\n")
    table = read_training_table(path, ColumnRoles(id_column="id", label_column="label"))
    assert table.schema == TableInput(("x1", "x2"), ("int64", "float64"), "id", "label")
    np.testing.assert_array_equal(table.X, [[1, 0.5], [2, 1.5], [3, 2.5]])
    assert table.X.dtype == np.float64
    assert table.ids.tolist() == ["7", "8", "9"] and table.labels.tolist() == ["0", "1", "0"]


def test_training_explicit_and_excluded_columns(tmp_path):
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n")
    assert read_training_table(path, ColumnRoles(columns=["c", "a"])).schema.columns == ("c", "a")
    np.testing.assert_array_equal(read_training_table(path, ColumnRoles(columns=["c", "a"])).X, [[3, 1], [6, 4]])
    assert read_training_table(path, ColumnRoles(exclude=["b"])).schema.columns == ("a", "c")
    with pytest.raises(DataError, match=r"no column 'zz'; the file has columns 'a', 'b', 'c'"):
        read_training_table(path, ColumnRoles(columns=["a", "zz"]))
    with pytest.raises(DataError, match="'zz'"):
        read_training_table(path, ColumnRoles(exclude=["zz"]))


def test_training_pandas_index_column_is_not_a_feature(tmp_path):
    path = write(tmp_path, ",a,b\n0,1,2\n1,3,4\n")
    assert read_training_table(path).schema.columns == ("a", "b")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("abc", r"data.csv: column 'x2', row 2 \(line 3\): 'abc' is not a number"),
        ("true", r"column 'x2', row 2 \(line 3\): 'true' is not a number"),
        ("-inf", r"column 'x2', row 2 \(line 3\): '-inf' is not a finite number"),
        ("1e300", r"column 'x2', row 2 \(line 3\): '1e\+300' is too large"),
    ],
)
def test_training_bad_cell_names_column_and_row(tmp_path, row, message):
    path = write(tmp_path, f"x1,x2\n1,2\n3,{row}\n5,6\n")
    with pytest.raises(DataError, match=message):
        read_training_table(path)
    with pytest.raises(DataError, match=message):
        read_training_table(path, ColumnRoles(columns=["x1", "x2"]))


def test_training_selected_text_column_names_first_bad_row(tmp_path):
    path = write(tmp_path, "x1,name\n1,2\n2,bob\n")
    with pytest.raises(DataError, match=r"column 'name', row 2 \(line 3\): 'bob' is not a number"):
        read_training_table(path, ColumnRoles(columns=["x1", "name"]))


def test_training_wrong_field_count(tmp_path):
    path = write(tmp_path, "x1,x2\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): expected 2 fields, saw 3"):
        read_training_table(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("x1,x2\n", "no data rows"), ("name\nbob\nalice\n", "no numeric columns")],
)
def test_training_unusable_files(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_training_table(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_training_table(tmp_path / "nope.csv")


def test_gzip_file(tmp_path):
    path = tmp_path / "data.CSV.GZ"
    with gzip.open(path, "wt") as fh:
        fh.write("id,x1,x2\na,1,2\nb,3,4\n")
    table = read_training_table(path, ColumnRoles(id_column="id"))
    np.testing.assert_array_equal(table.X, [[1, 2], [3, 4]])
    [chunk] = chunks(path)
    np.testing.assert_array_equal(chunk.X, [[1, 2], [3, 4]])


def test_chunks_match_columns_by_name_and_ignore_extras(tmp_path):
    path = write(tmp_path, "note,x2,x1,id,y\nhi,2,1,007,1\nyo,4,3,008,0\n")
    assert header_report(path, SCHEMA) == {"missing": [], "extra": ["note", "y"], "reordered": True, "missing_id": False}
    assert header_report(path, SCHEMA, label_column="y")["extra"] == ["note"]
    [chunk] = chunks(path, label_column="y")
    assert chunk.X.dtype == np.float32
    np.testing.assert_array_equal(chunk.X, [[1, 2], [3, 4]])
    assert chunk.ids.tolist() == ["007", "008"] and chunk.labels.tolist() == ["1", "0"]
    assert chunk.row_numbers.tolist() == [1, 2] and chunk.bad_rows == []


def test_chunks_in_schema_order_report_not_reordered(tmp_path):
    path = write(tmp_path, "x1,x2\n1,2\n")
    assert header_report(path, SCHEMA) == {"missing": [], "extra": [], "reordered": False, "missing_id": True}
    [chunk] = chunks(path)
    assert chunk.ids is None


def test_chunks_missing_columns_are_named(tmp_path):
    path = write(tmp_path, "id,x3\n1,2\n")
    assert header_report(path, SCHEMA)["missing"] == ["x1", "x2"]
    with pytest.raises(DataError, match=r"missing columns 'x1', 'x2'"):
        chunks(path, on_bad_row="skip")


def test_chunks_missing_label_column(tmp_path):
    with pytest.raises(DataError, match="no label column 'y'"):
        chunks(write(tmp_path, "x1,x2\n1,2\n"), label_column="y")


BAD = (
    "x1,x2\n"
    "1,1\n"  # row 1
    "2,abc\n"  # row 2: not a number
    "3,2\n"  # row 3
    "\n"  # blank line: not a row
    ",\n"  # row 4: no cell present
    "1e39,5\n"  # row 5: beyond float32
    "6,6,6\n"  # row 6: too many fields
    "7,inf\n"  # row 7: infinite
    "8,8\n"  # row 8
    "9,9\n"  # row 9
    "10,10,10\n"  # row 10, after the last good row: too many fields
)


def test_skip_policy_numbers_rows_across_chunk_boundaries(tmp_path):
    path = write(tmp_path, BAD)
    got = chunks(path, on_bad_row="skip", chunk_size=3)
    rows = [r for c in got for r in c.row_numbers.tolist()]
    bad = [b for c in got for b in c.bad_rows]
    assert rows == [1, 3, 8, 9]
    np.testing.assert_array_equal(np.concatenate([c.X for c in got]), [[1, 1], [3, 2], [8, 8], [9, 9]])
    assert [r for r, _ in bad] == [2, 4, 5, 6, 7, 10]
    reasons = dict(bad)
    assert reasons[2] == "column 'x2': 'abc' is not a number"
    assert reasons[4] == "every feature cell is missing: nothing to score"
    assert reasons[5] == "column 'x1': '1e39' is too large (beyond float32)"
    assert reasons[6] == "expected 2 fields, saw 3"
    assert reasons[7] == "column 'x2': 'inf' is not a finite number"
    assert len(rows) + len(bad) == 10
    # Whatever the chunk size, the same rows come out.
    whole = chunks(path, on_bad_row="skip")
    assert [r for c in whole for r in c.row_numbers.tolist()] == rows
    assert [b for c in whole for b in c.bad_rows] == bad


def test_chunk_with_only_bad_rows_is_still_yielded(tmp_path):
    path = write(tmp_path, "x1,x2\n1,1\n2,2\n3,3\na,b\nc,d\ne,f\n7,7\n")
    got = chunks(path, on_bad_row="skip", chunk_size=3)
    assert [len(c.X) for c in got] == [3, 0, 1]
    assert got[1].X.shape == (0, 2) and [r for r, _ in got[1].bad_rows] == [4, 5, 6]
    assert "column 'x1': 'a' is not a number; column 'x2': 'b' is not a number" == got[1].bad_rows[0][1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,1\n2,2\n3,3\n4,abc\n", r"data.csv: column 'x2', row 4 \(line 5\): 'abc' is not a number"),
        ("1,1\n2,2\n3,3\n\n,\n", r"row 4 \(line 6\): every feature cell is missing"),
        ("1,1\n2,2\n3,3\n4,5\n5,5,5\n", r"data.csv: row 5 \(line 6\): expected 2 fields, saw 3"),
        ("1,1\n2,2\n3,3\n4,5\n5,5\n6,6,6\n", r"row 6 \(line 7\): expected 2 fields, saw 3"),
        ("1,1\nNA,2\n3,x\n", r"column 'x2', row 3 \(line 4\): 'x' is not a number"),
    ],
)
def test_fail_policy_names_file_column_row_and_line(tmp_path, body, message):
    path = write(tmp_path, "x1,x2\n" + body)
    with pytest.raises(DataError, match=message):
        chunks(path, chunk_size=3)


def test_fail_policy_reports_first_bad_row_of_a_chunk(tmp_path):
    path = write(tmp_path, "x1,x2\n1,2,3\n1,x\n")
    with pytest.raises(DataError, match=r"row 1 \(line 2\): expected 2 fields"):
        chunks(path)


def test_long_first_line_is_malformed_and_trailing_commas_are_tolerated(tmp_path):
    # pandas takes its width from a first line longer than the header; the reader must not.
    path = write(tmp_path, "x1,x2\n1,2,3\n4,5\n6,7,\n8,9,10,11\n")
    got = chunks(path, on_bad_row="skip")
    assert [r for c in got for r in c.row_numbers.tolist()] == [2, 3]
    assert [b for c in got for b in c.bad_rows] == [(1, "expected 2 fields, saw 3"), (4, "expected 2 fields, saw 4")]
    with pytest.raises(DataError, match=r"row 1 \(line 2\): expected 2 fields, saw 3"):
        read_training_table(path)
    trailing = write(tmp_path, "x1,x2\n1,2,\n3,4,\n", name="trailing.csv")
    np.testing.assert_array_equal(read_training_table(trailing).X, [[1, 2], [3, 4]])


def test_header_only_and_empty_files(tmp_path):
    assert chunks(write(tmp_path, "x1,x2\n")) == []
    with pytest.raises(DataError, match="empty"):
        chunks(write(tmp_path, "", name="empty.csv"))


def test_bad_policy_argument(tmp_path):
    with pytest.raises(ValueError, match="on_bad_row"):
        chunks(write(tmp_path, "x1,x2\n1,2\n"), on_bad_row="ignore")


# The reader cuts records itself (no pandas warning text): these pin what it must agree on.


def flat(path, schema=SCHEMA, **kwargs):
    """Good rows, their ids and features, and the bad rows, over all chunks (skip policy)."""
    got = chunks(path, schema, on_bad_row="skip", **kwargs)
    ids = [i for c in got for i in (c.ids.tolist() if c.ids is not None else [])]
    X = np.concatenate([c.X for c in got]) if got else np.empty((0, len(schema.columns)))
    return [r for c in got for r in c.row_numbers.tolist()], ids, X.tolist(), [b for c in got for b in c.bad_rows]


QUOTED = (
    "id,x1,x2\n"
    '"a\nb",1,2\n'  # row 1, lines 2-3: a quoted newline
    '"c,d",3,4\n'  # row 2, line 4: a quoted comma
    "\n"  # line 5: blank
    '"e ""q""\n\nf",5,6\n'  # row 3, lines 6-8: doubled quotes, a blank line inside quotes
    "g,7\n"  # row 4, line 9: too few fields
    "h,8,x\n"  # row 5, line 10: not a number
)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 7, 20_000])
def test_quoted_fields_spanning_lines_keep_rows_and_lines(tmp_path, chunk_size):
    path = write(tmp_path, QUOTED)
    rows, ids, X, bad = flat(path, chunk_size=chunk_size)
    assert rows == [1, 2, 3] and ids == ["a\nb", "c,d", 'e "q"\n\nf'] and X == [[1, 2], [3, 4], [5, 6]]
    assert bad == [(4, "expected 3 fields, saw 2"), (5, "column 'x2': 'x' is not a number")]
    with pytest.raises(DataError, match=r"data.csv: row 4 \(line 9\): expected 3 fields, saw 2"):
        chunks(path, chunk_size=chunk_size)
    with pytest.raises(DataError, match=r"row 4 \(line 9\): expected 3 fields, saw 2"):
        read_training_table(path, ColumnRoles(id_column="id"))


def test_literal_quotes_inside_unquoted_fields(tmp_path):
    # A quote that neither opens nor closes a field is text to pandas and the csv module alike.
    path = write(tmp_path, 'id,x1,x2\n5",1,2\nab"c,3,4\n"q,r",5,6\n7,7\n8,8,8\n')
    for chunk_size in (1, 2, 100):
        rows, ids, X, bad = flat(path, chunk_size=chunk_size)
        assert rows == [1, 2, 3, 5] and ids == ['5"', 'ab"c', "q,r", "8"]
        assert bad == [(4, "expected 3 fields, saw 2")]
    with pytest.raises(DataError, match=r"row 4 \(line 5\): expected 3 fields, saw 2"):
        chunks(path)


def test_short_lines_are_malformed_and_trailing_empty_fields_tolerated_anywhere(tmp_path):
    path = write(tmp_path, 'x1,x2\n1,2\n3\n4,5,,\n6,7,8,\n9,10,""\n  \n')
    rows, _, X, bad = flat(path)
    assert rows == [1, 3, 5] and X == [[1, 2], [4, 5], [9, 10]]
    assert bad == [(2, "expected 2 fields, saw 1"), (4, "expected 2 fields, saw 4"), (6, "expected 2 fields, saw 1")]


def test_unclosed_quote_at_end_of_file(tmp_path):
    path = write(tmp_path, 'id,x1,x2\n1,1,2\n"open,3,4\n5,5,5\n')
    assert flat(path, chunk_size=1)[3] == [(2, "a quoted field is not closed before the end of the file")]
    with pytest.raises(DataError, match=r"row 2 \(line 3\): a quoted field is not closed"):
        chunks(path)


def test_header_spanning_lines_counts_its_lines(tmp_path):
    path = write(tmp_path, '"x\n1",x2\n1,2\n3,abc\n')
    with pytest.raises(DataError, match=r"column 'x2', row 2 \(line 4\): 'abc' is not a number"):
        read_training_table(path)


@pytest.mark.parametrize("chunk_size", [1, 2, 20_000])
def test_line_endings(tmp_path, chunk_size):
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"id,x1,x2\r\na,1,2\r\n\r\nb,3,x\r\nc,5,6")  # a blank line, no final newline
    assert flat(crlf, chunk_size=chunk_size) == ([1, 3], ["a", "c"], [[1, 2], [5, 6]], [(2, "column 'x2': 'x' is not a number")])
    mac = tmp_path / "mac.csv"
    mac.write_bytes(b"id,x1,x2\ra,1,2\r\rb,3,x\rc,5,6\r")
    assert flat(mac, chunk_size=chunk_size) == flat(crlf, chunk_size=chunk_size)
    with pytest.raises(DataError, match=r"row 2 \(line 4\)"):
        chunks(mac, chunk_size=chunk_size)
    lone = tmp_path / "lone.csv"
    lone.write_bytes(b'id,x1,x2\na,1,2\nb,3\r4,5\n"c\rd",6,7\n')
    with pytest.raises(DataError, match=r"lone.csv: row 2 \(line 3\): a carriage return"):
        chunks(lone, chunk_size=chunk_size)
    rows, ids, X, bad = flat(lone, chunk_size=chunk_size)  # with skip: that row is bad, the rest is read
    assert rows == [1, 3] and ids == ["a", "c\rd"] and X == [[1, 2], [6, 7]] and bad == [(2, "a carriage return (\\r) inside the line; lines must end with \\n or \\r\\n")]


def test_byte_order_mark_gzip_and_no_final_newline(tmp_path):
    path = tmp_path / "bom.csv.gz"
    with gzip.open(path, "wb") as fh:
        fh.write("\ufeffid,x1,x2\na,1,2\nb,3,x".encode())
    assert header_report(path, SCHEMA)["missing"] == []
    assert flat(path) == ([1], ["a"], [[1, 2]], [(2, "column 'x2': 'x' is not a number")])
    with pytest.raises(DataError, match=r"row 2 \(line 3\)"):
        read_training_table(path, ColumnRoles(id_column="id"))


def test_bytes_that_are_not_utf8_are_named_by_row_and_line(tmp_path):
    data = tmp_path / "data.csv"
    data.write_bytes(b"x1,x2\n1,2\n3,4\n5,\xff6\n7,8\n")
    with pytest.raises(DataError, match=r"data.csv: row 3 \(line 4\): not UTF-8 text"):
        chunks(data, chunk_size=2)
    got = chunks(data, chunk_size=2, on_bad_row="skip")
    assert [r for c in got for r in c.row_numbers.tolist()] == [1, 2, 4]
    assert [b for c in got for b in c.bad_rows] == [(3, "not UTF-8 text (invalid start byte)")]
    header = tmp_path / "header.csv"
    header.write_bytes(b"x1,x\xff2\n1,2\n")
    with pytest.raises(DataError, match=r"header.csv: line 1: the header is not UTF-8 text"):
        read_training_table(header)


def test_broken_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "data.csv.gz"
    rows = np.random.default_rng(0).integers(0, 10**6, size=(50_000, 2))
    payload = gzip.compress(b"x1,x2\n" + "".join(f"{a},{b}\n" for a, b in rows).encode())
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match=r"data.csv.gz: cannot read the file after line \d+: Compressed file ended"):
        chunks(path, on_bad_row="skip")


def _reference(text: str, n_fields: int) -> tuple[list[int], list[tuple[int, int, str]]]:
    """Rows and (row, line, reason) of malformed records, by the csv module's own line count."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    good, bad, row, line = [], [], 0, reader.line_num
    for record in reader:
        first, line = line + 1, reader.line_num
        if not record:
            continue
        row += 1
        if len(record) < n_fields or any(record[n_fields:]):
            bad.append((row, first, f"expected {n_fields} fields, saw {len(record)}"))
        else:
            good.append(row)
    return good, bad


@pytest.mark.parametrize("seed", range(4))
def test_rows_and_lines_agree_with_the_csv_module_on_random_files(tmp_path, seed):
    rng = np.random.default_rng(seed)
    newline = "\r\n" if seed % 2 else "\n"
    pieces = ["a", "b c", "d,e", 'f"g', "h\ni", "j\r\nk", "", "l\n\nm"]
    lines = ["id,x1,x2"]
    for i in range(200):
        kind = rng.integers(10)
        word = pieces[rng.integers(len(pieces))]
        quoted = '"' + word.replace('"', '""') + '"'
        if kind == 0:
            lines.append("")
        elif kind == 1:
            lines.append(f"{quoted},{i}")  # too few fields
        elif kind == 2:
            lines.append(f"{quoted},{i},{i},{i}")  # too many
        elif kind == 3:
            lines.append(f"{quoted},{i},{-i},,")  # trailing empty fields
        elif kind == 4 and seed >= 2:
            lines.append(f'{i}",{i},{-i}')  # a literal quote: the csv module's path for the block
        else:
            lines.append(f"{quoted},{i},{-i}")
    text = newline.join(lines) + (newline if seed < 2 else "")
    path = tmp_path / "random.csv"
    path.write_bytes(text.encode())
    good, bad = _reference(text, 3)
    assert len(good) > 100 and len(bad) > 20
    for chunk_size in (1, 3, 50, 20_000):
        rows, ids, X, bad_rows = flat(path, chunk_size=chunk_size)
        assert rows == good
        assert bad_rows == [(r, why) for r, _, why in bad]
        assert [x1 for x1, _ in X] == [-x2 for _, x2 in X]
    first_bad = bad[0]
    with pytest.raises(DataError, match=rf"row {first_bad[0]} \(line {first_bad[1]}\): {first_bad[2]}"):
        chunks(path, chunk_size=7)


def test_missing_cells_are_nan_and_text_is_still_a_bad_cell(tmp_path):
    """Empty, NA, null and NaN are missing cells (NaN in X, left out of the likelihood); text
    in a numeric column stays a bad cell; a row with no cell present is a bad row."""
    path = write(tmp_path, "x1,x2\n1,\nNA,2\nnull,NaN\n4,abc\n5,6\n")
    got = chunks(path, on_bad_row="skip")
    X = np.concatenate([c.X for c in got])
    np.testing.assert_array_equal(X, [[1, np.nan], [np.nan, 2], [5, 6]])
    assert [b for c in got for b in c.bad_rows] == [(3, "every feature cell is missing: nothing to score"), (4, "column 'x2': 'abc' is not a number")]
    table = read_training_table(write(tmp_path, "x1,x2\n1,\nNA,2\n3,4\n"))
    np.testing.assert_array_equal(table.X, [[1, np.nan], [np.nan, 2], [3, 4]])
