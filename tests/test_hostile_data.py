"""Hostile data for the readers (issue #24), generated with hypothesis.

One property per kind of defect: Parquet columns of pyarrow's null type, repeated column
names, entries of a folder input that are left out (FIFOs named like data, unreadable
subfolders), id columns named like a score column, wide headers, tables that do not fit in
memory, and lines that are not UTF-8 or hold a lone carriage return. Each asserts the
contract: a one-line DataError naming the file and the row, column or field; or the run goes
on and a warning or a bad-row entry names what was left out. `test_X` runs a few examples in
the default suite, `test_X_slow` many more
(`python -m pytest -m slow tests/test_hostile_data.py --hypothesis-show-statistics`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import os
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import strategies as st
from PIL import Image
from test_hostile import _cli_table_model, fast_and_slow, invoke, one_line_error, time_limit

from vaeguard import inputs, tabular
from vaeguard import parquet as parquet_module
from vaeguard.bulk import score_file
from vaeguard.errors import DataError
from vaeguard.images import list_images, read_image_folder
from vaeguard.inputs import CHUNK_BUDGET_BYTES, CHUNK_BYTES_PER_CELL, RESERVED_ID_NAMES, TableInput, chunk_rows, input_from_dict
from vaeguard.scorer import Scorer
from vaeguard.sources import iter_chunks, read_training_data
from vaeguard.streaming import TableStream
from vaeguard.tabular import ColumnRoles, _compare_header, _positions, iter_table_chunks, note_extra_columns

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from vaeguard.parquet import iter_parquet_chunks, parquet_files, read_training_parquet  # noqa: E402


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- 1. null columns

NULL_KINDS = ["float", "int", "null", "float_nulls", "text_nulls", "bool"]


def _column(kind: str, cells: list[int]):
    """A Parquet column of `kind`; `cells` (0..2 per row) say which rows hold a null or text."""
    if kind == "float":
        return pa.array([0.5 * i for i in range(len(cells))], pa.float64())
    if kind == "int":
        return pa.array(list(range(len(cells))), pa.int64())
    if kind == "null":
        return pa.nulls(len(cells))
    if kind == "float_nulls":
        return pa.array([None if c == 0 else 1.5 * i for i, c in enumerate(cells)], pa.float64())
    if kind == "text_nulls":
        return pa.array([[None, "abc", "2.5"][c] for c in cells], pa.string())
    return pa.array([c == 1 for c in cells], pa.bool_())


NO_CELL = "every feature cell is missing: nothing to score"


def _cell(kind: str, c: int, row: int) -> str | float | None:
    """What a cell holds: None when missing, a number, or the text that makes it a bad cell."""
    if kind == "null" or (kind in ("float_nulls", "text_nulls") and c == 0):
        return None
    if kind == "text_nulls":
        return "'abc' is not a number" if c == 1 else 2.5
    if kind == "bool":
        return f"{str(c == 1)!r} is not a number"
    return {"float": 0.5 * row, "int": float(row), "float_nulls": 1.5 * row}[kind]


def _is_text(kind: str, col: list[int]) -> bool:
    """Whether the column rule reads a column as categorical: mostly not numbers (tabular.not_numeric)."""
    if kind == "bool":
        return True
    if kind == "text_nulls":
        finite, nonempty = col.count(2), col.count(1) + col.count(2)
        return nonempty > 0 and not (finite > 0 and 2 * finite >= nonempty)
    return False


def _first_bad(kinds: list[str], cells: list[list[int]], names: list[str], training: bool = False) -> tuple[int | None, str | None, str] | None:
    """(row, column, reason) of the first bad cell, row by row then column by column; else, in
    training, the first column with no cell present (row None); else the first row with no cell
    present (column None); else None. In training a categorical column has no bad cell."""
    rows = range(len(cells[0]))
    text = [training and _is_text(kind, col) for kind, col in zip(kinds, cells)]
    for row in rows:
        for name, kind, col, categorical in zip(names, kinds, cells, text):
            held = _cell(kind, col[row], row)
            if isinstance(held, str) and not categorical:
                return row + 1, name, held
    for name, kind, col in zip(names, kinds, cells):
        if training and all(_cell(kind, col[row], row) is None for row in rows):
            return None, name, "every training cell is missing"
    for row in rows:
        if all(_cell(kind, col[row], row) is None for kind, col in zip(kinds, cells)):
            return row + 1, None, NO_CELL
    return None


def _said(bad: tuple[int | None, str | None, str]) -> str:
    return bad[2] if bad[1] is None else f"column {bad[1]!r}: {bad[2]}"


def _levels(kind: str, col: list[int]) -> list[str]:
    """A categorical column's values as text, cell by cell (nulls left out)."""
    if kind == "bool":
        return [str(c == 1).lower() for c in col]
    return [{1: "abc", 2: "2.5"}[c] for c in col if c != 0]


