import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vaeguard.errors import DataError
from vaeguard.metrics import evaluate, per_group_auroc, resampled_aurocs

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_tiny_case_by_hand():
    m = evaluate(Y, S)
    # pairs (anomaly > normal): .35>.1, .8>.1, .8>.4, but .35<.4 -> 3 of 4
    assert m["auroc"] == pytest.approx(0.75)
    # ranked .8(A) .4(N) .35(A) .1(N): AP = 0.5 * 1 + 0.5 * 2/3
    assert m["auprc"] == pytest.approx(0.5 + 1 / 3)
    # catching both anomalies needs threshold .35, which flags the normal at .4
    assert m["fpr_at_95_tpr"] == pytest.approx(0.5)
    assert m["tpr_at_1_fpr"] == pytest.approx(0.5)
    assert (m["n_samples"], m["n_anomalies"], m["n_normal"]) == (4, 2, 2)
    assert "threshold" not in m and "f1" not in m


def test_operating_points():
    normal = np.arange(100.0)  # 0..99
    anomalies = np.r_[np.arange(100.0, 118.0), 97.5, 49.5]  # 18 clear, one near the top, one buried
    y = np.r_[np.zeros(100), np.ones(20)]
    m = evaluate(y, np.r_[normal, anomalies], n_bootstrap=0)
    # 19 of 20 anomalies (95%) need threshold 97.5: normals 98 and 99 flagged
    assert m["fpr_at_95_tpr"] == pytest.approx(0.02)
    # at most 1 normal flagged (threshold 99) catches the 18 clear anomalies
    assert m["tpr_at_1_fpr"] == pytest.approx(0.9)
    assert m["auroc_ci_low"] is None


def test_threshold_metrics_and_confusion():
    m = evaluate(Y, S, threshold=0.3)  # flags .4 (normal), .35 and .8 (anomalies)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 0)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(0.8)
    assert m["fpr"] == pytest.approx(0.5)
    assert m["threshold"] == 0.3

    at = evaluate(Y, S, threshold=0.35)  # a score equal to the threshold is not flagged
    assert (at["tp"], at["fp"], at["tn"], at["fn"]) == (1, 1, 1, 1)

    nothing = evaluate(Y, S, threshold=5.0)
    assert (nothing["tp"], nothing["fp"], nothing["tn"], nothing["fn"]) == (0, 0, 2, 2)
    assert nothing["precision"] == 0.0 and nothing["f1"] == 0.0 and nothing["fpr"] == 0.0


def test_booleans_and_json_types():
    m = evaluate(np.array(Y, dtype=bool), np.array(S, dtype=np.float32), threshold=np.float32(0.3))
    assert m["auroc"] == pytest.approx(0.75) and m["tp"] == 2
    assert json.loads(json.dumps(m)) == m
    for key, value in m.items():
        assert type(value) in (int, float), key


def test_bootstrap_matches_explicit_resamples_with_ties():
    rng = np.random.default_rng(3)
    pos = np.round(rng.normal(1.0, 1.0, 30), 1)
    neg = np.round(rng.normal(0.0, 1.0, 70), 1)
    pos_idx = rng.integers(0, 30, size=(6, 30))
    neg_idx = rng.integers(0, 70, size=(6, 70))
    fast = resampled_aurocs(pos, neg, pos_idx, neg_idx)
    labels = np.r_[np.ones(30), np.zeros(70)]
    slow = [roc_auc_score(labels, np.r_[pos[pos_idx[b]], neg[neg_idx[b]]]) for b in range(6)]
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def _sample(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    return y, rng.normal(size=n) + 1.2 * y


def test_ci_contains_estimate_and_shrinks_with_data():
    small = evaluate(*_sample(150, 1))
    large = evaluate(*_sample(5000, 2))
    for m in (small, large):
        assert m["auroc_ci_low"] < m["auroc"] < m["auroc_ci_high"]
    assert large["auroc_ci_high"] - large["auroc_ci_low"] < 0.5 * (small["auroc_ci_high"] - small["auroc_ci_low"])
    again = evaluate(*_sample(150, 1))
    assert (again["auroc_ci_low"], again["auroc_ci_high"]) == (small["auroc_ci_low"], small["auroc_ci_high"])


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], r"only normal samples \(0\)"),
        ([1, 1], [0.1, 0.2], "only anomalies"),
        ([0, 1, 1], [0.1, 0.2], "y_true has 3 values but anomaly_scores has 2"),
        ([0, 1], [0.1, np.nan], "NaN or infinite.*index 1"),
        ([0, 2], [0.1, 0.2], "got 2 at index 1"),
        ([], [], "empty"),
    ],
)
def test_bad_input(y, scores, message):
    with pytest.raises(DataError, match=message):
        evaluate(y, scores)


def test_per_group_auroc():
    groups = np.array(["a", "b", "a", "b", "c", "c"], dtype=object)
    y = [0, 0, 1, 1, 1, 0]
    scores = [0.1, 0.2, 0.3, 0.05, 0.5, 0.4]  # normals: .1 .2 .4
    assert per_group_auroc(groups, y, scores) == pytest.approx({"a": 2 / 3, "b": 0.0, "c": 1.0})
    digits = per_group_auroc(np.array([0, 0, 7, 9]), [0, 0, 1, 1], S)
    assert digits == pytest.approx({"7": 0.5, "9": 1.0})
    with pytest.raises(DataError, match="groups has 2 values"):
        per_group_auroc(["a", "b"], y, scores)
