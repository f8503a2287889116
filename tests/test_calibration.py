"""Threshold rules, conformal p-values and the false-positive-rate guarantee."""

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from vaeguard import DataError, VAEAnomalyDetector
from vaeguard.atomic import atomic_write
from vaeguard.calibration import (
    conformal_threshold,
    is_flagged,
    describe_threshold_rule,
    label_threshold,
    p_values,
    threshold_for_contamination,
)


def test_conformal_threshold_is_the_ceil_quantile():
    scores = np.arange(1.0, 100.0)  # 99 scores: 1 .. 99
    # ceil((99 + 1) * 0.95) = 95 -> the 95th smallest
    assert conformal_threshold(scores[::-1], 0.05) == 95.0
    # ceil(100 * 0.99) = 99 -> the largest
    assert conformal_threshold(scores, 0.01) == 99.0


def test_conformal_threshold_needs_enough_scores():
    with pytest.raises(DataError, match="too few .* at least 99"):
        conformal_threshold(np.arange(50.0), 0.01)
    with pytest.raises(ValueError, match="fpr"):
        conformal_threshold(np.arange(50.0), 1.5)


def test_p_values_follow_the_definition():
    cal = np.array([1.0, 2.0, 2.0, 5.0])
    got = p_values(cal, [0.0, 2.0, 3.0, 9.0])
    # (1 + #{cal >= s}) / (n + 1)
    np.testing.assert_allclose(got, [5 / 5, 4 / 5, 2 / 5, 1 / 5])


def test_p_values_are_uniform_for_exchangeable_scores():
    rng = np.random.default_rng(0)
    cal, new = rng.normal(size=2000), rng.normal(size=4000)
    p = p_values(cal, new)
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.015
    assert abs(np.mean(p <= 0.5) - 0.5) < 0.03


def test_contamination_flags_that_share():
    scores = np.arange(1000.0)
    threshold = threshold_for_contamination(scores, 0.1)
    assert np.mean(scores > threshold) == pytest.approx(0.1, abs=0.002)


@pytest.fixture
def labelled():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.6, 0.8, 0.9])
    return y, s


def flags_from(scores, lowest_flagged: float):
    """A label threshold flags (score > threshold) exactly the scores >= lowest_flagged."""
    return lambda threshold: is_flagged(scores, threshold).tolist() == (scores >= lowest_flagged).tolist()


def test_label_threshold_f1(labelled):
    y, s = labelled
    # flag >= 0.6: tp 3, fp 1 -> F1 6/7; >= 0.8: tp 2, fp 0 -> F1 0.8; >= 0.7 -> 2/3
    assert flags_from(s, 0.6)(label_threshold(y, s, "f1"))


def test_label_threshold_youden(labelled):
    y, s = labelled
    # >= 0.8: tpr 2/3, fpr 0 -> J 0.667; >= 0.6: tpr 1, fpr 1/4 -> J 0.75
    assert flags_from(s, 0.6)(label_threshold(y, s, "youden"))


def test_label_threshold_recall(labelled):
    y, s = labelled
    assert flags_from(s, 0.8)(label_threshold(y, s, "recall", recall=0.6))
    assert flags_from(s, 0.6)(label_threshold(y, s, "recall", recall=1.0))
    with pytest.raises(ValueError, match="recall"):
        label_threshold(y, s, "recall")


def test_label_threshold_without_anomalies_says_so():
    with pytest.raises(DataError, match="no anomaly"):
        label_threshold(np.zeros(5), np.arange(5.0), "f1")
    with pytest.raises(ValueError, match="rule"):
        label_threshold([0, 1], [0.0, 1.0], "best")


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ({"rule": "fpr", "fpr": 0.01, "n_calibration": 90}, "1% false-positive target (conformal) on 90 calibration scores"),
        ({"rule": "contamination", "contamination": 0.05}, "flags 5% of the training data (contamination)"),
        ({"rule": "f1", "recall": None, "n_labelled": 40}, "maximises F1 on 40 labelled samples"),
        ({"rule": "youden", "recall": None, "n_labelled": 40}, "maximises Youden's J on 40 labelled samples"),
        ({"rule": "recall", "recall": 0.9, "n_labelled": 40}, "reaches recall 0.9 on 40 labelled samples"),
    ],
)
def test_threshold_rules_read_as_sentences(rule, text):
    assert describe_threshold_rule(rule) == text