def _default_features(kinds: list[str], cells: list[list[int]]) -> tuple[list[int], dict[int, str]]:
    """The columns the default rule keeps, and why each other one is left out."""
    kept, out = [], {}
    for i, kind in enumerate(kinds):
        if kind == "null":
            out[i] = "every cell is null"
        elif _is_text(kind, cells[i]):
            values = _levels(kind, cells[i])
            distinct = sorted(set(values))
            if len(distinct) == len(values) >= 2:
                out[i] = "a different text value in every row (names or ids); name it with --columns to use its values as categories"
            elif len(distinct) == 1:
                out[i] = f"the same value ({distinct[0]!r}) in every row"
            else:
                kept.append(i)
        else:
            held = [_cell(kind, c, row) for row, c in enumerate(cells[i])]
            numbers = sorted({v for v in held if isinstance(v, float)})
            if not any(v is not None for v in held):
                out[i] = "every cell is empty"
            elif len(numbers) == 1 and not any(isinstance(v, str) for v in held):
                out[i] = f"the same value ({numbers[0]:g}) in every row"
            else:
                kept.append(i)
    return kept, out


@fast_and_slow(
    st.lists(st.sampled_from(NULL_KINDS), min_size=1, max_size=5),
    st.integers(1, 12),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def _parquet_null_columns(kinds, n_rows, rnd, pick_columns):
    """Nulls are missing cells, text and true/false in a column read as numbers are bad cells,
    a row with no cell present is a bad row: training, the default column rule and scoring
    agree on each, naming the same row and column."""
    names = [f"c{i}" for i in range(len(kinds))]
    cells = [[rnd.randrange(3) for _ in range(n_rows)] for _ in kinds]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "data.parquet")
        pq.write_table(pa.table([_column(k, c) for k, c in zip(kinds, cells)], names=names), path)
        if pick_columns:
            chosen, left_out = [i for i in range(len(kinds)) if rnd.random() < 0.6] or [0], {}
        else:
            chosen, left_out = _default_features(kinds, cells)
        try:
            table = read_training_parquet(path, ColumnRoles(columns=[names[i] for i in chosen] if pick_columns else None))
        except DataError as exc:
            message = one_line(exc)
            if not chosen:
                assert message.startswith(f"{path}: no numeric columns"), message
                return
            bad = _first_bad([kinds[i] for i in chosen], [cells[i] for i in chosen], [names[i] for i in chosen], training=True)
            assert bad is not None, message
            assert message == (f"{path}: row {bad[0]}: {_said(bad)}" if bad[0] is not None else f"{path}: {_said(bad)}")
        else:
            assert chosen and _first_bad([kinds[i] for i in chosen], [cells[i] for i in chosen], [names[i] for i in chosen], training=True) is None
            assert list(table.schema.columns) == [names[i] for i in chosen]
            assert sorted(table.dropped) == sorted((names[i], why) for i, why in left_out.items())
        if not chosen:
            return
        # Scoring through a model of these columns: the same cells are named, row by row.
        spec = TableInput(tuple(names[i] for i in chosen), ("float64",) * len(chosen))
        expected = {}
        for row in range(n_rows):
            one = _first_bad([kinds[i] for i in chosen], [[cells[i][row]] for i in chosen], [names[i] for i in chosen])
            if one is not None:
                expected[row + 1] = (row + 1, *one[1:])
        got = [b for chunk in iter_parquet_chunks(path, spec, chunk_size=rnd.randint(1, 5), on_bad_row="skip") for b in chunk.bad_rows]
        assert [r for r, _ in got] == sorted(expected)
        assert all(reason.startswith(_said(expected[r])) for r, reason in got)
        if expected:
            with pytest.raises(DataError) as err:
                list(iter_parquet_chunks(path, spec, on_bad_row="fail"))
            first = min(expected)
            assert one_line(err.value).startswith(f"{path}: row {first}: {_said(expected[first])}")


