"""Missing cells: the model learns from the cells present and scores the cells present.

A row with gaps is scored from its other cells, scaled to the full row, so that rows with
different numbers of gaps share one threshold; complete rows score as they always did.
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from vaeguard import VAEAnomalyDetector
from vaeguard.bulk import score_frame
from vaeguard.scorer import Scorer

COLUMNS = ["a", "b", "c", "d", "e", "f"]


def correlated(n: int, rng, shift: float = 0.0) -> np.ndarray:
    """Six columns driven by two factors: a gap can be filled in from the other cells."""
    z = rng.normal(size=(n, 2))
    X = np.column_stack([z[:, 0], z[:, 0] + z[:, 1], z[:, 1], 2 * z[:, 0], z[:, 1] - z[:, 0], z[:, 0] + 0.5 * z[:, 1]])
    X = X + 0.1 * rng.normal(size=X.shape)
    if shift:
        X[:, 1] += shift  # breaks the relation between the columns, not their ranges
    return X


def blank(X: np.ndarray, share: float, rng) -> np.ndarray:
    """X with `share` of its cells missing, at least one cell kept per row."""
    X = X.copy()
    gaps = rng.random(X.shape) < share
    gaps[gaps.all(axis=1), 0] = False
    X[gaps] = np.nan
    return X


@pytest.fixture(scope="module")
def gappy_detector():
    rng = np.random.default_rng(0)
    train = blank(correlated(3000, rng), 0.2, rng)  # 600 calibration rows
    det = VAEAnomalyDetector(epochs=40, fpr=0.05, random_state=0).fit(pd.DataFrame(train, columns=COLUMNS))
    return det, rng


def test_a_model_fitted_on_gaps_separates_anomalies_with_gaps(gappy_detector):
    det, rng = gappy_detector
    normal = blank(correlated(400, rng), 0.2, rng)
    odd = blank(correlated(400, rng, shift=3.0), 0.2, rng)
    scores = det.anomaly_score(pd.DataFrame(np.vstack([normal, odd]), columns=COLUMNS))
    assert np.isfinite(scores).all()
    assert roc_auc_score(np.r_[np.zeros(400), np.ones(400)], scores) > 0.85


def test_the_threshold_keeps_its_false_positive_rate_on_rows_with_gaps(gappy_detector):
    """Conformal at fpr=0.05 on 600 calibration rows with 20% gaps: held-out normals with gaps
    are flagged at about 5% (the realised rate varies with the calibration set: its standard
    deviation is sqrt(0.05 * 0.95 / 600) = 0.009). Complete rows and rows with half their
    cells missing are both flagged: an unscaled sum over the cells present would never flag
    the latter; scaled by d / present they are flagged somewhat more often (README, "Missing cells")."""
    det, rng = gappy_detector
    held_out = blank(correlated(4000, rng), 0.2, rng)
    flagged = det.predict(pd.DataFrame(held_out, columns=COLUMNS)) == -1
    assert 0.05 - 0.03 < flagged.mean() < 0.05 + 0.03
    n_missing = np.isnan(held_out).sum(axis=1)
    for few, many, high in ((0, 0, 0.08), (2, 3, 0.12)):
        rows = (n_missing >= few) & (n_missing <= many)
        assert rows.sum() > 300 and 0.015 < flagged[rows].mean() < high, (few, many, flagged[rows].mean())


def test_a_complete_row_scores_the_same_beside_rows_with_gaps(gappy_detector, tmp_path):
    det, rng = gappy_detector
    rows = correlated(5, rng)
    alone = det.anomaly_score(rows)
    rows_with_gap = np.vstack([rows, rows[:1]])
    rows_with_gap[-1, 2] = np.nan
    together = det.anomaly_score(rows_with_gap)
    np.testing.assert_array_equal(together[:5], alone)
    assert np.isfinite(together[-1]) and together[-1] != alone[0]
    det.save(tmp_path / "m.vgm")
    loaded = Scorer.load(tmp_path / "m.vgm", device="cpu")
    frame = pd.DataFrame(rows_with_gap, columns=COLUMNS)
    np.testing.assert_array_equal(loaded.anomaly_score(rows_with_gap), together)
    np.testing.assert_array_equal(score_frame(loaded, frame)["score"].to_numpy(), together)


def test_a_gap_contributes_nothing_and_is_never_a_top_feature(gappy_detector):
    det, rng = gappy_detector
    row = correlated(1, rng)
    row[0, 3] = np.nan
    features = det.feature_scores(row)
    assert features[0, 3] == 0.0 and np.isfinite(features).all()
    assert "d" not in score_frame(det, pd.DataFrame(row, columns=COLUMNS))[["top_1", "top_2", "top_3"]].to_numpy()
