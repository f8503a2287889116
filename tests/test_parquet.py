"""Parquet wherever CSV works: training, scoring to CSV or Parquet, folders and globs, bad rows."""

import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from vaeguard.cli import app

pytest.importorskip("pyarrow")
runner = CliRunner()
COLUMNS = ["a", "b", "c", "d"]
SMALL = ["--hidden-dims", "16", "--latent-dim", "2", "--epochs", "20", "--seed", "0", "--score-type", "elbo"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_frame(n, rng, shift=0.0, start=0):
    z = rng.normal(size=(n, 2))
    X = np.column_stack([z[:, 0], z[:, 1], z[:, 0] + z[:, 1], z[:, 0] - z[:, 1]]) + rng.normal(scale=0.1, size=(n, 4)) + shift
    frame = pd.DataFrame(X, columns=COLUMNS)
    frame.insert(0, "id", [f"r{i}" for i in range(start, start + n)])
    frame["note"] = "text"  # a text column: never a feature by default
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("parquet")
    rng = np.random.default_rng(1)
    train = make_frame(500, rng)
    train.to_parquet(root / "train.parquet", row_group_size=128)
    train.to_csv(root / "train.csv", index=False)
    test = pd.concat([make_frame(180, rng, start=0), make_frame(20, rng, shift=4.0, start=180)], ignore_index=True)
    test["c"] = [repr(v) for v in test["c"]]  # a text column in Parquet: parsed cell by cell
    test.loc[5, "c"] = "oops"
    (root / "parts").mkdir()
    test.iloc[:120].to_parquet(root / "parts" / "p0.parquet", row_group_size=50)
    test.iloc[120:].to_parquet(root / "parts" / "p1.parquet")
    test.to_csv(root / "test.csv", index=False)
    return root


@pytest.fixture(scope="module")
def models(files):
    out = {}
    for kind in ("parquet", "csv"):
        out[kind] = files / f"model-{kind}.vgm"
        result = invoke("train", files / f"train.{kind}", "-o", out[kind], "--id-column", "id", *SMALL)
        assert result.exit_code == 0, result.output
    return out


def test_training_on_parquet_gives_the_model_training_on_the_same_csv_gives(files, models, tmp_path):
    info = invoke("info", models["parquet"])
    assert "4 columns: a, b, c, d" in info.output  # numeric columns only: not id, not note
    scores = {}
    for kind, model in models.items():
        out = tmp_path / f"{kind}.csv"
        result = invoke("score", model, files / "test.csv", "-o", out, "--on-bad-row", "skip")
        assert result.exit_code == 0, result.output
        scores[kind] = pd.read_csv(out)
    pd.testing.assert_frame_equal(scores["parquet"], scores["csv"])


@pytest.mark.parametrize("source", ["parts", "parts/*.parquet"])
def test_scoring_a_folder_or_glob_equals_scoring_the_csv(files, models, tmp_path, source):
    out = tmp_path / "scores.parquet"
    result = invoke("score", models["parquet"], files / source, "-o", out, "--on-bad-row", "skip")
    assert result.exit_code == 0, result.output
    assert "scored 199 rows, flagged" in result.output and "failed 1" in result.output
    got = pd.read_parquet(out)
    assert list(got.columns) == ["row", "id", "score", "p_value", "is_anomaly", "top_1", "top_2", "top_3", "error"]
    assert got["row"].tolist() == list(range(1, 201))  # numbered across the files, in order
    assert got.loc[5, "error"] == "column 'c': 'oops' is not a number" and np.isnan(got.loc[5, "score"])
    assert got["is_anomaly"].iloc[180:].mean() > 0.9
    csv_out = tmp_path / "scores.csv"
    invoke("score", models["parquet"], files / "test.csv", "-o", csv_out, "--on-bad-row", "skip")
    # The CSV output writes each float exactly (shortest repr): it reads back bit for bit.
    np.testing.assert_array_equal(pd.read_csv(csv_out)["score"].to_numpy(), got["score"].to_numpy())


def test_a_bad_cell_fails_naming_file_row_and_column(files, models, tmp_path):
    result = invoke("score", models["parquet"], files / "parts", "-o", tmp_path / "s.parquet")
    assert result.exit_code == 1
    assert "row 6 (in " in result.output and "p0.parquet): column 'c': 'oops' is not a number" in result.output
    assert not (tmp_path / "s.parquet").exists()


def test_missing_column_and_unreadable_file_are_data_errors(files, models, tmp_path):
    pd.read_parquet(files / "train.parquet").drop(columns="b").to_parquet(tmp_path / "nob.parquet")
    result = invoke("score", models["parquet"], tmp_path / "nob.parquet", "-o", tmp_path / "s.csv")
    assert result.exit_code == 1 and "missing column 'b' that the model needs" in result.output
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    result = invoke("score", models["parquet"], tmp_path / "bad.parquet", "-o", tmp_path / "s.csv")
    assert result.exit_code == 1 and "bad.parquet: cannot read this Parquet file" in result.output
    result = invoke("score", models["parquet"], tmp_path / "none-*.parquet", "-o", tmp_path / "s.csv")
    assert result.exit_code == 1 and "no Parquet file (.parquet, .pq) matches this pattern" in result.output


def test_training_stops_at_a_bad_cell(files, tmp_path):
    frame = pd.read_parquet(files / "train.parquet")
    frame.loc[41, "d"] = np.inf
    frame.to_parquet(tmp_path / "inf.parquet")
    result = invoke("train", tmp_path / "inf.parquet", "-o", tmp_path / "m.vgm", *SMALL)
    assert result.exit_code == 1 and "inf.parquet: row 42: column 'd': 'inf' is not a finite number" in result.output


def test_without_pyarrow_the_error_names_the_extra(files, models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = invoke("score", models["parquet"], files / "parts", "-o", tmp_path / "s.csv")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: reading and writing Parquet needs pyarrow, which is not installed: pip install 'vaeguard[parquet]'"
    )


def test_evaluate_and_calibrate_read_parquet_too(files, models, tmp_path):
    frame = pd.concat([pd.read_parquet(f) for f in sorted((files / "parts").glob("*.parquet"))], ignore_index=True).drop(index=5)
    frame["c"] = frame["c"].astype(float)
    frame["label"] = (frame.index >= 180).astype(int)
    frame.to_parquet(tmp_path / "labelled.parquet")
    result = invoke("evaluate", models["parquet"], tmp_path / "labelled.parquet", "--label-column", "label", "-o", tmp_path / "report")
    assert result.exit_code == 0, result.output
    auroc = float(result.output.split("AUROC ")[1].split()[0])
    assert auroc > 0.95
    result = invoke("calibrate", models["parquet"], files / "train.parquet", "--fpr", "0.05", "-o", tmp_path / "recal.vgm")
    assert result.exit_code == 0, result.output
    assert "5% false-positive target" in result.output
