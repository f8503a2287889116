"""The data preparation of benchmarks/oneclass_benchmarks.py's mixed and missing suites (issue #21):
the numbers in the README are only as good as the cells each method is given."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import oneclass_benchmarks as ob  # noqa: E402


def test_blank_cells_follows_the_shared_recipe_and_keeps_a_cell_per_row():
    x = np.random.default_rng(5).normal(size=(400, 3))
    out = ob.blank_cells(x, 0.3)
    expected = np.random.default_rng(1).random(x.shape) < 0.3
    emptied = expected.all(axis=1)
    assert emptied.any()  # the recipe alone would empty some rows of 3 cells
    np.testing.assert_array_equal(np.isnan(out)[~emptied], expected[~emptied])
    assert np.isnan(out).sum(axis=1).max() == 2
    np.testing.assert_array_equal(out[~np.isnan(out)], x[~np.isnan(out)])
    single = ob.blank_cells(x[:, :1], 0.99)
    assert not np.isnan(single).any()  # one column: every row keeps its only cell


def test_missing_split_standardises_the_training_part_with_its_observed_cells():
    x = np.random.default_rng(2).normal(5.0, 3.0, size=(300, 4))
    y = np.r_[np.zeros(250, int), np.ones(50, int)]
    X_train, X_test, labels = ob.missing_split(x, y, 0.1)
    train, test, _ = ob.protocol_indices(y)
    np.testing.assert_array_equal(np.isnan(X_train), np.isnan(ob.blank_cells(x, 0.1)[train]))
    np.testing.assert_allclose(np.nanmean(X_train, axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(X_train, axis=0), 1.0)
    assert len(X_test) == len(test) == len(labels) and labels.sum() == 50


def test_median_impute_uses_the_training_medians_only():
    X_train = np.array([[1.0, np.nan], [3.0, 10.0], [np.nan, 20.0], [2.0, 30.0]])
    X_test = np.array([[np.nan, np.nan], [100.0, 5.0]])
    train_out, test_out = ob.median_impute(X_train, X_test)
    np.testing.assert_array_equal(train_out, [[1, 20], [3, 10], [2, 20], [2, 30]])
    np.testing.assert_array_equal(test_out, [[2, 20], [100, 5]])


def test_load_mixed_keeps_raw_cells_and_one_hot_encodes_text_for_peers(tmp_path):
    (tmp_path / "mixed").mkdir()
    lines = ["State,Voice mail plan,Minutes,Churn"]
    lines += [f"{'KS' if i % 2 else 'OH'},{'Yes' if i % 3 else 'No'},{i}.50,False" for i in range(20)]
    lines += ["ZZ,No,99.25,True", "KS,Yes,1.00,True"]
    (tmp_path / "mixed" / "churn.csv").write_text("\n".join(lines) + "\n")
    split = ob.load_mixed(tmp_path, "churn")
    assert split.text_columns == ["State", "Voice mail plan"]
    assert list(split.raw.columns) == ["State", "Voice mail plan", "Minutes"]  # the label is never a feature
    assert split.raw.iloc[split.test[-2]].tolist() == ["ZZ", "No", "99.25"]  # cells as the file spells them
    assert len(split.train) == 14 and split.labels.tolist() == [0] * 6 + [1, 1]
    assert split.X_train.shape == (14, 2 + 2 + 1)  # two levels per text column, one number
    unseen = split.X_test[-2]
    assert unseen[:2].tolist() == [0.0, 0.0]  # a State never seen in training: no level set
    np.testing.assert_allclose(split.X_train[:, -1].mean(), 0.0, atol=1e-12)
