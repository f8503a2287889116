"""CSV reading: training tables, streamed chunks, and every kind of bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from vaeguard.errors import DataError
from vaeguard.inputs import TableInput
from vaeguard.tabular import (
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
    table = read_training_table(path, id_column="id", label_column="label")
    assert table.schema == TableInput(("x1", "x2"), ("int64", "float64"), "id", "label")
    np.testing.assert_array_equal(table.X, [[1, 0.5], [2, 1.5], [3, 2.5]])
    assert table.X.dtype == np.float64
    assert table.ids.tolist() == ["7", "8", "9"] and table.labels.tolist() == ["0", "1", "0"]


def test_training_explicit_and_excluded_columns(tmp_path):
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n")
    assert read_training_table(path, columns=["c", "a"]).schema.columns == ("c", "a")
    np.testing.assert_array_equal(read_training_table(path, columns=["c", "a"]).X, [[3, 1], [6, 4]])
    assert read_training_table(path, exclude=["b"]).schema.columns == ("a", "c")
    with pytest.raises(DataError, match=r"no column 'zz'; the file has columns 'a', 'b', 'c'"):
        read_training_table(path, columns=["a", "zz"])
    with pytest.raises(DataError, match="'zz'"):
        read_training_table(path, exclude=["zz"])


def test_training_pandas_index_column_is_not_a_feature(tmp_path):
    path = write(tmp_path, ",a,b\n0,1,2\n1,3,4\n")
    assert read_training_table(path).schema.columns == ("a", "b")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("abc", r"data.csv: column 'x2', row 2 \(line 3\): 'abc' is not a number"),
        ("", r"column 'x2', row 2 \(line 3\): empty value"),
        ("NaN", r"column 'x2', row 2 \(line 3\): 'NaN' is not a finite number"),
        ("-inf", r"column 'x2', row 2 \(line 3\): '-inf' is not a finite number"),
        ("1e300", r"column 'x2', row 2 \(line 3\): '1e\+300' is too large"),
    ],
)
def test_training_bad_cell_names_column_and_row(tmp_path, row, message):
    path = write(tmp_path, f"x1,x2\n1,2\n3,{row}\n5,6\n")
    with pytest.raises(DataError, match=message):
        read_training_table(path)
    with pytest.raises(DataError, match=message):
        read_training_table(path, columns=["x1", "x2"])


def test_training_selected_text_column_names_first_bad_row(tmp_path):
    path = write(tmp_path, "x1,name\n1,2\n2,bob\n")
    with pytest.raises(DataError, match=r"column 'name', row 2 \(line 3\): 'bob' is not a number"):
        read_training_table(path, columns=["x1", "name"])


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
    table = read_training_table(path, id_column="id")
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
    ",4\n"  # row 4: empty
    "NaN,5\n"  # row 5: NaN text
    "6,6,6\n"  # row 6: too many fields
    "7,inf\n"  # row 7: infinite
    "8,8\n"  # row 8
    "9,9\n"  # row 9
    "10,10,10\n"  # row 10, after the last good row: too many fields
)


def test_skip_policy_numbers_rows_across_chunk_boundaries(tmp_path):
    path = write(tmp_path, BAD)
    got = chunks(path, on_bad_row="skip", chunksize=3)
    rows = [r for c in got for r in c.row_numbers.tolist()]
    bad = [b for c in got for b in c.bad_rows]
    assert rows == [1, 3, 8, 9]
    np.testing.assert_array_equal(np.concatenate([c.X for c in got]), [[1, 1], [3, 2], [8, 8], [9, 9]])
    assert [r for r, _ in bad] == [2, 4, 5, 6, 7, 10]
    reasons = dict(bad)
    assert reasons[2] == "column 'x2': 'abc' is not a number"
    assert reasons[4] == "column 'x1': empty value"
    assert reasons[5] == "column 'x1': 'NaN' is not a finite number"
    assert reasons[6] == "expected 2 fields, saw 3"
    assert reasons[7] == "column 'x2': 'inf' is not a finite number"
    assert len(rows) + len(bad) == 10
    # Whatever the chunk size, the same rows come out.
    whole = chunks(path, on_bad_row="skip")
    assert [r for c in whole for r in c.row_numbers.tolist()] == rows
    assert [b for c in whole for b in c.bad_rows] == bad


def test_chunk_with_only_bad_rows_is_still_yielded(tmp_path):
    path = write(tmp_path, "x1,x2\n1,1\n2,2\n3,3\na,b\nc,d\ne,f\n7,7\n")
    got = chunks(path, on_bad_row="skip", chunksize=3)
    assert [len(c.X) for c in got] == [3, 0, 1]
    assert got[1].X.shape == (0, 2) and [r for r, _ in got[1].bad_rows] == [4, 5, 6]
    assert "column 'x1': 'a' is not a number; column 'x2': 'b' is not a number" == got[1].bad_rows[0][1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,1\n2,2\n3,3\n4,abc\n", r"data.csv: column 'x2', row 4 \(line 5\): 'abc' is not a number"),
        ("1,1\n2,2\n3,3\n\n4,\n", r"column 'x2', row 4 \(line 6\): empty value"),
        ("1,1\n2,2\n3,3\n4,5\n5,5,5\n", r"data.csv: row 5 \(line 6\): expected 2 fields, saw 3"),
        ("1,1\n2,2\n3,3\n4,5\n5,5\n6,6,6\n", r"row 6 \(line 7\): expected 2 fields, saw 3"),
        ("1,1\nnan,2\n", r"column 'x1', row 2 \(line 3\): 'nan' is not a finite number"),
    ],
)
def test_fail_policy_names_file_column_row_and_line(tmp_path, body, message):
    path = write(tmp_path, "x1,x2\n" + body)
    with pytest.raises(DataError, match=message):
        chunks(path, chunksize=3)


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