test_parquet_null_columns, test_parquet_null_columns_slow = _parquet_null_columns


def test_issue_null_column_through_the_cli(tmp_path):
    path = tmp_path / "null.parquet"
    pq.write_table(pa.table({"a": np.arange(40.0), "b": np.arange(40.0) % 7, "n": pa.nulls(40)}), path)
    result = invoke("-q", "train", path, "--columns", "a,n", "-o", tmp_path / "m.vgm", "--epochs", "1")
    assert one_line_error(result) == f"error: {path}: column 'n': every training cell is missing"
    result = invoke("-q", "train", path, "-o", tmp_path / "m.vgm", "--epochs", "1", "--hidden-dims", "4", "--latent-dim", "2")
    assert result.exit_code == 0, result.output
    assert "note: left out column 'n': every cell is null" in result.output


# ----------------------------------------------------------------------------- 2. repeated names


def _write_table(path: Path, names: list[str], n_rows: int) -> None:
    values = np.arange(n_rows * len(names), dtype=np.float64).reshape(n_rows, len(names)) / 7
    if path.suffix == ".parquet":
        pq.write_table(pa.table([pa.array(values[:, j]) for j in range(len(names))], names=names), path)
    else:
        lines = [",".join(names)] + [",".join(f"{v:.4f}" for v in row) for row in values]
        path.write_text("\n".join(lines) + "\n")


@fast_and_slow(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6),
    st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)),
    st.sampled_from([".csv", ".parquet"]),
    st.sampled_from(["memory", "stream", "score"]),
)
def _repeated_names(header, columns, suffix, route):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "data" + suffix)
        _write_table(path, header, 8)
        needed = columns if columns is not None else sorted(set(header))
        missing = [c for c in needed if c not in header]
        repeated = [c for c in needed if header.count(c) > 1]
        try:
            if route == "memory":
                read_training_data(path, columns=columns)
            elif route == "stream":
                list(TableStream(path, columns=columns).chunks())
            else:
                spec = TableInput(tuple(needed), ("float64",) * len(needed))
                list(iter_chunks(path, spec))
        except DataError as exc:
            message = one_line(exc)
            assert str(path) in message
            if missing:
                assert any(repr(c) in message for c in missing) and ("no column" in message or "missing column" in message), message
            else:
                assert any(f"column {c!r} appears" in message for c in repeated), message
            return
        assert not missing and not repeated, (header, columns)


test_repeated_names, test_repeated_names_slow = _repeated_names


def test_issue_repeated_parquet_names_through_the_cli(tmp_path):
    path = tmp_path / "dup.parquet"
    _write_table(path, ["a", "b", "a"], 60)
    result = invoke("-q", "train", path, "-o", tmp_path / "m.vgm", "--epochs", "1")
    assert one_line_error(result) == f"error: {path}: column 'a' appears 2 times; give each column its own name"
    model, _ = _cli_table_model()  # reads a, b, c
    _write_table(tmp_path / "score.parquet", ["a", "b", "c", "b"], 5)
    result = invoke("-q", "score", model, tmp_path / "score.parquet", "-o", tmp_path / "s.csv")
    assert one_line_error(result) == f"error: {tmp_path / 'score.parquet'}: column 'b' appears 2 times; give each column its own name"
    assert not (tmp_path / "s.csv").exists()


# ----------------------------------------------------------------------------- 3. left-out entries


def _deny(unreadable: set[Path]):
    """os.scandir raising PermissionError for the given folders, as for a chmod 000 folder
    (the tests run as root, which reads any folder)."""
    real = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)) in unreadable:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    return mock.patch.object(os, "scandir", scandir)


ENTRY = st.tuples(st.sampled_from(["", "sub", "sub/deep", "other", "_hidden"]), st.sampled_from(["file", "fifo"]))


