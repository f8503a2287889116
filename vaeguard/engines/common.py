"""What every engine shares: the model file loaded once per process, and the scoring function."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

from ..calibration import p_values
from ..errors import DataError
from ..estimator import VAEAnomalyDetector
from ..frames import feature_matrix

TOP_K = 3
_cache: dict[tuple, VAEAnomalyDetector] = {}
_lock = threading.Lock()
_loads = 0


def model_key(model_path: str | Path, device: str) -> tuple:
    """(absolute path, mtime, size, device): a rewritten model file is a different model."""
    path = Path(model_path).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"{model_path}: no such model file on this worker") from None
    return str(path), stat.st_mtime_ns, stat.st_size, device


def cached_detector(model_path: str | Path, device: str = "auto") -> VAEAnomalyDetector:
    """The model in `model_path`, read once per process (threads share it) and kept."""
    global _loads
    key = model_key(model_path, device)
    with _lock:
        detector = _cache.get(key)
        if detector is None:
            from ..estimator import load

            detector = load(key[0], device=device)
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            _cache[key] = detector
            _loads += 1
        return detector


def load_count() -> int:
    """How many times this process has read a model file through `cached_detector`."""
    return _loads


def table_columns(detector: VAEAnomalyDetector) -> tuple[list[str], str | None]:
    """The model's feature columns and id column; DataError when it was not trained on a table."""
    spec = getattr(detector, "input_spec_", None)
    if spec is not None and hasattr(spec, "columns"):
        return list(spec.columns), spec.id_column
    spec = getattr(detector, "metadata_", {}).get("input")
    if not spec or spec.get("kind") != "table":
        raise DataError("this model was not trained on a table: the Dask and Spark engines score tables only")
    return list(spec["schema"]["columns"]), spec["schema"].get("id_column")


def _score_frame(detector: VAEAnomalyDetector, frame: pd.DataFrame) -> pd.DataFrame:
    """Provisional stand-in for `vaeguard.bulk.score_frame` until issue #11 lands on main."""
    columns, id_column = table_columns(detector)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} that the model needs")
    n = len(frame)
    X, reasons = feature_matrix(frame, columns)
    ok = reasons == ""
    scores = np.full(n, np.nan)
    pv = np.full(n, np.nan)
    flagged = pd.array([pd.NA] * n, dtype="Int8")
    tops = [np.full(n, "", dtype=object) for _ in range(TOP_K)]
    if ok.any():
        good = X[ok]
        s = detector.anomaly_score(good)
        scores[ok] = s
        pv[ok] = p_values(detector.calibration_scores_, s)
        flagged[ok] = (s > detector.threshold_).astype(np.int8)
        names = np.asarray(columns, dtype=object)
        order = np.argsort(-detector.feature_scores(good), axis=1)
        for k in range(min(TOP_K, len(columns))):
            tops[k][ok] = names[order[:, k]]
    out = pd.DataFrame(index=frame.index)
    if id_column is not None and id_column in frame.columns:
        out[id_column] = frame[id_column]
    out["score"] = scores
    out["p_value"] = pv
    out["is_anomaly"] = flagged
    for k in range(TOP_K):
        out[f"top_{k + 1}"] = pd.array(tops[k], dtype="str")
    out["error"] = pd.array(reasons, dtype="str")
    return out


def score_frame(detector: VAEAnomalyDetector, frame: pd.DataFrame) -> pd.DataFrame:
    """The one pure scoring function every engine calls (vaeguard.bulk.score_frame)."""
    try:
        from ..bulk import score_frame as bulk_score_frame
    except ImportError:
        return _score_frame(detector, frame)
    return bulk_score_frame(detector, frame)


def check_no_errors(scored: pd.DataFrame, where: str) -> None:
    """For --on-bad-row fail: DataError naming the first bad row of a scored partition."""
    bad = np.flatnonzero(scored["error"].to_numpy(dtype=object) != "")
    if len(bad):
        i = bad[0]
        raise DataError(f"{where}: row {scored.index[i]} of the partition: {scored['error'].iloc[i]}")
