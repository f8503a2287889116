"""A fitted model's scoring half: the network, the standardisation, the calibration scores and
the threshold, without scikit-learn.

Bulk scoring (`vaeguard score`, `bulk.score_file`) and the Dask and Spark workers score
through a `Scorer`. `Scorer.load` reads a model file without importing scikit-learn, which
costs every scoring process about 60 MB (scikit-learn imports scipy.stats); that is what keeps
`vaeguard score` on a Parquet file under 500 MB (README, "Scoring speed"). A fitted
`VAEAnomalyDetector` gives the same object for itself with `.scorer()`, and both score through
the functions below, so a row gets bit-identical scores either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, ModelFileError
from .inputs import InputSpec
from .limits import check_model_tensors
from .model import VAE, VAEConfig
from .modelfile import FittedState, is_standardizing
from .scoring import score_and_explain
from .training import resolve_device


def standardize(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows as the network sees them: (X - mean) / scale in float32 (no copy when there is none)."""
    if not is_standardizing(mean, scale):
        return X.astype(np.float32, copy=False)  # [0, 1] data: nothing to do
    with np.errstate(over="ignore"):  # beyond float32: inf, and the score says so (not finite)
        return ((X - mean) / scale).astype(np.float32)


def check_unit_range(X: np.ndarray, likelihood: str) -> None:
    """DataError naming the first value outside [0, 1] when the likelihood is bernoulli."""
    if likelihood == "bernoulli" and len(X) and (X.min() < 0.0 or X.max() > 1.0):
        row, col = np.argwhere((X < 0.0) | (X > 1.0))[0]
        raise DataError(
            f"this model uses the bernoulli likelihood and needs values in [0, 1]; "
            f"row {row}, feature {col} holds {X[row, col]:g}"
        )


def build_model(state: FittedState, path: str | Path, device: str = "auto") -> VAE:
    """The VAE a model file describes, weights loaded, on `device`, in eval mode."""
    target = resolve_device(device)
    try:
        cfg = VAEConfig(**state.model_config)
        check_model_tensors(cfg, state.weights, prefix="")  # before allocating
        model = VAE(cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.weights.items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path} does not describe a valid vaeguard model: {exc}") from None
    return model.to(target).eval()


@dataclass(frozen=True, eq=False)
class Scorer:
    """Scores rows in the units the model was fitted on; see the module docstring."""

    model: VAE
    input_spec: InputSpec
    likelihood: str
    score_type: str
    seed: int
    n_importance_samples: int
    mean: np.ndarray
    scale: np.ndarray
    calibration_scores: np.ndarray
    threshold: float

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Scorer:
        """Read a model file written by `VAEAnomalyDetector.save` (never unpickles)."""
        state = FittedState.load(path)
        return cls(
            model=build_model(state, path, device),
            input_spec=state.input,
            likelihood=state.likelihood,
            score_type=state.score_type,
            seed=state.seed,
            n_importance_samples=state.params["n_importance_samples"],
            mean=state.mean,
            scale=state.scale,
            calibration_scores=state.calibration_scores,
            threshold=float(state.threshold),
        )

    def prepare(self, X) -> np.ndarray:
        """X (n, n_features) checked and standardised; DataError for the wrong width or range."""
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        n_features = self.input_spec.n_features
        if X.ndim != 2 or X.shape[1] != n_features:
            raise DataError(f"expected rows of {n_features} features, got an array of shape {X.shape}")
        check_unit_range(X, self.likelihood)
        return standardize(X, self.mean, self.scale)

    def score_and_explain(self, X, *, explain: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Anomaly scores (higher = more anomalous) and, with `explain`, the per-feature
        reconstruction NLL, from one forward pass."""
        return score_and_explain(
            self.model, self.prepare(X), self.score_type, n_samples=self.n_importance_samples, seed=self.seed, explain=explain
        )

    def anomaly_score(self, X) -> np.ndarray:
        return self.score_and_explain(X, explain=False)[0]


def as_scorer(model) -> Scorer:
    """`model` itself when it is a Scorer, else the scorer of a fitted VAEAnomalyDetector."""
    return model if isinstance(model, Scorer) else model.scorer()
