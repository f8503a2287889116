"""Accuracy on real MNIST with the default configuration (slow: run with -m slow).

The full ten-digit numbers come from benchmarks/mnist_protocols.py; these tests guard the
default against regressions on the two protocols' hardest cases.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vaeguard import VAEAnomalyDetector
from vaeguard.mnist import MNIST_DIR_ENV, load_mnist

SHARED = Path(os.environ.get(MNIST_DIR_ENV, Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"MNIST not found in {SHARED} (set {MNIST_DIR_ENV})"),
]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist("train", SHARED, download=False), load_mnist("test", SHARED, download=False)


def test_one_class_digit_8(mnist):
    """Digit 8 was the plain ELBO's worst one-class case (AUROC 0.82)."""
    (X, y), (X_test, y_test) = mnist
    detector = VAEAnomalyDetector(input_shape=(1, 28, 28), random_state=0).fit(X[y == 8])
    assert detector.score_type_ == "ratio"
    assert roc_auc_score(y_test != 8, detector.anomaly_score(X_test)) > 0.96


def test_held_out_digit_1(mnist):
    """Held-out 1 is the classic failure of likelihood scores (ELBO AUROC 0.09)."""
    (X, y), (X_test, y_test) = mnist
    normal = np.flatnonzero(y != 1)[:15000]
    detector = VAEAnomalyDetector(epochs=20, input_shape=(1, 28, 28), random_state=0).fit(X[normal])
    assert roc_auc_score(y_test == 1, detector.anomaly_score(X_test)) > 0.8
