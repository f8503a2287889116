"""Bulk scoring from Python: score_frame, score_file, and one meaning of "flagged" everywhere."""

import json

import numpy as np
import pandas as pd
import pytest

from vaeguard import DataError, VAEAnomalyDetector
from vaeguard.bulk import SCORE_COLUMNS, score_file, score_frame
from vaeguard.metrics import evaluate
from vaeguard.report import write_report

COLUMNS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def frame_detector():
    """Fitted in Python on a DataFrame: no CLI, no file."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 2))
    normal = pd.DataFrame(np.column_stack([z[:, 0], z[:, 1], z[:, 0] + z[:, 1]]), columns=COLUMNS)
    det = VAEAnomalyDetector(latent_dim=2, hidden_dims=(16,), epochs=30, random_state=0, device="cpu")
    return det.fit(normal), normal


def test_a_detector_fitted_in_python_scores_a_csv_like_score_frame(frame_detector, tmp_path):
    det, normal = frame_detector
    test = normal.iloc[:50].copy()
    test.loc[test.index[:5], "c"] += 8.0  # breaks the c = a + b relation
    test.insert(0, "note", "x")  # an extra column is ignored
    path = test.to_csv(tmp_path / "t.csv", index=False) or tmp_path / "t.csv"
    summary = score_file(det, path, tmp_path / "scores.csv", chunk_size=7)
    from_file = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    from_frame = score_frame(det, test)
    assert list(from_file.columns) == ["row", *SCORE_COLUMNS]
    assert list(from_frame.columns) == list(SCORE_COLUMNS)
    np.testing.assert_allclose(from_file["score"], from_frame["score"], rtol=1e-5)  # the file keeps 6 digits
    assert from_file["is_anomaly"].tolist() == from_frame["is_anomaly"].tolist()
    assert from_frame["is_anomaly"].iloc[:5].tolist() == [1] * 5
    assert from_frame["is_anomaly"].iloc[5:].sum() <= 3  # ~1% false-positive target on 45 normals
    assert set(from_frame["top_1"].iloc[:5]) <= set(COLUMNS)
    assert summary.n_scored == 50 and any("ignored 1 extra column" in note for note in summary.notes)


def test_score_frame_keeps_the_index_and_names_bad_cells(frame_detector):
    det, normal = frame_detector
    frame = normal.iloc[:4].astype(object).set_axis([10, 11, 12, 13])
    frame.loc[11, "b"] = "oops"
    frame.loc[13, "a"] = np.inf
    out = score_frame(det, frame)
    assert out.index.tolist() == [10, 11, 12, 13]
    assert out.loc[11, "error"] == "column 'b': 'oops' is not a number"
    assert "column 'a'" in out.loc[13, "error"]
    assert out["is_anomaly"].isna().tolist() == [False, True, False, True]
    assert np.isnan(out.loc[11, "score"]) and out.loc[10, "error"] == ""
    with pytest.raises(DataError, match="'c'"):
        score_frame(det, normal.drop(columns="c"))


def test_a_row_exactly_at_the_threshold_is_normal_everywhere(frame_detector, tmp_path):
    """predict, bulk scoring, metrics and the report share one definition of flagged."""
    det, normal = frame_detector
    det = VAEAnomalyDetector(**det.get_params()).fit(normal)
    row = normal.iloc[[3]]
    at = float(det.anomaly_score(row)[0])
    det.calibrate_scores(np.full(200, at), fpr=0.01)  # every calibration score equals it
    assert det.threshold_ == at
    assert det.predict(row).tolist() == [1]
    assert score_frame(det, row)["is_anomaly"].tolist() == [0]
    path = tmp_path / "row.csv"
    row.to_csv(path, index=False)
    score_file(det, path, tmp_path / "scores.csv")
    assert pd.read_csv(tmp_path / "scores.csv")["is_anomaly"].tolist() == [0]
    y, scores = [0, 1], [at, at + 1.0]
    assert evaluate(y, scores, det.threshold_, n_bootstrap=0)["fp"] == 0
    write_report(tmp_path / "report", y, scores, threshold=det.threshold_)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["fp"] == 0
    # and a score just above it is flagged by all of them
    above = np.nextafter(at, np.inf)
    assert evaluate(y, [above, at + 1.0], det.threshold_, n_bootstrap=0)["fp"] == 1


def test_an_image_model_refuses_a_table(tmp_path):
    X = np.random.default_rng(0).random((60, 64))
    det = VAEAnomalyDetector(latent_dim=2, hidden_dims=(8,), epochs=1, input_shape=(1, 8, 8), random_state=0, device="cpu").fit(X)
    with pytest.raises(DataError, match="trained on images"):
        score_frame(det, pd.DataFrame(X))
    path = tmp_path / "t.csv"
    pd.DataFrame(X).to_csv(path, index=False)
    with pytest.raises(DataError, match="folder of images"):
        score_file(det, path, tmp_path / "out.csv")


def test_a_scorer_loaded_from_the_file_scores_like_the_detector(frame_detector, tmp_path):
    from vaeguard.scorer import Scorer

    det, normal = frame_detector
    det.save(tmp_path / "m.vgm")
    scorer = Scorer.load(tmp_path / "m.vgm", device="cpu")
    rows = normal.iloc[:40]
    np.testing.assert_array_equal(scorer.anomaly_score(rows.to_numpy()), det.anomaly_score(rows))
    pd.testing.assert_frame_equal(score_frame(scorer, rows), score_frame(det, rows))
    assert scorer.threshold == det.threshold_ and scorer.calibration_scores.tolist() == det.calibration_scores_.tolist()
    with pytest.raises(DataError, match="rows of 3 features"):
        scorer.anomaly_score(np.zeros((2, 4)))


def test_scoring_a_file_never_imports_scikit_learn(frame_detector, tmp_path):
    """`vaeguard score` loads a Scorer, not the estimator: scikit-learn (and the scipy.stats
    it imports) would add about 60 MB to every scoring process."""
    import subprocess
    import sys

    det, normal = frame_detector
    det.save(tmp_path / "m.vgm")
    normal.iloc[:20].to_csv(tmp_path / "t.csv", index=False)
    code = (
        "import sys; from vaeguard.cli import app\n"
        f"sys.argv = ['vaeguard', '-q', 'score', {str(tmp_path / 'm.vgm')!r}, {str(tmp_path / 't.csv')!r}, "
        f"'-o', {str(tmp_path / 's.csv')!r}, '--device', 'cpu']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert len(pd.read_csv(tmp_path / "s.csv")) == 20


def test_a_scorer_rejects_what_the_model_cannot_score(tmp_path):
    import torch

    from vaeguard.scorer import Scorer

    X = np.random.default_rng(0).uniform(size=(120, 4))
    VAEAnomalyDetector(likelihood="bernoulli", latent_dim=2, hidden_dims=(8,), epochs=2, random_state=0, device="cpu").fit(X).save(tmp_path / "b.vgm")
    scorer = Scorer.load(tmp_path / "b.vgm", device="cpu")
    with pytest.raises(DataError, match=r"needs values in \[0, 1\]; row 1, column 'x2' holds 1.5"):
        scorer.anomaly_score(np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 1.5, 0.4]]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Scorer.load(tmp_path / "b.vgm", device="cuda")
