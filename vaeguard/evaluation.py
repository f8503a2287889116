"""Evaluation of a fitted detector on labelled data: scores, metrics and a report."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .bulk import score_labelled
from .calibration import describe_threshold_rule
from .inputs import NOT_FINITE
from .estimator import VAEAnomalyDetector
from .gallery import image_gallery, table_gallery
from .report import N_WORST, write_report
from .sources import Source, open_source

# Normal inputs the report's generative section draws on: images to interpolate between, or
# table rows whose per-feature distributions the model's samples are compared with.
N_GALLERY_IMAGES = 200
N_GALLERY_ROWS = 2000


def _gallery(detector: VAEAnomalyDetector, source: Source, scored, on_bad_row: str) -> dict | None:
    """The report's generative section from the labelled data's normal (and anomalous) inputs."""
    normal = np.flatnonzero(scored.is_anomaly == 0)
    if len(normal) < 2:
        return None
    spec = detector.input_spec_
    if spec.image_shape is None:
        return table_gallery(detector, source.load(spec, [scored.keys[i] for i in normal[:N_GALLERY_ROWS]], on_bad_row=on_bad_row))
    rng = np.random.default_rng(0)
    picks = rng.permutation(normal)[:N_GALLERY_IMAGES]
    anomalies = rng.permutation(np.flatnonzero(scored.is_anomaly == 1))[:4]

    def load(indices):
        return source.load(spec, [scored.keys[i] for i in indices]) if len(indices) else None

    return image_gallery(
        detector, spec.image_shape, load(picks), load(anomalies),
        normal_labels=scored.groups[picks], anomaly_labels=scored.groups[anomalies],
    )


def ranked_scores(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Scores for the metrics: a NaN or infinite score, which `score` flags, stands in as a
    finite value above every finite score and the threshold, so it counts as a flagged anomaly
    and ranks as the most anomalous sample."""
    broken = ~np.isfinite(scores)
    if not broken.any():
        return scores
    finite = scores[~broken]
    top = max(threshold, float(finite.max())) if len(finite) else threshold
    return np.where(broken, np.nextafter(top, np.inf), scores)


def evaluate_data(
    detector: VAEAnomalyDetector,
    path: str | Path,
    out_dir: str | Path,
    *,
    label_column: str | None = None,
    normal_label: str | None = None,
    on_bad_row: str = "fail",
) -> dict:
    """Score labelled data (see bulk.score_labelled) and write a report into `out_dir`.

    Per-group AUROC compares each anomalous label value with all normal samples. For image
    folders the report also shows the most anomalous images beside their reconstructions.
    Its generative section shows samples, interpolations and traversals (images) or sampled
    against real per-feature distributions of the normal rows (tables). A NaN or infinite score
    is flagged and ranked as the most anomalous, as `vaeguard score` flags it, with a warning.
    """
    path = Path(path)
    source = open_source(path)
    scored = score_labelled(detector, source, label_column=label_column, normal_label=normal_label, on_bad_row=on_bad_row)
    n_broken = int((~np.isfinite(scored.scores)).sum())
    if n_broken:
        warnings.warn(
            f"{path}: {n_broken} sample(s): {NOT_FINITE}: flagged as anomalous and ranked above every finite score",
            UserWarning,
            stacklevel=2,
        )
    scores = ranked_scores(scored.scores, detector.threshold_)
    images = None
    spec = detector.input_spec_
    if spec.image_shape is not None and len(scores):
        worst = np.argsort(scores)[::-1][:N_WORST]
        shape = spec.image_shape
        X = source.load(spec, [scored.keys[i] for i in worst])
        channels_last = (-1, shape[1], shape[2], shape[0]) if shape[0] > 1 else (-1, shape[1], shape[2])

        def as_images(flat: np.ndarray) -> np.ndarray:
            return np.moveaxis(flat.reshape(-1, *shape), 1, -1).reshape(channels_last)

        images = {
            "inputs": as_images(X),
            "reconstructions": np.clip(as_images(detector.reconstruct(X)), 0, 1),
            "heatmaps": detector.feature_scores(X).reshape(-1, *shape).sum(axis=1),
            "scores": scores[worst],
            "labels": scored.groups[worst],
        }
    summary = {
        "data": str(path),
        "samples scored": len(scored.scores),
        "anomalies (labelled)": int(scored.is_anomaly.sum()),
        "failed rows or files": len(scored.failed),
        "scores not finite (flagged)": n_broken,
        "score": detector.score_type_,
        "threshold": detector.threshold_,
        "threshold rule": describe_threshold_rule(detector.threshold_rule_),
    }
    metrics = write_report(
        out_dir,
        scored.is_anomaly,
        scores,
        threshold=detector.threshold_,
        history=detector.history_,
        images=images,
        title=f"vaeguard: evaluation on {path.name}",
        summary=summary,
        groups=scored.groups,
        generative=_gallery(detector, source, scored, on_bad_row),
    )
    metrics["n_failed"] = len(scored.failed)
    metrics["n_not_finite"] = n_broken
    return metrics
