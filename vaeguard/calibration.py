"""Thresholds and p-values from anomaly scores (higher = more anomalous).

From normal data only: the conformal threshold at a target false-positive rate and conformal
p-values. With labels (1 = anomaly): thresholds maximising F1 or Youden's J, or reaching a
target recall. `is_flagged` is the one definition of what a threshold flags, used by the
estimator, bulk scoring, metrics and reports alike.
"""

from __future__ import annotations

import math

import numpy as np
from .errors import DataError
from .inputs import NOT_FINITE

LABEL_RULES = ("f1", "youden", "recall")
# Why a sample's score is NaN or infinite: bulk output notes it beside the flag, calibration
# refuses it in the same words.


def _scores(scores, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise DataError(f"{name} is empty")
    if not np.all(np.isfinite(scores)):
        raise DataError(f"{name} holds {int((~np.isfinite(scores)).sum())} NaN or infinite values")
    return scores


def check_rate(value, name: str = "fpr") -> float:
    """`value` as a float strictly between 0 and 1; ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value}")
    return float(value)


def is_flagged(scores, threshold: float) -> np.ndarray:
    """True where a sample is flagged: its score exceeds the threshold, or is not finite.

    A score equal to the threshold is not flagged (scikit-learn's decision_function < 0), and
    a NaN or infinite score is never reported as normal.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return (scores > threshold) | ~np.isfinite(scores)


def refuse_broken_scores(scores, where=None) -> None:
    """DataError naming the first NaN or infinite score: a threshold is never learned from one.

    `where(i)` names sample i (e.g. a file and row); by default "sample i (counting from 0)".
    """
    scores = np.asarray(scores, dtype=np.float64)
    broken = ~np.isfinite(scores)
    if broken.any():
        i = int(np.argmax(broken))
        name = where(i) if where is not None else f"sample {i} (counting from 0)"
        raise DataError(
            f"{name}: {NOT_FINITE}; {int(broken.sum())} of {len(scores)} samples score NaN or infinity, "
            "and no threshold is learned from them: remove them before calibrating"
        )


def conformal_threshold(calibration_scores, fpr: float) -> float:
    """The ceil((n + 1)(1 - fpr))-th smallest calibration score.

    A new normal sample exceeds it with probability at most `fpr` (exchangeability). Raises
    DataError when n is too small for the target, i.e. when (n + 1)(1 - fpr) > n.
    """
    fpr = check_rate(fpr)
    scores = np.sort(_scores(calibration_scores, "calibration scores"))
    n = len(scores)
    k = math.ceil((n + 1) * (1 - fpr) - 1e-9)
    if k > n:
        raise DataError(
            f"{n} calibration scores are too few for a false-positive rate of {fpr:g}: "
            f"at least {math.ceil(1 / fpr - 1)} are needed"
        )
    return float(scores[k - 1])


def p_values(calibration_scores, scores) -> np.ndarray:
    """Conformal p-values (1 + #{calibration scores >= s}) / (n + 1); small = unlike normal.

    A NaN or infinite score gets p-value 0.
    """
    cal = np.sort(_scores(calibration_scores, "calibration scores"))
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_at_least = len(cal) - np.searchsorted(cal, scores, side="left")
    # A score that is not finite says nothing about normality: never call it normal.
    return np.where(np.isfinite(scores), (1.0 + n_at_least) / (len(cal) + 1.0), 0.0)


def threshold_for_contamination(train_scores, contamination: float) -> float:
    """The threshold that flags a `contamination` share of the training scores (sklearn's rule)."""
    if not 0 < contamination <= 0.5:
        raise ValueError(f"contamination must be 'auto' or a float in (0, 0.5], got {contamination!r}")
    return float(np.percentile(_scores(train_scores, "training scores"), 100.0 * (1.0 - contamination)))


def label_threshold(y_true, scores, rule: str = "f1", recall: float | None = None) -> float:
    """A threshold chosen with labels (1 = anomaly), for `is_flagged` (score > threshold).

    rule="f1" maximises F1, rule="youden" maximises TPR - FPR, rule="recall" returns the
    largest threshold whose recall reaches `recall`. scikit-learn's curves flag
    score >= t; the threshold returned is the float just below t, which flags the same samples.
    """
    return float(np.nextafter(_curve_threshold(y_true, scores, rule, recall), -np.inf))


def _curve_threshold(y_true, scores, rule: str, recall: float | None) -> float:
    from sklearn.metrics import precision_recall_curve, roc_curve  # here: `vaeguard info` needs no sklearn
    scores = _scores(scores)
    y = np.asarray(y_true).ravel()
    if y.shape != scores.shape:
        raise DataError(f"y has {y.size} labels but there are {scores.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"labels must be 0 (normal) or 1 (anomaly), got {sorted(set(y.tolist()))[:5]}")
    if not (y == 1).any():
        raise DataError("the labelled data holds no anomaly (no y == 1): a label-aware threshold is undefined; use fpr= on normal data instead")
    if not (y == 0).any():
        raise DataError("every label is 1 (anomaly): a label-aware threshold needs normal samples (label 0) too")
    if rule == "f1":
        precision, rec, thresholds = precision_recall_curve(y, scores)
        f1 = 2 * precision[:-1] * rec[:-1] / np.maximum(precision[:-1] + rec[:-1], 1e-12)
        return float(thresholds[int(np.argmax(f1))])
    fpr_curve, tpr, thresholds = roc_curve(y, scores)
    finite = np.isfinite(thresholds)
    fpr_curve, tpr, thresholds = fpr_curve[finite], tpr[finite], thresholds[finite]
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr_curve))])
    if rule == "recall":
        if recall is None or not 0 < recall <= 1:
            raise ValueError(f"rule='recall' needs recall in (0, 1], got {recall!r}")
        return float(thresholds[int(np.argmax(tpr >= recall - 1e-12))])
    raise ValueError(f"rule must be one of {', '.join(LABEL_RULES)}; got {rule!r}")


def describe_threshold_rule(rule: dict) -> str:
    """One line a report reader understands, e.g. '1% false-positive target (conformal) on 90 calibration scores'."""
    kind = rule.get("rule")
    if kind == "fpr":
        return f"{100 * rule['fpr']:.3g}% false-positive target (conformal) on {rule['n_calibration']} calibration scores"
    if kind == "contamination":
        return f"flags {100 * rule['contamination']:.3g}% of the training data (contamination)"
    if kind == "recall":
        return f"reaches recall {rule['recall']:.3g} on {rule['n_labelled']} labelled samples"
    names = {"f1": "maximises F1", "youden": "maximises Youden's J"}
    return f"{names.get(kind, kind)} on {rule.get('n_labelled')} labelled samples"
