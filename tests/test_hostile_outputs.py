"""Outputs aimed into folder and glob inputs, and engine output folders (issue #24).

Generated with hypothesis like tests/test_hostile.py (whose helpers this module uses): every
writing command, given an output inside an input folder, matched by an input glob, or (for
the engines) a folder that is or holds an input or is not a previous output, ends with one
`error:` line and leaves every file as it was. `test_X` runs a few examples in the default
suite, `test_X_slow` many more under `-m slow`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st

from vaeguard import atomic
from vaeguard.atomic import DATASET_MARK, atomic_dir, check_output
from vaeguard.errors import DataError

from test_hostile import _WRITER_PRELUDE, fast_and_slow, invoke, one_line_error, snapshot, start_writer

REFUSALS = ("inside the input folder", "matches the input pattern", "is the input", "is not a folder")


def _layout(root: Path, kind: str) -> tuple[str, Path, list[str]]:
    """An input of `kind` under root: (the DATA argument, the folder holding its files, file names)."""
    folder = root / "in"
    (folder / "sub").mkdir(parents=True)
    if kind == "images":
        names = ["img001.png", "img002.png", "sub/g0.png"]
    else:
        names = ["p1.parquet", "p2.parquet", "sub/p3.parquet"]
    for name in names:
        (folder / name).write_bytes(f"input {name}".encode())
    data = str(folder / "*.parquet") if kind == "glob" else str(folder)
    return data, folder, names


@fast_and_slow(
    st.sampled_from(["images", "parquet", "glob"]),
    st.sampled_from(["score", "train", "calibrate", "calibrate-default", "evaluate"]),
    st.sampled_from(["replace", "new", "nested", "via_symlink"]),
    st.sampled_from([".csv", ".parquet", ".png", ".vgm", ""]),
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00*?["), min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
)
def _output_inside_an_input(kind, command, where, suffix, name):
    if command == "evaluate" and kind == "glob":
        kind = "parquet"  # a report is a folder of .html/.png/.json files: a *.parquet glob never reads them
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, folder, names = _layout(root, kind)
        model = root / "m.vgm"
        model.write_bytes(b"model bytes")
        if where == "replace":
            out = folder / names[0] if kind != "glob" else folder / "p1.parquet"
        elif where == "nested":
            out = folder / "sub" / "deeper" / f"{name}{suffix}"
        elif where == "via_symlink":
            (root / "link").symlink_to(folder)
            out = root / "link" / f"{name}{suffix}"
        else:
            out = folder / f"{name}{suffix}"
        if kind == "glob" and where != "replace":
            # a glob input refuses what it matches; other files beside it are fine
            out = out.with_name(f"{name}.parquet") if where != "nested" else folder / f"{name}.parquet"
        if command == "calibrate-default":  # the model lives in the input folder and is replaced by default
            model = folder / ("m.parquet" if kind == "glob" else "m.vgm")
            model.write_bytes(b"model bytes")
        before = snapshot(root)
        args = {
            "score": ["score", model, data, "-o", out],
            "train": ["train", data, "-o", out, "--epochs", "1"],
            "calibrate": ["calibrate", model, data, "-o", out],
            "calibrate-default": ["calibrate", model, data],
            "evaluate": ["evaluate", model, data, "-o", out],
        }[command]
        result = invoke("-q", *args)
        if command == "evaluate" and where == "replace":  # -o names an existing file: a usage error
            assert result.exit_code == 2 and "is a file" in result.output, result.output
        else:
            message = one_line_error(result)
            assert any(reason in message for reason in REFUSALS), message
        assert snapshot(root) == before


test_output_inside_an_input, test_output_inside_an_input_slow = _output_inside_an_input


def test_issue_cases_inside_folder_and_glob_inputs(tmp_path):
    """The reproductions of #24, each refused before any work, every file unchanged."""
    pq, imgs, ev = tmp_path / "pq", tmp_path / "imgs", tmp_path / "ev"
    for folder, names in ((pq, ["p1.parquet", "p2.parquet", "sub/p3.parquet"]), (imgs, ["img001.png", "img002.png", "g0.png"]), (ev, ["normal/roc.png", "anomaly/a.png"])):
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(name.encode())
    (tmp_path / "m.vgm").write_bytes(b"model")
    m = tmp_path / "m.vgm"
    cases = [
        ["score", m, pq / "*.parquet", "-o", pq / "p1.parquet"],
        ["score", m, pq, "-o", pq / "p2.parquet"],
        ["score", m, pq, "-o", pq / "sub" / "p3.parquet"],
        ["score", m, imgs, "-o", imgs / "g0.png"],
        ["train", imgs, "-o", imgs / "img001.png"],
        ["train", pq, "-o", pq / "p1.parquet"],
        ["calibrate", m, imgs, "-o", imgs / "img002.png"],
        ["evaluate", m, ev, "-o", ev / "normal"],
        ["score", m, pq, "-o", pq / "new.csv"],
    ]
    before = snapshot(tmp_path)
    for args in cases:
        message = one_line_error(invoke("-q", *args))
        assert any(reason in message for reason in REFUSALS), (args, message)
    assert snapshot(tmp_path) == before


def test_outputs_beside_a_folder_or_glob_input_are_allowed(tmp_path):
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "a.parquet").write_bytes(b"x")
    assert check_output(tmp_path / "scores.parquet", [tmp_path / "pq"]) == tmp_path / "scores.parquet"
    assert check_output(tmp_path / "pq" / "scores.csv", [tmp_path / "pq" / "*.parquet"]) == tmp_path / "pq" / "scores.csv"
    with pytest.raises(DataError, match="matches the input pattern"):
        check_output(tmp_path / "pq" / "new.parquet", [tmp_path / "pq" / "*.parquet"])  # the next run would read it


