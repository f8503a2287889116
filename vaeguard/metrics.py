"""Detection metrics from labels (1 = anomaly) and anomaly scores (higher = more anomalous).

Everything returned is plain Python (float, int, str) so it can go straight into JSON.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from .calibration import is_flagged
from .errors import DataError

TARGET_TPR = 0.95
TARGET_FPR = 0.01
CI_LEVEL = 0.95
_BOOTSTRAP_CHUNK = 100


def check_labels_scores(y_true, anomaly_scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores; return them as int (0/1) and float64 1-D arrays."""
    y = np.asarray(y_true).ravel()
    scores = np.asarray(anomaly_scores).ravel()
    if y.size == 0:
        raise DataError("y_true is empty")
    if y.shape != scores.shape:
        raise DataError(f"y_true has {y.size} values but anomaly_scores has {scores.size}")
    try:
        scores = scores.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"anomaly_scores are not numbers: {exc}") from None
    bad = ~np.isfinite(scores)
    if bad.any():
        raise DataError(
            f"anomaly_scores hold {int(bad.sum())} NaN or infinite values (first at index {int(np.argmax(bad))})"
        )
    if y.dtype != bool:
        try:
            y_num = y.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"y_true must hold 0 (normal) and 1 (anomaly), got values like {y[:1].tolist()[0]!r}") from None
        odd = ~np.isin(y_num, (0.0, 1.0))
        if odd.any():
            first = int(np.argmax(odd))
            value = y[first].item() if isinstance(y[first], np.generic) else y[first]
            raise DataError(f"y_true must hold 0 (normal) and 1 (anomaly), got {value!r} at index {first}")
        y = y_num
    y = y.astype(np.int64)
    n_anomalies = int(y.sum())
    if n_anomalies == 0:
        raise DataError("y_true holds only normal samples (0); metrics need at least one anomaly (1)")
    if n_anomalies == y.size:
        raise DataError("y_true holds only anomalies (1); metrics need at least one normal sample (0)")
    return y, scores


def resampled_aurocs(pos_scores: np.ndarray, neg_scores: np.ndarray, pos_idx: np.ndarray, neg_idx: np.ndarray) -> np.ndarray:
    """AUROC of each resample: row b takes pos_scores[pos_idx[b]] against neg_scores[neg_idx[b]].

    Rather than sorting every resample, the negatives are sorted once; each resample becomes
    a count per negative, and the cumulative counts at each positive's insertion points give
    how many resampled negatives lie below (and tie with) it: the Mann-Whitney statistic.
    """
    n_boot, n_pos = pos_idx.shape
    n_neg = neg_idx.shape[1]
    order = np.argsort(neg_scores, kind="stable")
    sorted_neg = neg_scores[order]
    rank_of = np.empty(n_neg, dtype=np.int64)
    rank_of[order] = np.arange(n_neg)
    below = np.searchsorted(sorted_neg, pos_scores, side="left")
    up_to = np.searchsorted(sorted_neg, pos_scores, side="right")
    rows = np.arange(n_boot)[:, None]
    neg_counts = np.bincount((rank_of[neg_idx] + rows * n_neg).ravel(), minlength=n_boot * n_neg).reshape(n_boot, n_neg)
    cum = np.zeros((n_boot, n_neg + 1), dtype=np.float64)
    np.cumsum(neg_counts, axis=1, out=cum[:, 1:])
    pos_counts = np.bincount((pos_idx + rows * n_pos).ravel(), minlength=n_boot * len(pos_scores)).reshape(n_boot, -1)
    wins = 0.5 * (cum[:, below] + cum[:, up_to])
    return (pos_counts * wins).sum(axis=1) / (n_pos * n_neg)


def bootstrap_auroc_ci(
    y: np.ndarray, scores: np.ndarray, n_bootstrap: int = 1000, random_state: int | None = 0, level: float = CI_LEVEL
) -> tuple[float, float]:
    """Percentile confidence interval of the AUROC from stratified bootstrap resamples.

    Positives and negatives are resampled separately, so every resample keeps both classes
    and its class balance.
    """
    pos, neg = scores[y == 1], scores[y == 0]
    rng = np.random.default_rng(random_state)
    aurocs = []
    for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_bootstrap - start)
        pos_idx = rng.integers(0, len(pos), size=(size, len(pos)))
        neg_idx = rng.integers(0, len(neg), size=(size, len(neg)))
        aurocs.append(resampled_aurocs(pos, neg, pos_idx, neg_idx))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(np.concatenate(aurocs), [tail, 100.0 - tail])
    return float(low), float(high)


def threshold_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1, false-positive rate and confusion counts of `is_flagged`."""
    flagged = is_flagged(scores, threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, flagged, labels=[0, 1]).ravel())
    precision, recall, f1, _ = precision_recall_fscore_support(y, flagged, average="binary", zero_division=0)
    return {
        "threshold": float(threshold),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "fpr": fp / (fp + tn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def evaluate(y_true, anomaly_scores, threshold: float | None = None, *, n_bootstrap: int = 1000, random_state: int | None = 0) -> dict:
    """Ranking metrics (AUROC with a bootstrap CI, AUPRC, FPR at 95% TPR, TPR at 1% FPR).

    With a threshold, also the metrics of flagging score > threshold (`is_flagged`). `y_true` holds
    1 (or True) for anomalies and 0 for normal samples; both classes must be present.
    """
    y, scores = check_labels_scores(y_true, anomaly_scores)
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    metrics: dict = {
        "auroc": float(roc_auc_score(y, scores)),
        "auprc": float(average_precision_score(y, scores)),
        "fpr_at_95_tpr": float(fpr[tpr >= TARGET_TPR - 1e-12].min()),
        "tpr_at_1_fpr": float(tpr[fpr <= TARGET_FPR + 1e-12].max()),
    }
    if n_bootstrap > 0:
        metrics["auroc_ci_low"], metrics["auroc_ci_high"] = bootstrap_auroc_ci(y, scores, n_bootstrap, random_state)
    else:
        metrics["auroc_ci_low"] = metrics["auroc_ci_high"] = None
    metrics.update(n_samples=int(y.size), n_anomalies=int(y.sum()), n_normal=int(y.size - y.sum()))
    if threshold is not None:
        threshold = float(threshold)
        if np.isnan(threshold):
            raise DataError("threshold is NaN")
        metrics.update(threshold_metrics(y, scores, threshold))
    return metrics


def _sorted_unique(values: np.ndarray) -> list:
    try:
        return list(np.unique(values))
    except TypeError:  # mixed types, e.g. strings and numbers in an object array
        return sorted(set(values.tolist()), key=str)


def per_group_auroc(groups, y_true, anomaly_scores) -> dict[str, float]:
    """AUROC of each anomalous group's samples against all normal samples, keyed by str(group).

    Only samples with y_true == 1 count for a group, so a label that mixes both classes is
    judged on its anomalies. Answers "which kinds of anomaly does the model miss?".
    """
    y, scores = check_labels_scores(y_true, anomaly_scores)
    groups = np.asarray(groups).ravel()
    if groups.shape != y.shape:
        raise DataError(f"groups has {groups.size} values but y_true has {y.size}")
    normal = scores[y == 0]
    result: dict[str, float] = {}
    anomalous = y == 1
    for group in _sorted_unique(groups[anomalous]):
        group_scores = scores[anomalous & (groups == group)]
        labels = np.r_[np.zeros(len(normal)), np.ones(len(group_scores))]
        result[str(group.item() if isinstance(group, np.generic) else group)] = float(
            roc_auc_score(labels, np.r_[normal, group_scores])
        )
    return result
