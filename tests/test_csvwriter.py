"""The score CSV writer writes what pandas' to_csv writes, byte for byte."""

import io

import numpy as np
import pandas as pd
import pytest

from vaeguard.csvwriter import write_csv

LINE_END = "\r\n"


def pandas_text(frame: pd.DataFrame, header: bool = True) -> str:
    fh = io.StringIO()
    frame.to_csv(fh, header=header, index=False, lineterminator=LINE_END)
    return fh.getvalue()


def our_text(frame: pd.DataFrame, header: bool = True) -> str:
    fh = io.StringIO()
    write_csv(fh, frame, header=header, line_end=LINE_END)
    return fh.getvalue()


def awkward_floats(n: int, seed: int = 0) -> np.ndarray:
    """Every magnitude where repr switches notation, subnormals, signed zero, inf and NaN."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-320, 300, n)
    special = [0.0, -0.0, 1e-5, 1e-4, 1e15, 1e16, 9999999999999998.0, 5e-324, np.inf, -np.inf, np.nan, 0.1 + 0.2]
    return np.r_[special, x]


def test_score_frame_columns_match_pandas():
    floats = awkward_floats(2000)
    n = len(floats)
    rng = np.random.default_rng(1)
    flags = pd.arrays.IntegerArray(rng.integers(0, 2, n).astype(np.int8), rng.random(n) < 0.1)
    names = np.array(["x1", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "", " padded "], dtype=object)
    frame = pd.DataFrame({
        "row": np.arange(1, n + 1),
        "my,id": rng.integers(-5, 5, n),
        "score": floats,
        "p_value": rng.permutation(floats),
        "is_anomaly": flags,
        "top_1": names[rng.integers(0, len(names), n)],
        "top_2": pd.array(names[rng.integers(0, len(names), n)], dtype="string"),
        "error": np.where(rng.random(n) < 0.05, None, names[rng.integers(0, len(names), n)]),
        "ok": rng.random(n) < 0.5,
        "nullable": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5), dtype="boolean"),
    })
    assert our_text(frame) == pandas_text(frame)
    assert our_text(frame, header=False) == pandas_text(frame, header=False)


def test_mixed_object_ids_match_pandas():
    """An id column read as objects may mix ints, floats, bools and strings: 1, 1.0 and True
    are written differently even though they compare equal."""
    ids = [1, 1.0, True, "1", None, float("nan"), np.float64(2.5), 3, "x,y", pd.NA, np.int64(7), 1e-7]
    frame = pd.DataFrame({"id": pd.Series(ids, dtype=object), "score": np.linspace(0, 1, len(ids))})
    assert our_text(frame) == pandas_text(frame)


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"score": [1.0, np.nan]}),  # one column: an empty field alone on a row is quoted
    pd.DataFrame({"score": np.array([0.1, 0.2], dtype=np.float32), "x": [1, 2]}),  # float32: pandas' own format
    pd.DataFrame({"when": pd.to_datetime(["2026-01-01", None]), "x": [1, 2]}),
    pd.DataFrame({"score": np.empty(0), "p_value": np.empty(0)}),
])
def test_other_frames_match_pandas(frame):
    assert our_text(frame) == pandas_text(frame)