@fast_and_slow(
    st.lists(ENTRY, min_size=1, max_size=8),
    st.sets(st.sampled_from(["sub", "sub/deep", "other"]), max_size=2),
    st.sampled_from(["parquet", "images"]),
)
def _left_out_entries(entries, denied, kind):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "in")
        for d in ("sub/deep", "other", "_hidden"):
            (folder / d).mkdir(parents=True, exist_ok=True)
        regular, fifos = [], []
        for i, (where, what) in enumerate(entries):
            path = folder / where / (f"p{i}.parquet" if kind == "parquet" else f"g{i}.png")
            if what == "fifo":
                os.mkfifo(path)
                fifos.append(path)
            elif kind == "parquet":
                _write_table(path, ["a"], 2)
                regular.append(path)
            else:
                Image.new("L", (3, 3), 9 * i).save(path)
                regular.append(path)
        unreadable = {folder / d for d in denied}

        def hidden(path: Path) -> bool:  # under an unreadable folder, or (Parquet) a "_" folder
            rel = path.relative_to(folder).parts[:-1]
            return any(folder.joinpath(*rel[: k + 1]) in unreadable for k in range(len(rel))) or (kind == "parquet" and "_hidden" in rel)

        reachable_denied = sorted(d for d in unreadable if not any(p in unreadable for p in d.parents))
        with time_limit(30), _deny(unreadable), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if kind == "parquet":
                    found = parquet_files(folder)
                else:
                    found = list_images(folder)
            except DataError as exc:
                message = one_line(exc)
                assert message.startswith(f"{folder}: "), message
                found = None
        shown = [str(w.message) for w in caught]
        assert all("\n" not in m for m in shown)
        if reachable_denied:
            denied_note = [m for m in shown if "subfolder(s) that cannot be read" in m]
            assert len(denied_note) == 1
            for d in reachable_denied:
                assert f"{d.relative_to(folder).as_posix()} (Permission denied)" in denied_note[0]
        else:
            assert not any("cannot be read" in m for m in shown)
        visible_fifos = [f for f in fifos if not hidden(f)]
        if kind == "parquet":
            fifo_note = [m for m in shown if "named like Parquet files" in m]
            assert len(fifo_note) == (1 if visible_fifos else 0)
            if visible_fifos:  # named in path order, the first five
                assert f"left out {len(visible_fifos)} entr" in fifo_note[0]
                named = ", ".join(f"{f} (a FIFO, not a regular file)" for f in sorted(visible_fifos)[:5])
                assert fifo_note[0].endswith(f"named like Parquet files: {named}{' ...' if len(visible_fifos) > 5 else ''}")
            expected = sorted(p for p in regular if not hidden(p))
        else:  # a FIFO named like an image is listed, then refused file by file when read
            expected = sorted((p for p in regular + fifos if not hidden(p)), key=lambda p: p.relative_to(folder).as_posix())
        if found is None:
            assert not expected
        else:
            assert found == expected


test_left_out_entries, test_left_out_entries_slow = _left_out_entries


def test_unreadable_subfolder_for_real_as_another_user():
    """chmod 000 for real: the check runs as user 'nobody', for whom permissions apply."""
    with tempfile.TemporaryDirectory() as tmp:  # in /tmp: pytest's own folder is private to root
        Path(tmp).chmod(0o755)
        _list_as_nobody(Path(tmp, "imgs"))


