"""What every engine shares: the model file loaded once per process, and the scoring function."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..bulk import score_frame
from ..errors import DataError
from ..inputs import TOP_K
from ..scorer import Scorer

__all__ = ["TOP_K", "EngineSummary", "cached_scorer", "check_no_errors", "engine_error", "load_count", "score_frame", "table_columns"]
_cache: dict[tuple, Scorer] = {}
_lock = threading.Lock()
_loads = 0


@dataclass
class EngineSummary:
    """What an engine run did: rows scored, flagged and failed (see the `error` column), and
    the output dataset folder."""

    output: Path
    n_scored: int = 0
    n_anomalies: int = 0
    n_failed: int = 0


def model_key(model_path: str | Path, device: str) -> tuple:
    """(absolute path, mtime, size, device): a rewritten model file is a different model."""
    path = Path(model_path).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"{model_path}: no such model file on this worker") from None
    return str(path), stat.st_mtime_ns, stat.st_size, device


def cached_scorer(model_path: str | Path, device: str = "auto") -> Scorer:
    """The model in `model_path`, read once per process (threads share it) and kept."""
    global _loads
    key = model_key(model_path, device)
    with _lock:
        scorer = _cache.get(key)
        if scorer is None:
            scorer = Scorer.load(key[0], device=device)
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            _cache[key] = scorer
            _loads += 1
        return scorer


def load_count() -> int:
    """How many times this process has read a model file through `cached_scorer`."""
    return _loads


def table_columns(scorer: Scorer) -> tuple[list[str], str | None]:
    """The model's feature columns and id column; DataError when it was not trained on a table."""
    from ..sources import table_spec

    spec = table_spec(scorer.input_spec)
    return list(spec.columns), spec.id_column


def check_no_errors(scored: pd.DataFrame, where: Callable[[object], str]) -> None:
    """For --on-bad-row fail: DataError naming the first row of a scored partition that could not
    be scored (a bad cell), located by `where(index label)`. A row whose score is not finite is
    flagged, as in the local run."""
    bad = np.flatnonzero(scored["is_anomaly"].isna().to_numpy())
    if len(bad):
        i = bad[0]
        raise DataError(f"{where(scored.index[i])}: {scored['error'].iloc[i]}")


def engine_error(exc: BaseException) -> DataError:
    """The one line that says why a Dask or Spark job failed, from an exception that may carry
    a worker's whole traceback (Spark wraps it in Java's)."""
    text = str(exc)
    for line in reversed(text.splitlines()):
        for kind in ("DataError: ", "ModelFileError: "):
            if kind in line:
                return DataError(line.split(kind, 1)[1].strip())
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return DataError(f"the {type(exc).__name__} job failed: {first}")
