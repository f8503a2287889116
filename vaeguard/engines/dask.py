"""Score a Dask DataFrame with the model file: `score_dask`, and Parquet in, Parquet out.

Each partition is scored by the same pure function as the local CLI (`score_frame`); the
model file is read once per worker process (a cache keyed by path, modification time and
size) and never shipped with the tasks, which carry only its path. So the model file must be
readable at the same path on every worker (a shared file system). Needs the `dask` extra.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..extras import require
from ..inputs import check_on_bad_row
from .common import EngineSummary, cached_scorer, check_no_errors, score_frame, table_columns


# 64 MiB partitions (~300k rows of 20 float columns): Dask's default of whole files or 256 MiB
# made five 1M-row partitions of a 1 GB file, a 1.9 GB worker and one idle worker of two
# (measured by benchmarks/bigdata.py).
PARTITION_BYTES = 64 * 2**20


def _score_partition(frame: pd.DataFrame, model_path: str, device: str, on_bad_row: str, where=None) -> pd.DataFrame:
    scored = score_frame(cached_scorer(model_path, device), frame)
    if on_bad_row == "fail":
        check_no_errors(scored, where or (lambda label: f"a Dask partition: the row with index {label!r}"))
    return scored


@dataclass(frozen=True)
class _Part:
    """Row groups of one Parquet file read as one partition, and the input's number of its first row."""

    file: str
    row_groups: tuple[int, ...]
    first_row: int


def _parts(table, target_bytes: int = PARTITION_BYTES) -> list[_Part]:
    """Consecutive row groups of each file, about `target_bytes` (uncompressed) per partition."""
    pq = require("pyarrow.parquet", "parquet")
    parts, first = [], 1
    for f, n_rows in zip(table.files, table.file_rows):
        meta = pq.ParquetFile(f).metadata
        groups, size, start = [], 0, first
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if groups and size + group.total_byte_size > target_bytes:
                parts.append(_Part(str(f), tuple(groups), start))
                start += sum(meta.row_group(i).num_rows for i in groups)
                groups, size = [], 0
            groups.append(g)
            size += group.total_byte_size
        if groups:
            parts.append(_Part(str(f), tuple(groups), start))
        first += n_rows
    return parts


def _read_part(part: _Part, columns: list[str]) -> pd.DataFrame:
    """A partition indexed by the rows' numbers in the whole input (as the local run's `row`)."""
    pq = require("pyarrow.parquet", "parquet")
    frame = pq.ParquetFile(part.file).read_row_groups(list(part.row_groups), columns=columns).to_pandas()
    frame.index = pd.RangeIndex(part.first_row, part.first_row + len(frame))
    return frame


def score_dask(model_path: str | Path, ddf, *, device: str = "auto", on_bad_row: str = "skip"):
    """Score every row of the Dask DataFrame `ddf`; returns a lazy Dask DataFrame.

    Columns as the local CLI's: the model's id column (when `ddf` has it), score, p_value,
    is_anomaly, top_1..top_3, error, with `ddf`'s index and partitions. A row with a bad cell
    gets NaN scores and the reason in `error` ("skip"), or fails the computation with
    `on_bad_row="fail"`.
    """
    require("dask.dataframe", "dask")
    check_on_bad_row(on_bad_row)
    return _score_ddf(model_path, ddf, device, on_bad_row)


def _where(table, row: int) -> str:
    """"file: row N" for the input's row N, as the local run names it."""
    ends = np.cumsum(table.file_rows)
    i = int(np.searchsorted(ends, row, side="left"))
    return table.where(table.files[min(i, len(table.files) - 1)], row)


def _score_ddf(model_path: str | Path, ddf, device: str, on_bad_row: str, where=None):
    model_path = str(Path(model_path).resolve())
    scorer = cached_scorer(model_path, device)
    columns, id_column = table_columns(scorer)
    missing = [c for c in columns if c not in ddf.columns]
    if missing:
        raise DataError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} that the model needs; "
            f"the data has {', '.join(map(repr, list(ddf.columns)[:30]))}"
        )
    needed = columns + ([id_column] if id_column is not None and id_column in ddf.columns else [])
    ddf = ddf[needed]
    # Dask's stand-in rows (typed like the input) through the same function: the output's dtypes.
    meta = score_frame(scorer, ddf._meta_nonempty).iloc[:0]
    return ddf.map_partitions(_score_partition, model_path, device, on_bad_row, where, meta=meta)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def score_parquet_dask(
    model_path: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    client=None,
    device: str = "auto",
    on_bad_row: str = "skip",
) -> EngineSummary:
    """Score a Parquet input (file, folder or glob) on Dask into a Parquet dataset folder.

    Without `scheduler`, a LocalCluster on 127.0.0.1 (one single-threaded worker process per
    core, or `n_workers`) is started and stopped; `client` uses one the caller already has.
    The output folder appears only when complete; an existing folder is replaced only when it
    is a previous output (see `atomic.atomic_dir`).
    """
    dd = require("dask.dataframe", "dask")
    distributed = require("distributed", "dask")
    import dask

    from ..atomic import atomic_dir
    from ..parquet import ParquetTable

    pq = require("pyarrow.parquet", "parquet")
    check_on_bad_row(on_bad_row)
    table = ParquetTable.open(data)
    columns, id_column = table_columns(cached_scorer(model_path, device))
    table.check_columns(columns)
    needed = columns + ([id_column] if id_column is not None and id_column in table.columns else [])
    with atomic_dir(output, inputs=[data, model_path]) as tmp, _Client(distributed, scheduler, n_workers, client):
        meta = pq.read_schema(table.files[0]).empty_table().select(needed).to_pandas()
        ddf = dd.from_map(_read_part, _parts(table), columns=needed, meta=meta, enforce_metadata=False)
        scored = _score_ddf(model_path, ddf, device, on_bad_row, where=functools.partial(_where, table))
        write = scored.to_parquet(str(tmp), write_index=False, compute=False)
        counts = scored[["is_anomaly", "error"]].map_partitions(_counts, meta=_counts(scored._meta))
        _, totals = dask.compute(write, counts)  # one graph: each partition is scored once
    n_failed = int(totals["failed"].sum())
    return EngineSummary(Path(output), int(totals["n"].sum()) - n_failed, int(totals["anomalies"].sum()), n_failed)


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    failed = int(frame["is_anomaly"].isna().sum())  # a non-finite score is flagged, not failed
    return pd.DataFrame({"n": [len(frame)], "anomalies": [int(frame["is_anomaly"].fillna(0).sum())], "failed": [failed]})


class _Client:
    """A distributed Client on `scheduler`, or on a LocalCluster bound to 127.0.0.1."""

    def __init__(self, distributed, scheduler: str | None, n_workers: int | None, client=None):
        self.distributed, self.scheduler, self.n_workers = distributed, scheduler, n_workers
        self.cluster, self.client, self.owned = None, client, client is None

    def __enter__(self):
        if not self.owned:
            return self.client
        if self.scheduler is not None:
            try:
                self.client = self.distributed.Client(self.scheduler, timeout="30s")
            except OSError as exc:
                raise DataError(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
            return self.client
        self.cluster = self.distributed.LocalCluster(
            host="127.0.0.1", n_workers=self.n_workers, threads_per_worker=1, dashboard_address=None,
            silence_logs=logging.ERROR,  # a bad row is raised here, once: not a "Compute Failed" per task
        )
        self.client = self.distributed.Client(self.cluster)
        self.client.run(_one_thread)  # one torch thread per single-threaded worker: no oversubscription
        return self.client

    def __exit__(self, *exc):
        if not self.owned:
            return False
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False
