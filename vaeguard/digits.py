"""The reference job: fit on some digit classes, flag the held-out ones, write a report.

The same function runs on scikit-learn's embedded 8x8 digits (offline, the quick start) and
on MNIST (`vaeguard mnist`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .calibration import describe_threshold_rule
from .estimator import VAEAnomalyDetector
from .gallery import image_gallery
from .inputs import ImageInput
from .mnist import load_mnist, resolve_mnist_dir
from .report import N_WORST, write_report

N_LATENT = 2000


@dataclass
class DigitData:
    """Flat images in [0, 1] with their digit labels, split into train and test."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int]


def embedded_digits(test_size: float = 0.5, random_state: int = 0) -> DigitData:
    """scikit-learn's 1,797 handwritten 8x8 digits, scaled to [0, 1], split stratified."""
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(
        X, digits.target, test_size=test_size, stratify=digits.target, random_state=random_state
    )
    return DigitData(X_train, y_train, X_test, y_test, (8, 8))


def mnist_digits(data_dir: str | Path | None = None, *, download: bool = True) -> DigitData:
    """MNIST's 60,000 training and 10,000 test images (28x28) in [0, 1]; see vaeguard.mnist."""
    directory = resolve_mnist_dir(data_dir, download=download)  # names all four files when some are missing
    X_train, y_train = load_mnist("train", directory, download=False)
    X_test, y_test = load_mnist("test", directory, download=False)
    return DigitData(X_train, y_train, X_test, y_test, (28, 28))


def run_heldout_digits(
    data: DigitData,
    normal_digits: list[int],
    detector: VAEAnomalyDetector,
    out_dir: str | Path,
    title: str = "vaeguard: held-out digits",
    latent_method: str = "pca",
) -> dict:
    """Fit `detector` on the normal digits of the train split, score the whole test split.

    Anomalies are the test images of every other digit. Returns the report's metrics dict,
    whose "per_group" entry holds the AUROC of each held-out digit against the normals.
    """
    normal = np.isin(data.y_train, normal_digits)
    if not normal.any():
        raise ValueError(f"no training images of the normal digits {normal_digits}")
    detector.fit(data.X_train[normal], input_spec=ImageInput((1, *data.image_shape)))  # declared: images, not a table
    scores = detector.anomaly_score(data.X_test)
    is_anomaly = (~np.isin(data.y_test, normal_digits)).astype(int)

    worst = np.argsort(scores)[::-1][:N_WORST]
    height, width = data.image_shape
    shape = (-1, height, width)
    images = {
        "inputs": data.X_test[worst].reshape(shape),
        "reconstructions": detector.reconstruct(data.X_test[worst]).reshape(shape),
        "heatmaps": detector.feature_scores(data.X_test[worst]).reshape(shape),
        "scores": scores[worst],
        "labels": data.y_test[worst],
    }
    sample = np.random.default_rng(0).permutation(len(data.X_test))[:N_LATENT]
    latent = {"means": detector.encode(data.X_test[sample]), "labels": data.y_test[sample]}
    normal_test = ~is_anomaly.astype(bool)
    generative = image_gallery(
        detector, (1, height, width), data.X_test[normal_test], data.X_test[~normal_test],
        normal_labels=data.y_test[normal_test], anomaly_labels=data.y_test[~normal_test],
    )
    summary = {
        "normal digits": ",".join(map(str, normal_digits)),
        "held-out digits": ",".join(str(d) for d in range(10) if d not in normal_digits),
        "training images": int(normal.sum()),
        "test images": len(scores),
        "epochs trained": detector.n_epochs_,
        "score": detector.score_type_,
        "threshold rule": describe_threshold_rule(detector.threshold_rule_),
    }
    return write_report(
        out_dir,
        is_anomaly,
        scores,
        threshold=detector.threshold_,
        history=detector.history_,
        images=images,
        latent=latent,
        latent_method=latent_method,
        title=title,
        summary=summary,
        groups=data.y_test,
        generative=generative,
    )
