"""Named columns of a pandas DataFrame as a float feature matrix, with a reason per bad row.

Every table source (CSV chunks, Parquet record batches, Dask partitions, Spark Arrow batches)
ends up as a DataFrame; this is where its cells become the numbers the model reads, with the
same rules as the CSV reader: a cell must be a finite number within float32 range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .tabular import _usable, _why


def _column_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(float64 values with NaN where unusable, null mask, raw text or None when already numeric)."""
    null = series.isna().to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), null, None
    text = series.astype(object).where(~null, "").astype(str)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, null, text.to_numpy(dtype=object)


def feature_matrix(frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X, reasons): X is float64 (n, len(columns)) in `columns` order; reasons[i] is "" for a
    usable row, else "column 'c': why; column 'd': why" for every bad cell of the row.

    The caller checks that the columns exist. A copy is always made, so X is writable (pandas 3
    hands out read-only views from `to_numpy`).
    """
    n = len(frame)
    X = np.empty((n, len(columns)), dtype=np.float64)
    problems: dict[int, list[str]] = {}
    for j, name in enumerate(columns):
        values, null, raw = _column_values(frame[name])
        X[:, j] = values
        bad = ~_usable(values)
        for i in np.flatnonzero(bad):
            why = "empty value" if null[i] else _why(values[i], None if raw is None else raw[i])
            problems.setdefault(int(i), []).append(f"column {name!r}: {why}")
    reasons = np.full(n, "", dtype=object)
    for i, found in problems.items():
        reasons[i] = "; ".join(found)
    return X, reasons
