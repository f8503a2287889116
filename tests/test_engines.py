"""Dask and Spark engines on loopback: the same scores as the local scoring function, bit for bit.

Dask runs on a LocalCluster(host="127.0.0.1", processes=False): worker threads in the test
process, for speed (a process cluster costs ~20 s of start-up; the CLI test marked slow uses
one). Spark runs one local[2] session per module (start-up ~10 s) and skips, saying why, when
Java cannot start.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from typer.testing import CliRunner

from vaeguard.cli import app
from vaeguard.engines import common
from vaeguard.engines.common import score_frame
from vaeguard.errors import DataError
from vaeguard.estimator import VAEAnomalyDetector
from vaeguard.extras import MissingExtraError, require
from vaeguard.inputs import TableInput
from vaeguard.parquet import ParquetTable

COLUMNS = ["a", "b", "c", "d"]
SCORE_COLUMNS = ["score", "p_value", "is_anomaly", "top_1", "top_2", "top_3", "error"]


def make_rows(n, rng, shift=0.0):
    z = rng.normal(size=(n, 2))
    X = np.column_stack([z[:, 0], z[:, 1], z[:, 0] + z[:, 1], z[:, 0] - z[:, 1]]) + rng.normal(scale=0.1, size=(n, 4))
    return X + shift


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A model file and a two-file Parquet input with ids, anomalies and two bad rows."""
    root = tmp_path_factory.mktemp("engines")
    rng = np.random.default_rng(0)
    spec = TableInput(tuple(COLUMNS), ("float64",) * 4, id_column="id")
    detector = VAEAnomalyDetector(hidden_dims=(16,), latent_dim=2, epochs=30, score_type="elbo", random_state=0)
    detector.fit(pd.DataFrame(make_rows(600, rng), columns=COLUMNS), input_spec=spec)
    detector.save(root / "model.vgm")
    frame = pd.DataFrame(np.vstack([make_rows(450, rng), make_rows(50, rng, shift=4.0)]), columns=COLUMNS)
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    frame["extra"] = "ignored"
    frame.loc[7, COLUMNS] = np.nan  # a row without a value: a bad row
    frame.loc[8, "b"] = np.nan  # a missing cell: scored from the others, the same on every engine
    frame.loc[300, "d"] = np.inf
    data = root / "data"
    data.mkdir()
    frame.iloc[:200].to_parquet(data / "part-0.parquet", row_group_size=64)
    frame.iloc[200:].to_parquet(data / "part-1.parquet", row_group_size=100)
    # The reference: the local CLI on the same files, to Parquet (every bit of each score).
    result = CliRunner().invoke(app, ["score", str(root / "model.vgm"), str(data), "-o", str(root / "local.parquet"), "--on-bad-row", "skip", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = pd.read_parquet(root / "local.parquet")
    # Every row keeps its id, failed rows too, so engine outputs can be matched by id.
    assert expected["id"].tolist() == frame["id"].to_numpy()[expected.pop("row").to_numpy() - 1].tolist()
    return root, frame, expected


def test_the_local_cli_and_score_frame_agree(dataset):
    root, frame, expected = dataset
    assert_same_scores(score_frame(common.cached_scorer(root / "model.vgm", "cpu"), frame), expected)


def assert_same_scores(got: pd.DataFrame, expected: pd.DataFrame):
    got = got.set_index("id").loc[expected["id"]]
    for col in ("score", "p_value"):
        a, b = got[col].to_numpy(dtype=np.float64), expected[col].to_numpy(dtype=np.float64)
        assert np.array_equal(a, b, equal_nan=True), col  # bit for bit, NaN where the row failed
    assert got["is_anomaly"].astype("Float64").fillna(-1).tolist() == expected["is_anomaly"].astype("Float64").fillna(-1).tolist()
    for col in ("top_1", "top_2", "top_3", "error"):
        assert got[col].fillna("").tolist() == expected[col].fillna("").tolist(), col


def test_expected_scores_flag_the_shifted_rows_and_name_bad_cells(dataset):
    _, _, expected = dataset
    assert expected["id"].tolist() == [f"r{i}" for i in range(500)]
    assert expected.loc[7, "error"] == "every feature cell is missing: nothing to score"
    assert expected.loc[8, "error"] == "" and np.isfinite(expected.loc[8, "score"])
    assert "column 'd'" in expected.loc[300, "error"] and np.isnan(expected.loc[300, "score"])
    assert expected["is_anomaly"].iloc[450:].mean() > 0.9 > 0.1 > expected["is_anomaly"].iloc[:450].mean()


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'vaeguard\[dask\]'"):
        require("dask.dataframe", "dask")


# ---------------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        host="127.0.0.1", protocol="tcp", n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_scores_equal_the_local_function_and_read_the_model_once(dataset, dask_client):
    import dask.dataframe as dd

    from vaeguard.engines.dask import score_dask

    root, _, expected = dataset
    ddf = dd.read_parquet(str(root / "data" / "*.parquet"))
    loads = common.load_count()
    scored = score_dask(root / "model.vgm", ddf, device="cpu")
    assert list(scored.columns) == ["id", *SCORE_COLUMNS]
    got = scored.compute()
    assert scored.npartitions >= 2
    assert common.load_count() - loads <= 1  # one process here: one read, every partition reuses it
    assert_same_scores(got, expected)
    assert got.dtypes.equals(scored._meta.dtypes)  # the meta is the real output's


def test_dask_on_bad_row_fail_stops_naming_the_column(dataset, dask_client):
    import dask.dataframe as dd

    from vaeguard.engines.dask import score_dask

    root, _, _ = dataset
    ddf = dd.read_parquet(str(root / "data" / "*.parquet"))
    with pytest.raises(DataError, match="every feature cell is missing|column 'd': 'inf' is not a finite number"):
        score_dask(root / "model.vgm", ddf, device="cpu", on_bad_row="fail").compute()


def test_dask_parquet_names_the_bad_row_as_the_local_run_does(dataset, dask_client, tmp_path):
    from vaeguard.engines import dask as engine

    root, _, _ = dataset
    local = CliRunner().invoke(app, ["-q", "score", str(root / "model.vgm"), str(root / "data"), "-o", str(tmp_path / "l.csv"), "--device", "cpu"])
    assert local.exit_code == 1 and "row 8 (in " in local.output  # frame row 7 is the input's row 8
    with pytest.raises(DataError) as failed:
        engine.score_parquet_dask(root / "model.vgm", root / "data", tmp_path / "o", client=dask_client, device="cpu", on_bad_row="fail")
    data = root / "data"
    # partitions run in parallel: the first bad row to fail may be either, named as the local run names it
    assert str(failed.value) in (
        local.output.strip().removeprefix("error: "),
        f"{data}: row 301 (in {data / 'part-1.parquet'}): column 'd': 'inf' is not a finite number",
    )
    # Partitions follow row groups (about PARTITION_BYTES each) and number rows across files.
    parts = engine._parts(ParquetTable.open(root / "data"), target_bytes=1)
    assert [(Path(p.file).name, p.first_row) for p in parts][:5] == [("part-0.parquet", 1), ("part-0.parquet", 65), ("part-0.parquet", 129), ("part-0.parquet", 193), ("part-1.parquet", 201)]


def test_dask_missing_feature_column_is_a_data_error(dataset, dask_client):
    import dask.dataframe as dd

    from vaeguard.engines.dask import score_dask

    root, frame, _ = dataset
    with pytest.raises(DataError, match="missing column 'c'"):
        score_dask(root / "model.vgm", dd.from_pandas(frame.drop(columns="c"), npartitions=2), device="cpu")


def test_dask_parquet_dataset_out(dataset, dask_client, tmp_path, monkeypatch):
    import dask.dataframe as dd

    from vaeguard.engines import dask as engine

    root, _, expected = dataset
    out = tmp_path / "scores"
    out.mkdir()  # an empty folder may be written
    calls = []
    monkeypatch.setattr(engine, "score_frame", lambda d, f: calls.append(len(f)) or score_frame(d, f))
    summary = engine.score_parquet_dask(root / "model.vgm", root / "data" / "*.parquet", out, client=dask_client, device="cpu")
    # Writing and counting share one graph: the meta call, then each partition exactly once.
    assert len(calls) == 1 + len(engine._parts(ParquetTable.open(root / "data")))
    assert sum(calls[1:]) == 500
    assert (summary.n_scored, summary.n_failed) == (498, 2)
    assert summary.n_anomalies == int(expected["is_anomaly"].sum())
    assert_same_scores(pd.read_parquet(out), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["scores"]  # no temporary folder left behind
    # A previous output (it carries the mark) is replaced; a folder of the user's is not.
    (out / "part.0.parquet").write_bytes(b"an old output")
    engine.score_parquet_dask(root / "model.vgm", root / "data" / "*.parquet", out, client=dask_client, device="cpu")
    assert_same_scores(pd.read_parquet(out), expected)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="was not written by vaeguard \\(it holds 'notes.txt'\\)"):
        engine.score_parquet_dask(root / "model.vgm", root / "data" / "*.parquet", tmp_path / "mine", client=dask_client, device="cpu")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.fixture(scope="module")
def huge_cell(dataset, tmp_path_factory):
    """A Parquet file whose row 3 holds 1e30 (a valid float whose score overflows), and the
    local CLI's output for it with --on-bad-row fail: the row is flagged, the run succeeds."""
    root, frame, _ = dataset
    folder = tmp_path_factory.mktemp("huge")
    rows = frame.drop(index=[7, 300]).iloc[:40].reset_index(drop=True)
    rows.loc[3, "a"] = 1e30
    rows.to_parquet(folder / "huge.parquet")
    result = CliRunner().invoke(app, ["score", str(root / "model.vgm"), str(folder / "huge.parquet"), "-o", str(folder / "local.parquet"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = pd.read_parquet(folder / "local.parquet").drop(columns="row")
    assert expected.loc[3, "is_anomaly"] == 1 and "not finite" in expected.loc[3, "error"]
    return folder, expected


def test_dask_flags_a_non_finite_score_as_the_local_run_does(dataset, huge_cell, dask_client, tmp_path):
    from vaeguard.engines.dask import score_parquet_dask

    root, _, _ = dataset
    folder, expected = huge_cell
    summary = score_parquet_dask(root / "model.vgm", folder / "huge.parquet", tmp_path / "o", client=dask_client, device="cpu", on_bad_row="fail")
    assert summary.n_failed == 0 and summary.n_scored == 40
    assert_same_scores(pd.read_parquet(tmp_path / "o"), expected)


# ---------------------------------------------------------------------------- Spark


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    from vaeguard.engines.spark import local_session

    try:
        session = local_session("local[2]")
    except DataError as exc:
        pytest.skip(f"Spark cannot start here (Java 17 is needed): {exc}")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_scores_equal_the_local_function(dataset, spark):
    from vaeguard.engines.spark import score_spark

    root, _, expected = dataset
    df = spark.read.parquet(str(root / "data"))
    scored = score_spark(root / "model.vgm", df, device="cpu")
    assert scored.columns == ["id", *SCORE_COLUMNS]
    assert dict(scored.dtypes)["is_anomaly"] == "tinyint"
    assert_same_scores(scored.toPandas(), expected)


def test_spark_output_schema_is_built_from_a_string_and_quotes_odd_names(dataset, spark):
    from vaeguard.engines.spark import output_ddl

    ddl = output_ddl("order id`x", "bigint")
    assert ddl.startswith("`order id``x` bigint, `score` double")
    root, frame, _ = dataset
    df = spark.createDataFrame(frame[COLUMNS].assign(**{"order id`x": np.arange(len(frame))}).iloc[:20])
    assert spark.createDataFrame([], ddl).columns[0] == "order id`x"
    assert df.count() == 20


def test_spark_parquet_dataset_out(dataset, spark, tmp_path):
    from vaeguard.engines.spark import score_parquet_spark

    root, _, expected = dataset
    out = tmp_path / "scores"
    summary = score_parquet_spark(root / "model.vgm", root / "data", out, master="local[2]", device="cpu")
    assert (summary.n_scored, summary.n_failed, summary.n_anomalies) == (498, 2, int(expected["is_anomaly"].sum()))
    assert_same_scores(pd.read_parquet(out), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["scores"]


def test_spark_from_the_command_line(dataset, spark, tmp_path):
    root, _, expected = dataset
    out = tmp_path / "scores"
    result = CliRunner().invoke(app, ["score", str(root / "model.vgm"), str(root / "data" / "*.parquet"), "-o", str(out), "--engine", "spark", "--master", "local[2]", "--on-bad-row", "skip", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "scored 498 rows" in result.output and "failed 2" in result.output
    assert_same_scores(pd.read_parquet(out), expected)


@pytest.mark.slow
def test_dask_from_the_command_line_on_a_process_cluster(dataset, tmp_path):
    """The CLI's own LocalCluster: two worker processes on 127.0.0.1 (~20 s to start)."""
    pytest.importorskip("distributed")
    root, _, expected = dataset
    out = tmp_path / "scores"
    result = CliRunner().invoke(app, ["score", str(root / "model.vgm"), str(root / "data" / "*.parquet"), "-o", str(out), "--engine", "dask", "--workers", "2", "--on-bad-row", "skip", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "scored 498 rows" in result.output and "failed 2" in result.output
    assert_same_scores(pd.read_parquet(out), expected)


def test_engine_options_are_checked(dataset, tmp_path):
    root, _, _ = dataset
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(root / "model.vgm"), str(root / "data"), "-o", str(tmp_path / "o"), "--engine", "ray"])
    assert result.exit_code == 2 and "must be local, dask or spark" in result.output
    result = runner.invoke(app, ["score", str(root / "model.vgm"), str(root / "data"), "-o", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "--scheduler and --workers go with --engine dask" in result.output
    (tmp_path / "t.csv").write_text("a,b,c,d\n1,2,3,4\n")
    result = runner.invoke(app, ["score", str(root / "model.vgm"), str(tmp_path / "t.csv"), "-o", str(tmp_path / "o"), "--engine", "dask"])
    assert result.exit_code == 2 and "--engine dask reads Parquet" in result.output


def test_spark_flags_a_non_finite_score_as_the_local_run_does(dataset, huge_cell, spark, tmp_path):
    from vaeguard.engines.spark import score_parquet_spark

    root, _, _ = dataset
    folder, expected = huge_cell
    summary = score_parquet_spark(root / "model.vgm", folder / "huge.parquet", tmp_path / "o", master="local[2]", device="cpu", on_bad_row="fail")
    assert summary.n_failed == 0 and summary.n_scored == 40
    assert_same_scores(pd.read_parquet(tmp_path / "o"), expected)


def test_spark_workers_run_the_drivers_python(spark):
    import os

    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    assert spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect() == [sys.executable]


def test_spark_on_bad_row_fail_stops_the_job(dataset, spark):
    """Last in the module: a failed task costs Spark its Python workers, which restart slowly."""
    from vaeguard.engines.spark import score_spark

    root, _, _ = dataset
    df = spark.read.parquet(str(root / "data"))
    with pytest.raises(Exception, match="every feature cell is missing|column 'd': 'inf' is not a finite number"):
        score_spark(root / "model.vgm", df, device="cpu", on_bad_row="fail").collect()


def test_dask_with_the_default_fused_score_equals_the_local_function(dataset, dask_client, tmp_path):
    """The default score of gaussian tables ("fused", with training codes) is batch-independent too."""
    import dask.dataframe as dd

    from vaeguard.engines.dask import score_dask

    root, frame, _ = dataset
    rng = np.random.default_rng(5)
    detector = VAEAnomalyDetector(hidden_dims=(16,), latent_dim=2, epochs=5, random_state=0)
    detector.fit(pd.DataFrame(make_rows(400, rng), columns=COLUMNS), input_spec=TableInput(tuple(COLUMNS), ("float64",) * 4, id_column="id"))
    assert detector.score_type_ == "fused"
    detector.save(tmp_path / "fused.vgm")
    expected = score_frame(common.cached_scorer(tmp_path / "fused.vgm", "cpu"), frame)
    got = score_dask(tmp_path / "fused.vgm", dd.from_pandas(frame, npartitions=3), device="cpu").compute()
    assert np.array_equal(got["score"].to_numpy(), expected["score"].to_numpy(), equal_nan=True)


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    """A model with a categorical column (#21), a two-file Parquet input with text, a value never
    seen in training and gaps (text and number), and the local CLI's scores of it."""
    root = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(6)
    train = pd.DataFrame(make_rows(400, rng), columns=COLUMNS)
    train["kind"] = rng.choice(["x", "y", "z"], len(train))
    detector = VAEAnomalyDetector(hidden_dims=(16,), latent_dim=2, epochs=5, random_state=0).fit(train)
    detector.save(root / "text.vgm")
    frame = pd.DataFrame(make_rows(300, rng), columns=COLUMNS)
    frame["kind"] = rng.choice(["x", "y", "z", "never seen"], len(frame))
    frame.loc[[3, 4], "kind"] = None
    frame.loc[5, "a"] = np.nan
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    (root / "data").mkdir()
    frame.iloc[:150].to_parquet(root / "data" / "part-0.parquet")
    frame.iloc[150:].to_parquet(root / "data" / "part-1.parquet")
    local = CliRunner().invoke(app, ["score", str(root / "text.vgm"), str(root / "data"), "-o", str(root / "local.parquet"), "--device", "cpu"])
    assert local.exit_code == 0, local.output
    expected = pd.read_parquet(root / "local.parquet").drop(columns="row")
    expected.insert(0, "id", frame["id"])  # the model has no id column: rows keep the file order
    assert np.isfinite(expected["score"]).all()
    return root, detector, frame, expected


def test_dask_scores_text_columns_and_gaps_as_the_local_cli(text_dataset, dask_client):
    """The Dask engine reads the Parquet dataset with text, an unseen value and gaps, and gives
    the local CLI's floats bit for bit."""
    from vaeguard.engines.dask import score_parquet_dask

    root, _, _, expected = text_dataset
    score_parquet_dask(root / "text.vgm", root / "data", root / "out", client=dask_client, device="cpu")
    got = pd.read_parquet(root / "out").sort_index()["score"].to_numpy()
    assert np.array_equal(np.sort(got), np.sort(expected["score"].to_numpy()))


def test_spark_scores_text_columns_and_gaps_as_the_local_cli_and_the_estimator(text_dataset, spark):
    """The Spark engine on the same files: every row's score, p-value, flag and named top columns
    (`kind=never seen (not seen in training)`) as the local CLI's, bit for bit, and the scores
    as the estimator's on the pandas frame. Each file is scored on its own, so the rows come
    back in file order (the model has no id column to match them by)."""
    from vaeguard.engines.spark import score_spark

    root, detector, frame, expected = text_dataset
    parts = []
    for name in ("part-0.parquet", "part-1.parquet"):
        df = spark.read.parquet(str(root / "data" / name))
        assert dict(df.dtypes)["kind"] == "string"
        parts.append(score_spark(root / "text.vgm", df, device="cpu").toPandas())
    got = pd.concat(parts, ignore_index=True)
    assert list(got.columns) == SCORE_COLUMNS
    got.insert(0, "id", frame["id"])
    assert_same_scores(got, expected)
    assert (expected.loc[[3, 4, 5], "error"] == "").all()  # gaps are scored from the cells present
    assert (expected[["top_1", "top_2", "top_3"]] == "kind=never seen (not seen in training)").any(axis=None)
    assert np.array_equal(detector.anomaly_score(frame[[*COLUMNS, "kind"]]), expected["score"].to_numpy())
    # and the text is read, not dropped: without it the score of every row that has one moves
    blank = detector.anomaly_score(frame[[*COLUMNS, "kind"]].assign(kind=None))
    has_text = frame["kind"].notna().to_numpy()
    assert (blank != expected["score"].to_numpy())[has_text].all() and has_text.sum() == len(frame) - 2


def test_spark_bad_row_from_the_command_line_is_one_line(dataset, spark, tmp_path):
    """After the other Spark tests: a failed task costs Spark its Python workers."""
    root, _, _ = dataset
    out = tmp_path / "scores"
    result = CliRunner().invoke(app, ["score", str(root / "model.vgm"), str(root / "data"), "-o", str(out), "--engine", "spark", "--master", "local[2]", "--device", "cpu"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: a Spark batch: row ") and ("every feature cell is missing" in lines[-1] or "column 'd'" in lines[-1]), result.output
    assert "Traceback" not in result.output and "Py4J" not in result.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