# ----------------------------------------------------------------------------- engine folders

FOLDER_KINDS = ["absent", "empty", "previous", "users", "holds_model", "holds_data", "inside_data", "is_data", "a_file", "symlink_to_users"]


@fast_and_slow(
    st.sampled_from(FOLDER_KINDS),
    st.lists(st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=10).filter(lambda s: s not in (".", "..")), min_size=1, max_size=4, unique=True),
    st.booleans(),
)
def _engine_output_folder(kind, user_files, fail_midway):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        (data / "part-0.parquet").write_bytes(b"data")
        model = root / "m.vgm"
        model.write_bytes(b"model")
        out = root / "out"
        if kind == "empty":
            out.mkdir()
        elif kind == "previous":
            out.mkdir()
            (out / DATASET_MARK).write_text("written by vaeguard")
            (out / "part.0.parquet").write_bytes(b"old scores")
        elif kind in ("users", "holds_model", "symlink_to_users"):
            users = root / "proj"
            users.mkdir()
            for name in user_files:
                (users / name).write_bytes(b"user's")
            if kind == "holds_model":
                model = users / "model.vgm"
                model.write_bytes(b"model")
            if kind == "symlink_to_users":
                out.symlink_to(users)
            else:
                out = users
        elif kind == "holds_data":
            out = root
        elif kind == "inside_data":
            out = data / "scores"
        elif kind == "is_data":
            out = data
        elif kind == "a_file":
            out.write_bytes(b"a file")
        before = snapshot(root)
        refused = kind not in ("absent", "empty", "previous")
        try:
            with atomic_dir(out, inputs=[data, model]) as tmp_dir:
                (tmp_dir / "part.0.parquet").write_bytes(b"new scores")
                if fail_midway:
                    raise KeyboardInterrupt
        except DataError as exc:
            assert refused, f"{kind}: refused: {exc}"
            assert "\n" not in str(exc) and str(out) in str(exc)
            assert snapshot(root) == before
            return
        except KeyboardInterrupt:
            assert fail_midway and not refused
            assert snapshot(root) == before
            assert not [p for p in root.iterdir() if p.name.endswith((".partdir", ".old"))]
            return
        assert not refused, f"{kind}: was replaced"
        assert sorted(p.name for p in out.iterdir()) == sorted([DATASET_MARK, "part.0.parquet"])
        assert (out / "part.0.parquet").read_bytes() == b"new scores"
        assert not [p for p in root.iterdir() if p.name.endswith((".partdir", ".old"))]


test_engine_output_folder, test_engine_output_folder_slow = _engine_output_folder


def test_engine_output_folder_holding_the_model_is_refused_before_any_work(tmp_path):
    """#24: `vaeguard score proj/model.vgm pqin -o proj --engine dask` emptied proj/."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "model.vgm").write_bytes(b"model")
    (proj / "notes.txt").write_text("x")
    (tmp_path / "pqin").mkdir()
    (tmp_path / "pqin" / "a.parquet").write_bytes(b"data")
    before = snapshot(tmp_path)
    for engine in ("dask", "spark"):
        message = one_line_error(invoke("-q", "score", proj / "model.vgm", tmp_path / "pqin", "-o", proj, "--engine", engine))
        assert "holds the input" in message or "was not written by vaeguard" in message
    assert snapshot(tmp_path) == before


# A process inside atomic_dir, for the interruption tests.
_DIR_WRITER = _WRITER_PRELUDE + """
from vaeguard.atomic import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "part.0.parquet").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def _start_dir_writer(out: Path) -> subprocess.Popen:
    return start_writer(out, _DIR_WRITER)


def _partdirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".partdir"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_an_engine_write_leaves_no_folder(tmp_path, signum):
    proc = _start_dir_writer(tmp_path / "out")
    assert len(_partdirs(tmp_path)) == 1
    proc.send_signal(signum)
    assert proc.wait(timeout=30) != 0
    assert list(tmp_path.iterdir()) == []


def test_a_sigkilled_engine_folder_is_removed_by_the_next_run_but_a_live_one_is_kept(tmp_path):
    out = tmp_path / "out"
    killed = _start_dir_writer(out)
    killed.kill()
    killed.wait(timeout=30)
    [stale] = _partdirs(tmp_path)
    os.utime(tmp_path / stale, (0, 0))  # older than this process
    live = _start_dir_writer(out)
    try:
        [live_dir] = set(_partdirs(tmp_path)) - {stale}
        os.utime(tmp_path / live_dir, (0, 0))  # old, but locked by a live writer
        with atomic_dir(out) as tmp:
            (tmp / "part.0.parquet").write_bytes(b"new")
        assert (out / "part.0.parquet").read_bytes() == b"new"
        assert _partdirs(tmp_path) == [live_dir]
    finally:
        live.kill()
        live.wait(timeout=30)
    assert [p.name for p in atomic.remove_stale_parts(out)] == [live_dir]
    assert _partdirs(tmp_path) == []


def test_another_outputs_partdir_is_not_ours_to_remove(tmp_path):
    other = tmp_path / ".other.abcd1234.partdir"
    other.mkdir()
    os.utime(other, (0, 0))
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_bytes(b"x")
    assert other.exists()