def _list_as_nobody(folder: Path) -> None:
    (folder / "locked").mkdir(parents=True)
    Image.new("L", (3, 3)).save(folder / "a.png")
    Image.new("L", (3, 3)).save(folder / "locked" / "b.png")
    (folder / "locked").chmod(0)
    script = textwrap.dedent(f"""
        import os, warnings
        from vaeguard.images import list_images  # imported as root: the interpreter may live where nobody reads
        os.setgid(65534); os.setuid(65534)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print([p.name for p in list_images({str(folder)!r})])
        print([str(w.message) for w in caught])
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip("cannot switch to another user here")
    assert result.returncode == 0, result.stderr
    names, messages = result.stdout.splitlines()
    assert names == "['a.png']"
    assert f"{folder}: left out 1 subfolder(s) that cannot be read: locked (Permission denied)" in messages


def test_issue_fifo_in_a_parquet_folder_through_the_cli(tmp_path):
    model, _ = _cli_table_model()
    folder = tmp_path / "pq"
    folder.mkdir()
    _write_table(folder / "b.parquet", ["a", "b", "c"], 5)
    os.mkfifo(folder / "a.parquet")
    with time_limit(60):
        result = invoke("-q", "score", model, folder, "-o", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    assert f"warning: {folder}: left out 1 entry named like Parquet files: {folder / 'a.parquet'} (a FIFO, not a regular file)" in result.output
    (folder / "b.parquet").unlink()
    with time_limit(60):
        result = invoke("-q", "score", model, folder, "-o", tmp_path / "s2.csv")
    assert result.exit_code == 1 and f"error: {folder}: the folder holds no Parquet file" in result.output
    os.mkfifo(tmp_path / "f.csv")
    with time_limit(60):
        assert one_line_error(invoke("-q", "score", model, tmp_path / "f.csv", "-o", tmp_path / "s3.csv")) == f"error: {tmp_path / 'f.csv'}: a FIFO, not a regular file"


def test_training_on_an_image_folder_warns_once_about_an_unreadable_subfolder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "locked").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (4, 4), 40 * i).save(folder / f"a{i}.png")
    with _deny({folder / "locked"}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = read_image_folder(folder)
    assert len(got.X) == 3
    assert [str(w.message) for w in caught] == [f"{folder}: left out 1 subfolder(s) that cannot be read: locked (Permission denied)"]
    with _deny({folder}), pytest.raises(DataError, match=r"imgs: cannot list the folder: Permission denied"):
        list_images(folder)


# ----------------------------------------------------------------------------- 4. reserved id names

ID_NAMES = st.one_of(st.sampled_from(RESERVED_ID_NAMES), st.sampled_from(["id", "rowid", "Score", "path", "key", "top_4"]))




@functools.lru_cache(maxsize=1)
def table_scorer() -> Scorer:
    return Scorer.load(_cli_table_model()[0])


def _ids_table(path: Path, id_name: str, n_rows: int = 6) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_rows, 3))
    ids = [f"r{i}" for i in range(n_rows)]
    if path.suffix == ".parquet":
        pq.write_table(pa.table({id_name: ids, "a": X[:, 0], "b": X[:, 1], "c": X[:, 2]}), path)
    else:
        lines = [f"{id_name},a,b,c"] + [f"{i},{x:.4f},{y:.4f},{z:.4f}" for i, (x, y, z) in zip(ids, X)]
        path.write_text("\n".join(lines) + "\n")


@fast_and_slow(ID_NAMES, st.sampled_from([".csv", ".parquet"]), st.sampled_from(["memory", "stream", "old model"]))
def _reserved_id_names(name, suffix, route):
    reserved = name in RESERVED_ID_NAMES
    listing = ", ".join(RESERVED_ID_NAMES)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "data" + suffix)
        _ids_table(path, name)
        out = Path(tmp, "scores.csv")
        try:
            if route == "memory":
                read_training_data(path, id_column=name)
            elif route == "stream":
                TableStream(path, id_column=name)
            else:  # a model file written before such models were refused
                old = dataclasses.replace(table_scorer(), input_spec=TableInput(("a", "b", "c"), ("float64",) * 3, name))
                score_file(old, path, out)
        except DataError as exc:
            assert reserved
            if route == "old model":
                assert one_line(exc) == (
                    f"{path}: the model's id column {name!r} has the name of a score output column ({listing}); "
                    "its scores cannot be written; train it again with the column renamed"
                )
                assert not out.exists()
            else:
                assert one_line(exc) == f"{path}: the id column {name!r} has the name of a score output column ({listing}); rename the column in the data"
            return
        assert not reserved
        if route == "old model":
            with open(out, newline="") as fh:
                header = next(csv.reader(fh))
            assert header[:3] == ["row", name, "score"]


test_reserved_id_names, test_reserved_id_names_slow = _reserved_id_names


def test_issue_id_column_named_score_through_the_cli(tmp_path):
    data = tmp_path / "data.csv"
    _ids_table(data, "score", 60)
    model = tmp_path / "m.vgm"
    args = ("-q", "train", data, "--id-column", "score", "-o", model, "--epochs", "1", "--hidden-dims", "4", "--latent-dim", "2")
    message = one_line_error(invoke(*args))
    assert message.startswith(f"error: {data}: the id column 'score' has the name of a score output column (row, score, p_value")
    assert not model.exists()
    with mock.patch.object(tabular, "check_id_column"):  # an old vaeguard wrote such files
        assert invoke(*args).exit_code == 0
    message = one_line_error(invoke("-q", "score", model, data, "-o", tmp_path / "s.csv"))
    assert message.startswith(f"error: {data}: the model's id column 'score' has the name of a score output column")
    assert not (tmp_path / "s.csv").exists()


# ----------------------------------------------------------------------------- 5. wide headers


def _reference_compare(header, schema, label_column):
    """The header comparison as first written (list scans): the answer must not change."""
    used = set(schema.columns) | {c for c in (schema.id_column, label_column) if c is not None}
    present = [c for c in header if c in set(schema.columns)]
    return {
        "missing": [c for c in schema.columns if c not in header],
        "extra": [c for c in header if c not in used],
        "reordered": present != [c for c in schema.columns if c in header],
        "missing_id": schema.id_column is not None and schema.id_column not in header,
    }


def _reference_positions(header, names):
    missing = [n for n in names if n not in header]
    if missing:
        return "missing", missing
    repeated = [n for n in names if header.count(n) > 1]
    if repeated:
        return "repeated", repeated[0]
    return "ok", [header.index(n) for n in names]


NAME = st.sampled_from(["a", "b", "c", "d", "e", "f", "", " "])


@fast_and_slow(
    st.lists(NAME, max_size=30),
    st.lists(NAME, min_size=1, max_size=6, unique=True),
    st.one_of(st.none(), NAME),
    st.one_of(st.none(), NAME),
    st.lists(st.text(max_size=12), max_size=60),
)
def _header_matching(header, columns, id_column, label_column, extra):
    schema = TableInput(tuple(columns), ("float64",) * len(columns), id_column)
    assert _compare_header(header, schema, label_column) == _reference_compare(header, schema, label_column)
    kind, value = _reference_positions(header, columns)
    try:
        got = _positions(Path("t.csv"), header, columns, "column")
    except DataError as exc:
        message = one_line(exc)
        if kind == "missing":
            assert message.startswith(f"t.csv: no column {', '.join(map(repr, value))}; the file has ")
        else:
            assert kind == "repeated" and message == f"t.csv: column {value!r} appears more than once in the header"
    else:
        assert (kind, got) == ("ok", value)
    notes: list[str] = []
    note_extra_columns(notes, extra)
    if not extra:
        assert notes == []
        return
    (note,) = notes
    named = extra[: tabular.NOTE_COLUMNS]
    more = f" and {len(extra) - len(named):,} more" if len(extra) > len(named) else ""
    assert note == f"ignored {len(extra):,} extra column(s): {', '.join(named)}{more}"


test_header_matching, test_header_matching_slow = _header_matching


def test_a_200000_column_header_is_matched_without_hanging():
    """A hang guard, not a timing: list scans made scoring 300 rows against a 100,000-column
    model take 12 minutes (the model's description alone took 135 s of CPU to check)."""
    header = [f"c{j}" for j in range(200_000)]
    schema = TableInput(tuple(reversed(header[1:])), ("float64",) * (len(header) - 1), "c0")
    notes: list[str] = []
    with time_limit(60):
        assert input_from_dict(schema.to_dict()) == schema
        report = _compare_header(header + ["x"] * 3, schema, None)
        assert _positions(Path("w.csv"), header, list(schema.columns), "column")[:2] == [199_999, 199_998]
        note_extra_columns(notes, report["extra"])
    assert report["missing"] == [] and report["reordered"] and report["extra"] == ["x"] * 3
    assert notes == ["ignored 3 extra column(s): x, x, x"]


# ----------------------------------------------------------------------------- 6. out of memory

MEMORY_ROUTES = ["csv train", "parquet train", "csv score", "parquet score", "csv stream"]


@fast_and_slow(st.sampled_from(MEMORY_ROUTES), st.integers(0, 6), st.integers(1, 4))
def _out_of_memory(route, failing_call, chunk_size):
    suffix = ".parquet" if route.startswith("parquet") else ".csv"
    calls = 0
    real = tabular.frame_values

    def frame_values(*args):
        nonlocal calls
        calls += 1
        if calls == failing_call + 1:
            raise MemoryError
        return real(*args)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "data" + suffix)
        _write_table(path, ["a", "b", "c"], 10)
        spec = TableInput(("a", "b", "c"), ("float64",) * 3)
        try:
            with mock.patch.object(tabular, "frame_values", frame_values), mock.patch.object(parquet_module, "frame_values", frame_values):
                if route.endswith("train"):
                    read_training_data(path)
                elif route.endswith("score"):
                    list(iter_chunks(path, spec, chunk_size=chunk_size))
                else:
                    stream = TableStream(path, chunk_size=chunk_size)
                    list(stream.chunks())
        except DataError as exc:
            message = one_line(exc)
            assert calls == failing_call + 1
            if route.endswith("train"):
                assert message.startswith(f"{path}: not enough memory to load the table (")
                assert message.endswith("for training; train with --out-of-core, which streams the file")
            else:
                assert message == f"{path}: not enough memory to read {chunk_size} rows of 3 columns at a time; pass a smaller --chunk-size"
            return
        assert calls <= failing_call


test_out_of_memory, test_out_of_memory_slow = _out_of_memory


@fast_and_slow(
    st.integers(1, 10**7),
    st.integers(1, 10**6),
    st.integers(1, 60),
    st.integers(1, 400),
    st.integers(1, 50),
)
def _chunks_fit_the_budget(n_columns, chunk_size, width, budget_cells, csv_chunk):
    rows = chunk_rows(chunk_size, n_columns)
    assert 1 <= rows <= chunk_size
    assert rows == chunk_size or rows == 1 or rows * n_columns * CHUNK_BYTES_PER_CELL <= CHUNK_BUDGET_BYTES
    assert rows == chunk_size or (rows + 1) * n_columns * CHUNK_BYTES_PER_CELL > CHUNK_BUDGET_BYTES
    # A wide CSV is read in chunks that fit the budget, whatever --chunk-size says.
    names = [f"c{j}" for j in range(width)]
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(inputs, "CHUNK_BUDGET_BYTES", budget_cells * CHUNK_BYTES_PER_CELL):
        path = Path(tmp, "wide.csv")
        _write_table(path, names, 12)
        sizes = [len(c.X) for c in iter_table_chunks(path, TableInput(tuple(names), ("float64",) * width), chunk_size=csv_chunk)]
    assert sum(sizes) == 12
    assert max(sizes) == min(12, csv_chunk, max(1, budget_cells // width))


test_chunks_fit_the_budget, test_chunks_fit_the_budget_slow = _chunks_fit_the_budget


def test_default_chunks_of_a_100000_column_table_fit_the_budget():
    rows = chunk_rows(tabular.CHUNK_ROWS, 100_000)
    assert 1 < rows < 1000 and rows * 100_000 * CHUNK_BYTES_PER_CELL <= CHUNK_BUDGET_BYTES
    assert chunk_rows(tabular.CHUNK_ROWS, 20) == tabular.CHUNK_ROWS  # ordinary tables are unchanged


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """2,000,000 rows of 8 integers: 32 MB of text, 128 MB as float64."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    path.write_bytes(b"a,b,c,d,e,f,g,h\n" + b"1,2,3,4,5,6,7,8\n" * 2_000_000)
    return path


@pytest.mark.parametrize("route", ["train", "score"])
def test_a_real_memory_error_under_an_address_space_limit(big_csv, route):
    """RLIMIT_AS set after the imports, 150 MB above what the process maps: the table cannot be
    loaded, nor read in one chunk; the error says what to do (pandas' tokenizer reports its own
    failed allocations as a parser error: that too)."""
    script = textwrap.dedent(f"""
        import resource
        from vaeguard.sources import iter_chunks, read_training_data
        from vaeguard.inputs import TableInput
        from vaeguard.errors import DataError
        mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 150 * 2**20, resource.RLIM_INFINITY))
        try:
            if {route!r} == "train":
                read_training_data({str(big_csv)!r})
            else:
                spec = TableInput(tuple("abcdefgh"), ("float64",) * 8)
                for chunk in iter_chunks({str(big_csv)!r}, spec, chunk_size=2_000_000):
                    pass
        except DataError as exc:
            print(exc)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    if route == "train":
        assert result.stdout.startswith(f"{big_csv}: not enough memory to load the table ("), result.stdout
        assert result.stdout.rstrip().endswith("for training; train with --out-of-core, which streams the file")
    else:
        assert result.stdout.rstrip() == f"{big_csv}: not enough memory to read 2,000,000 rows of 8 columns at a time; pass a smaller --chunk-size"


# ----------------------------------------------------------------------------- 7. bad lines

BREAKS = {"not utf-8": b"\xff", "bad sequence": b"\xc3(", "lone cr": b"\r"}


@fast_and_slow(
    st.lists(st.tuples(st.floats(-9, 9, allow_nan=False), st.floats(-9, 9, allow_nan=False)), min_size=1, max_size=20),
    st.dictionaries(st.integers(0, 19), st.tuples(st.sampled_from(sorted(BREAKS)), st.integers(0, 30)), max_size=5),
    st.booleans(),
    st.integers(1, 7),
    st.booleans(),
)
def _broken_lines(values, breaks, gz, chunk_size, crlf):
    breaks = {i: b for i, b in breaks.items() if i < len(values)}
    end = b"\r\n" if crlf else b"\n"
    lines = [b"id,x1,x2"]
    for i, (x, y) in enumerate(values):
        line = f"r{i},{x:.3f},{y:.3f}".encode()
        if i in breaks:
            kind, at = breaks[i]
            at %= len(line)  # inside the line, never just before its end (that is a \r\n ending)
            line = line[:at] + BREAKS[kind] + line[at:]
        lines.append(line)
    raw = end.join(lines) + end
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "data.csv.gz" if gz else "data.csv")
        path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
        spec = TableInput(("x1", "x2"), ("float64", "float64"), "id")
        chunks = list(iter_table_chunks(path, spec, chunk_size=chunk_size, on_bad_row="skip"))
        rows = [r for c in chunks for r in c.row_numbers.tolist()]
        bad = dict(b for c in chunks for b in c.bad_rows)
        assert sorted(rows + list(bad)) == list(range(1, len(values) + 1))  # every row accounted for
        assert sorted(bad) == sorted(i + 1 for i in breaks)
        for i, (kind, _) in breaks.items():
            expected = "a carriage return (\\r) inside the line" if kind == "lone cr" else "not UTF-8 text ("
            assert bad[i + 1].startswith(expected), bad[i + 1]
        X = np.concatenate([c.X for c in chunks]) if chunks else np.empty((0, 2))
        good = [v for i, v in enumerate(values) if i not in breaks]
        np.testing.assert_allclose(X, np.round(np.asarray(good, dtype=np.float64).reshape(-1, 2), 3), atol=1e-6)
        assert [i for c in chunks for i in c.ids.tolist()] == [f"r{r - 1}" for r in rows]
        if breaks:
            first = min(breaks) + 1
            with pytest.raises(DataError) as err:
                list(iter_table_chunks(path, spec, chunk_size=chunk_size, on_bad_row="fail"))
            assert one_line(err.value).startswith(f"{path}: row {first} (line {first + 1}): ")


