"""Columns that are no features by default: label-named, row identifiers, constant columns.

Training leaves each out with a note naming the option that declares it; the estimator, which
keeps every column of a DataFrame, warns instead. In-memory, out-of-core and Parquet training
infer the same features (the one column rule).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from vaeguard import VAEAnomalyDetector
from vaeguard.cli import app
from vaeguard.errors import DataError
from vaeguard.sources import open_source
from vaeguard.tabular import ColumnRoles, role_warnings

runner = CliRunner()


def user_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """What an export looks like: a running id, a customer key, two features, a constant, a label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "customer_id": rng.permutation(np.arange(1000, 1000 + n)),
            "amount": rng.normal(50, 10, n).round(2),
            "visits": rng.integers(0, 5, n),  # integers with repeats: a feature
            "version": np.full(n, 3),
            "Label": rng.integers(0, 2, n),
        }
    )


EXPECTED_OUT = {"id": "--id-column", "customer_id": "--id-column", "version": "the same value (3)", "Label": "--label-column"}


def test_training_leaves_out_labels_ids_and_constants_naming_the_option(tmp_path):
    user_table().to_csv(tmp_path / "t.csv", index=False)
    training = open_source(tmp_path / "t.csv").read_training()
    assert training.input_spec.columns == ("amount", "visits")
    for name, said in EXPECTED_OUT.items():
        assert any(note.startswith(f"left out column {name!r}") and said in note for note in training.notes), (name, training.notes)


def test_the_cli_says_so_and_columns_keeps_a_column(tmp_path):
    user_table().to_csv(tmp_path / "t.csv", index=False)
    result = runner.invoke(app, ["train", str(tmp_path / "t.csv"), "-o", str(tmp_path / "m.vgm"), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "left out column 'Label': named like a label; declare it with --label-column" in result.output
    assert "left out column 'id': a unique row identifier; declare it with --id-column" in result.output
    kept = open_source(tmp_path / "t.csv").read_training(ColumnRoles(columns=["amount", "Label"]))
    assert kept.input_spec.columns == ("amount", "Label") and kept.notes == []
    declared = open_source(tmp_path / "t.csv").read_training(ColumnRoles(id_column="id", label_column="Label"))
    assert declared.input_spec.columns == ("amount", "visits")
    assert declared.input_spec.id_column == "id" and declared.input_spec.label_column == "Label"


def test_few_rows_or_repeats_are_not_ids(tmp_path):
    """Ten increasing integers may be a feature; a key with a repeated value is not an id."""
    frame = pd.DataFrame({"count": np.arange(10), "x": np.linspace(0, 1, 10)})
    frame.to_csv(tmp_path / "few.csv", index=False)
    assert open_source(tmp_path / "few.csv").read_training().input_spec.columns == ("count", "x")
    frame = user_table()
    frame.loc[5, "customer_id"] = frame.loc[6, "customer_id"]
    frame.drop(columns=["id", "Label", "version"]).to_csv(tmp_path / "dup.csv", index=False)
    assert open_source(tmp_path / "dup.csv").read_training().input_spec.columns == ("customer_id", "amount", "visits")


def test_a_constant_column_with_a_typo_is_reported_not_dropped(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,5\n2,5\n3,S\n")
    with pytest.raises(DataError, match=r"column 'b', row 3 \(line 4\): 'S' is not a number"):
        open_source(tmp_path / "t.csv").read_training()


def test_every_column_left_out_says_why(tmp_path):
    pd.DataFrame({"label": [0, 1, 0], "c": [1, 1, 1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"no numeric columns to use as features \('label': named like a label.*'c': the same value \(1\) in every row\)"):
        open_source(tmp_path / "t.csv").read_training()


def test_parquet_and_out_of_core_training_infer_the_same_features(tmp_path):
    pytest.importorskip("pyarrow")
    from vaeguard.streaming import TableStream

    frame = user_table(200)
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    for path in (tmp_path / "t.csv", tmp_path / "t.parquet"):
        in_memory = open_source(path).read_training()
        streamed = TableStream(path)
        assert in_memory.input_spec.columns == streamed.input_spec.columns == ("amount", "visits"), path
        assert sorted(in_memory.notes) == sorted(streamed.notes), path


def test_the_estimator_warns_about_a_label_or_id_column_it_keeps():
    frame = user_table()
    assert role_warnings(frame) == [
        "column 'id' looks like a row identifier and is used as a feature; drop it from X unless it is one",
        "column 'customer_id' looks like a row identifier and is used as a feature; drop it from X unless it is one",
        "column 'Label' looks like a label and is used as a feature; drop it from X unless it is one",
    ]
    with pytest.warns(UserWarning, match="column 'Label' looks like a label"):
        det = VAEAnomalyDetector(epochs=1, random_state=0).fit(frame.astype(float))
    assert det.n_features_in_ == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert role_warnings(frame[["amount", "visits"]]) == []