def test_fpr_target_holds_on_unseen_normals():
    """5% target: the rate measured on held-out normal digits lies within binomial noise."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_fit, X_held = train_test_split(X, test_size=0.5, stratify=y, random_state=1)
    detector = VAEAnomalyDetector(
        hidden_dims=(64,), latent_dim=8, epochs=30, calibration_fraction=0.4, fpr=0.05, random_state=0
    ).fit(X_fit)
    n_cal, n_test = len(detector.calibration_scores_), len(X_held)
    measured = np.mean(detector.predict(X_held) == -1)
    noise = math.sqrt(0.05 * 0.95 * (1 / n_cal + 1 / n_test))
    assert abs(measured - 0.05) < 3 * noise, (measured, noise)

    # re-thresholding on the stored calibration scores moves the rate with the target
    detector.set_threshold(fpr=0.2)
    assert abs(np.mean(detector.predict(X_held) == -1) - 0.2) < 3 * math.sqrt(0.2 * 0.8 * (1 / n_cal + 1 / n_test))


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as fh:
        fh.write("new")
    assert target.read_text() == "new"


def _invoke(*args) -> str:
    from typer.testing import CliRunner

    from vaeguard.cli import app

    result = CliRunner().invoke(app, ["-q", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def labelled_model(tmp_path_factory):
    """A table model trained with `--label-column label`, and new labelled data (c = a + b
    holds for the normal rows and is broken by 8 for the anomalies)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)

    def rows(n: int, label: int) -> pd.DataFrame:
        z = rng.normal(size=(n, 2))
        return pd.DataFrame({"a": z[:, 0], "b": z[:, 1], "c": z.sum(1) + 8.0 * label, "label": label})

    rows(400, 0).to_csv(root / "train.csv", index=False)
    _invoke("train", root / "train.csv", "-o", root / "m.vgm", "--label-column", "label", "--hidden-dims", "16", "--latent-dim", "2", "--epochs", "20", "--seed", "0")
    new = pd.concat([rows(300, 0), rows(100, 1)], ignore_index=True)
    return root, new


def test_calibrate_uses_the_label_column_stored_in_the_model(labelled_model, tmp_path):
    """`calibrate MODEL DATA` on data holding the stored label column thresholds on the rows
    labelled normal: the anomalies are left out, not taken for normal data."""
    root, new = labelled_model
    new.to_csv(tmp_path / "new.csv", index=False)
    out = _invoke("calibrate", root / "m.vgm", tmp_path / "new.csv", "--fpr", "0.05", "-o", tmp_path / "cal.vgm")
    assert "note: calibrated on the 300 rows labelled normal in column 'label'; left out 100 labelled as anomalies" in out
    normal_rows = new.loc[new["label"] == 0, ["a", "b", "c"]]
    expected = VAEAnomalyDetector.load(root / "m.vgm").calibrate(normal_rows, fpr=0.05)
    calibrated = VAEAnomalyDetector.load(tmp_path / "cal.vgm")
    assert calibrated.threshold_ == expected.threshold_
    np.testing.assert_array_equal(calibrated.calibration_scores_, expected.calibration_scores_)
    assert calibrated.threshold_rule_["n_calibration"] == 300
    # the anomalies taken for normal data would have raised the threshold above most of them
    everything = VAEAnomalyDetector.load(root / "m.vgm").calibrate(new[["a", "b", "c"]], fpr=0.05)
    anomalies = calibrated.anomaly_score(new.loc[new["label"] == 1, ["a", "b", "c"]])
    assert (anomalies > calibrated.threshold_).mean() > 0.9 > (anomalies > everything.threshold_).mean()


def test_calibrate_without_the_label_column_takes_every_row_as_normal(labelled_model, tmp_path):
    root, new = labelled_model
    normal_rows = new.loc[new["label"] == 0, ["a", "b", "c"]]
    normal_rows.to_csv(tmp_path / "recent.csv", index=False)
    out = _invoke("calibrate", root / "m.vgm", tmp_path / "recent.csv", "--fpr", "0.05", "-o", tmp_path / "cal.vgm")
    assert "note:" not in out
    expected = VAEAnomalyDetector.load(root / "m.vgm").calibrate(normal_rows, fpr=0.05)
    assert VAEAnomalyDetector.load(tmp_path / "cal.vgm").threshold_ == expected.threshold_


def test_calibrate_refuses_an_infinite_score_in_the_words_of_score(labelled_model, tmp_path):
    """`score` flags a row whose score is not finite; `calibrate` refuses it (no threshold is
    learned from it) with the same reason, naming the file and the row."""
    import pandas as pd
    from typer.testing import CliRunner

    from vaeguard.cli import app

    root, new = labelled_model
    broken = new.copy()
    broken.loc[4, "a"] = 3e38
    broken.to_csv(tmp_path / "broken.csv", index=False)
    _invoke("score", root / "m.vgm", tmp_path / "broken.csv", "-o", tmp_path / "s.csv")
    reason = pd.read_csv(tmp_path / "s.csv", keep_default_na=False).loc[4, "error"]
    assert reason == "score is not finite (values far outside the training data): flagged"
    before = (root / "m.vgm").read_bytes()
    for extra in ([], ["--label-column", "label"]):
        result = CliRunner().invoke(app, ["-q", "calibrate", str(root / "m.vgm"), str(tmp_path / "broken.csv"), *extra])
        assert result.exit_code == 1
        assert result.output.startswith(f"error: {tmp_path / 'broken.csv'}: row 5: {reason.removesuffix(': flagged')}; 1 of ")
        assert "samples score NaN or infinity" in result.output and len(result.output.strip().splitlines()) == 1
    assert (root / "m.vgm").read_bytes() == before