test_broken_lines, test_broken_lines_slow = _broken_lines


def test_issue_bad_lines_through_the_cli(tmp_path):
    model, _ = _cli_table_model()
    rows = [f"n{i},{0.1 * i:.3f},{0.2 * i:.3f},{0.3 * i:.3f}".encode() for i in range(8)]
    rows[2] = b"n2,0.2\xff,0.4,0.6"
    rows[5] = b"n5,0.5,1\r.0,1.5"
    data = tmp_path / "data.csv"
    data.write_bytes(b"id,a,b,c\n" + b"\n".join(rows) + b"\n")
    out = tmp_path / "s.csv"
    result = invoke("-q", "score", model, data, "-o", out, "--on-bad-row", "skip")
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as fh:
        scored = list(csv.DictReader(fh))
    assert [r["row"] for r in scored] == [str(i) for i in range(1, 9)]
    assert scored[2]["error"] == "not UTF-8 text (invalid start byte)" and scored[2]["score"] == ""
    assert scored[5]["error"].startswith("a carriage return (\\r) inside the line") and scored[5]["score"] == ""
    assert all(r["score"] for i, r in enumerate(scored) if i not in (2, 5))
    message = one_line_error(invoke("-q", "score", model, data, "-o", tmp_path / "f.csv"))
    assert message == f"error: {data}: row 3 (line 4): not UTF-8 text (invalid start byte)"
