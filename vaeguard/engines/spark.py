"""Score a Spark DataFrame with the model file: `score_spark`, and Parquet in, Parquet out.

Spark hands each Python worker Arrow batches as pandas DataFrames (`mapInPandas`); each is
scored by the same pure function as the local CLI (`score_frame`). The model file is read once
per Python worker process (Spark reuses its Python workers) through a cache keyed by path,
modification time and size; tasks carry only its path, so it must be readable at the same path
on every executor. Needs the `spark` extra (pyspark, Java 17).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import DataError
from ..extras import require
from ..inputs import check_on_bad_row
from .common import TOP_K, EngineSummary, cached_scorer, check_no_errors, engine_error, score_frame, table_columns


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def output_ddl(id_column: str | None, id_type: str | None) -> str:
    """The output schema as a DDL string (built fresh, never by mutating the input's schema)."""
    fields = [f"{_quoted(id_column)} {id_type}"] if id_column is not None else []
    fields += ["`score` double", "`p_value` double", "`is_anomaly` tinyint"]
    fields += [f"`top_{k + 1}` string" for k in range(TOP_K)] + ["`error` string"]
    return ", ".join(fields)


def score_spark(model_path: str | Path, df, *, device: str = "auto", on_bad_row: str = "skip"):
    """Score every row of the Spark DataFrame `df`; returns a lazy Spark DataFrame.

    Columns as the local CLI's: the model's id column (when `df` has it), score, p_value,
    is_anomaly (tinyint), top_1..top_3, error. A row with a bad cell gets null scores and the
    reason in `error` ("skip"), or fails the job with `on_bad_row="fail"`.
    """
    require("pyspark", "spark")
    check_on_bad_row(on_bad_row)
    model_path = str(Path(model_path).resolve())
    columns, id_column = table_columns(cached_scorer(model_path, device))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} that the model needs; "
            f"the data has {', '.join(map(repr, df.columns[:30]))}"
        )
    if id_column is not None and id_column not in df.columns:
        id_column = None
    needed = columns + ([id_column] if id_column is not None else [])
    ddl = output_ddl(id_column, df.schema[id_column].dataType.simpleString() if id_column else None)

    def score_batches(batches):
        scorer = cached_scorer(model_path, device)
        for frame in batches:
            scored = score_frame(scorer, frame)
            if on_bad_row == "fail":
                check_no_errors(scored, lambda label: f"a Spark batch: row {label + 1} of the batch")
            yield scored

    return df.select(*[_quoted(c) for c in needed]).mapInPandas(score_batches, ddl)


def local_session(master: str = "local[*]"):
    """A SparkSession; for a local master, bound to 127.0.0.1 without the web UI."""
    require("pyspark", "spark")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName("vaeguard")
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers run this interpreter (not the `python3` on PATH, which may lack
        # vaeguard when it is called as .venv/bin/vaeguard from cron or a service)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
        )
    try:
        return builder.getOrCreate()
    except Exception as exc:  # Java missing or failing: py4j/pyspark raise their own types
        raise DataError(f"cannot start Spark ({master}): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def score_parquet_spark(
    model_path: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    master: str = "local[*]",
    device: str = "auto",
    on_bad_row: str = "skip",
) -> EngineSummary:
    """Score a Parquet input (file, folder or glob) on Spark into a Parquet dataset folder.

    The folder appears only when complete (written beside it, then renamed into place); an
    existing folder is replaced only when it is a previous output (see `atomic.atomic_dir`).
    For a cluster master the executors need vaeguard installed in the Python that
    `PYSPARK_PYTHON` names (or `python3` on their PATH).
    """
    from ..atomic import atomic_dir
    from ..parquet import ParquetTable

    table = ParquetTable.open(data)
    columns, _ = table_columns(cached_scorer(model_path, device))
    table.check_columns(columns)
    with atomic_dir(output, inputs=[data, model_path]) as tmp:
        spark = local_session(master)
        df = spark.read.parquet(*[str(f.resolve()) for f in table.files])
        try:
            # "append" into the empty folder: "overwrite" would delete and recreate it, losing its lock
            score_spark(model_path, df, device=device, on_bad_row=on_bad_row).write.mode("append").parquet(str(tmp))
            counts = spark.read.parquet(str(tmp)).selectExpr(
                "count(*) AS n", "coalesce(sum(is_anomaly), 0) AS anomalies", "count_if(is_anomaly IS NULL) AS failed"
            ).first()
        except Exception as exc:  # py4j and pyspark wrap a worker's DataError in their own types
            raise engine_error(exc) from None
    n_failed = int(counts["failed"] or 0)
    return EngineSummary(Path(output), n_scored=int(counts["n"]) - n_failed, n_anomalies=int(counts["anomalies"]), n_failed=n_failed)
