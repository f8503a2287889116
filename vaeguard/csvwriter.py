"""Score frames to CSV text, byte for byte as pandas' `to_csv` writes them, in half the time.

Scoring a large CSV spent a quarter of its time in `DataFrame.to_csv` (README, "Where a fit's
time goes"): pandas turns every cell into a Python object and hands the rows to the csv
module. A score frame has few kinds of column, so each is formatted as a whole instead: floats
by `repr` (the shortest string that reads back as the same float, which is what pandas
writes), strings as they are unless they need quotes, flags by formatting each distinct value
once. The rules are pandas' defaults: an empty field for a missing value,
a field quoted only when it holds a comma, a quote or a line break (quotes doubled), and
`line_end` after every row. A frame with a column of another kind is written by pandas.
"""

from __future__ import annotations

import re
from typing import TextIO

import numpy as np
import pandas as pd

_NEEDS_QUOTES = (",", '"', "\r", "\n")
_NEEDS_QUOTES_PATTERN = "[" + re.escape("".join(_NEEDS_QUOTES)) + "]"  # the same set, for str.contains


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _field(value) -> str:
    """One cell as the csv module writes it: its str (a float's str is its repr), quoted when
    it holds a comma, a quote or a line break."""
    text = value if isinstance(value, str) else str(value)
    return _quoted(text) if any(c in text for c in _NEEDS_QUOTES) else text


def _texts(column: pd.Series) -> list[str]:
    """A column of strings: each as it is, the few that need it quoted, missing ones empty."""
    strings = column if isinstance(column.dtype, pd.StringDtype) else column.astype("string")
    fields = strings.to_numpy(dtype=object, na_value="").tolist()
    for i in np.flatnonzero(strings.str.contains(_NEEDS_QUOTES_PATTERN, regex=True, na=False).to_numpy(dtype=bool)).tolist():
        fields[i] = _quoted(fields[i])
    return fields


def _column(column: pd.Series) -> list[str] | None:
    """The column's cells as CSV fields, or None for a kind of column left to pandas."""
    dtype = column.dtype
    if dtype == np.float64:
        values = column.to_numpy()
        fields = list(map(float.__repr__, values.tolist()))
        for i in np.flatnonzero(np.isnan(values)).tolist():
            fields[i] = ""
        return fields
    if dtype.kind in "iub" and isinstance(dtype, np.dtype):
        return list(map(str, column.to_numpy().tolist()))
    if isinstance(column.array, (pd.arrays.IntegerArray, pd.arrays.BooleanArray)):  # flags: few values
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        return np.array([*map(_field, uniques), ""], dtype=object)[codes].tolist()
    if isinstance(dtype, pd.StringDtype) or pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty"):
        return _texts(column)
    if dtype == object:  # mixed values: 1, 1.0 and True are written differently
        missing = column.isna().to_numpy()
        return ["" if gap else _field(value) for value, gap in zip(column.tolist(), missing.tolist())]
    return None


def write_csv(fh: TextIO, frame: pd.DataFrame, *, header: bool, line_end: str) -> None:
    """Write `frame` (no index) to `fh` as `frame.to_csv(fh, header=header, index=False,
    lineterminator=line_end)` would."""
    # one column is left to pandas: the csv module quotes an empty field alone on its row
    columns = [_column(frame[name]) for name in frame.columns] if frame.columns.is_unique and len(frame.columns) > 1 else None
    if columns is None or any(c is None for c in columns):
        frame.to_csv(fh, header=header, index=False, lineterminator=line_end)
        return
    if header:
        fh.write(",".join(map(_field, frame.columns)) + line_end)
    if len(frame):
        fh.write(line_end.join(map(",".join, zip(*columns))) + line_end)
