"""VAEAnomalyDetector: a scikit-learn outlier detector backed by a variational autoencoder."""

from __future__ import annotations

import math
import platform
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import __version__
from .calibration import conformal_threshold, label_threshold, p_values, threshold_for_contamination
from .errors import DataError, ModelFileError
from .model import VAE, VAEConfig
from .modelfile import read_model_file, write_model_file
from .scoring import SCORE_TYPES, anomaly_scores, encode_means, feature_scores, reconstruct
from .training import TrainConfig, resolve_device, train_vae

_MODEL_PREFIX = "model."
# score_type="auto" picks "ratio" from this image height and width up: measured better than
# "elbo" on 28x28 MNIST, worse on scikit-learn's 8x8 digits.
_RATIO_MIN_SIDE = 16


class VAEAnomalyDetector(OutlierMixin, BaseEstimator):
    """Anomaly detector that trains a VAE on normal data and flags unlikely samples.

    `score_samples` is higher for more normal samples (the negative anomaly score, as in
    IsolationForest); `anomaly_score` is higher for more anomalous ones (as in PyOD).
    At fit time a `calibration_fraction` of the data is held out; the threshold is the
    conformal quantile of its scores at the target false-positive rate `fpr`, unless
    `contamination` is a float, which flags that share of the training data instead.

    Parameters
    ----------
    latent_dim, hidden_dims : size of the code and of the hidden layers.
    likelihood : "bernoulli" (data in [0, 1]), "gaussian" (learned per-feature variance) or
        "auto" (bernoulli when every value lies in [0, 1]).
    architecture : "mlp", or "conv" for images given as flat rows of `input_shape` (C, H, W).
    input_shape : (C, H, W) of image rows; without it, rows whose length is a square of at
        least 8x8 count as single-channel square images.
    score_type : "elbo" (negative ELBO), "recon", "iwae" (importance-weighted -log p(x)), "kl",
        "ratio" (negative ELBO minus -log p(x) under a local pixel-context model; images in
        [0, 1] only) or "auto": "ratio" for images in [0, 1] of at least 16x16 pixels,
        otherwise "elbo" (on smaller images the local context already spans the shape).
    epochs, batch_size, learning_rate, beta, kl_warmup_epochs, patience : training.
    validation_fraction : share of data for early stopping on the validation negative ELBO.
    calibration_fraction : share of data held out to set the threshold and p-values.
    fpr : target false-positive rate of the threshold on normal data.
    contamination : "auto" or a float in (0, 0.5], as in scikit-learn.
    standardize : scale features to zero mean, unit variance ("auto": for gaussian only).
    n_importance_samples : K for score_type="iwae".
    random_state, device ("auto", "cpu", "cuda"), verbose.
    """

    def __init__(
        self,
        *,
        latent_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128),
        likelihood: str = "auto",
        architecture: str = "mlp",
        input_shape: tuple[int, int, int] | None = None,
        score_type: str = "auto",
        epochs: int = 50,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        beta: float = 1.0,
        kl_warmup_epochs: int = 0,
        patience: int = 10,
        validation_fraction: float = 0.1,
        calibration_fraction: float = 0.2,
        fpr: float = 0.01,
        contamination: str | float = "auto",
        standardize: str | bool = "auto",
        n_importance_samples: int = 64,
        random_state: int | None = None,
        device: str = "auto",
        verbose: bool = False,
    ):
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.likelihood = likelihood
        self.architecture = architecture
        self.input_shape = input_shape
        self.score_type = score_type
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.beta = beta
        self.kl_warmup_epochs = kl_warmup_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.calibration_fraction = calibration_fraction
        self.fpr = fpr
        self.contamination = contamination
        self.standardize = standardize
        self.n_importance_samples = n_importance_samples
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    def _check_params(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            check(isinstance(value, Integral) and value >= 1, name, "an integer >= 1")

        for name in ("latent_dim", "epochs", "batch_size", "patience", "n_importance_samples"):
            positive_int(name)
        check(self.likelihood in ("auto", "bernoulli", "gaussian"), "likelihood", "'auto', 'bernoulli' or 'gaussian'")
        check(self.score_type in ("auto", *SCORE_TYPES), "score_type", f"'auto' or one of {SCORE_TYPES}")
        check(isinstance(self.learning_rate, Real) and self.learning_rate > 0, "learning_rate", "> 0")
        check(isinstance(self.beta, Real) and self.beta >= 0, "beta", ">= 0")
        check(isinstance(self.kl_warmup_epochs, Integral) and self.kl_warmup_epochs >= 0, "kl_warmup_epochs", "an integer >= 0")
        check(0 <= self.validation_fraction < 0.5, "validation_fraction", "in [0, 0.5)")
        check(0 < self.calibration_fraction < 0.5, "calibration_fraction", "in (0, 0.5)")
        check(isinstance(self.fpr, Real) and 0 < self.fpr < 1, "fpr", "in (0, 1)")
        check(
            self.contamination == "auto"
            or (isinstance(self.contamination, Real) and 0 < self.contamination <= 0.5),
            "contamination",
            "'auto' or a float in (0, 0.5]",
        )
        check(self.standardize in ("auto", True, False), "standardize", "'auto', True or False")

    def fit(self, X, y=None) -> "VAEAnomalyDetector":
        """Train on X (normal data; y is ignored) and set the threshold. Returns self."""
        self._check_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        n = len(X)
        if n < 3:
            raise ValueError(
                f"{type(self).__name__} needs at least 3 samples (training, validation and "
                f"calibration), got {n} sample{'s' if n != 1 else ''}"
            )
        rng = check_random_state(self.random_state)
        self.seed_ = int(rng.randint(np.iinfo(np.int32).max))
        order = rng.permutation(n)
        n_cal = max(1, round(self.calibration_fraction * n))
        n_val = max(1, round(self.validation_fraction * n)) if self.validation_fraction > 0 else 0
        n_val = min(n_val, n - n_cal - 1)
        cal_idx, val_idx, train_idx = np.split(order, [n_cal, n_cal + n_val])

        self.likelihood_ = self._resolve_likelihood(X)
        standardize = self.standardize if self.standardize != "auto" else self.likelihood_ == "gaussian"
        if standardize and self.likelihood_ == "bernoulli":
            raise ValueError("standardize=True cannot be combined with the bernoulli likelihood, which needs data in [0, 1]")
        if standardize:
            self.mean_ = X[train_idx].mean(axis=0)
            scale = X[train_idx].std(axis=0)
            self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        Xs = self._standardize(X)
        image_shape = self._image_shape(X.shape[1])
        context_model = self.likelihood_ == "bernoulli" and image_shape is not None
        self.score_type_ = self._resolve_score_type(context_model, image_shape)

        self.config_ = VAEConfig(
            input_dim=X.shape[1],
            latent_dim=self.latent_dim,
            hidden_dims=tuple(self.hidden_dims),
            likelihood=self.likelihood_,
            architecture=self.architecture,
            input_shape=self._resolve_input_shape(X.shape[1]) if self.architecture == "conv" else (
                image_shape if context_model else None
            ),
            context_model=context_model,
        )
        train_cfg = TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            beta=self.beta,
            kl_warmup_epochs=self.kl_warmup_epochs,
            patience=self.patience,
            verbose=bool(self.verbose),
        )
        self.device_ = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_)
            self.model_ = VAE(self.config_)
        self.history_ = train_vae(
            self.model_, Xs[train_idx], Xs[val_idx], train_cfg, seed=self.seed_, device=self.device_
        )
        self.n_epochs_ = len(self.history_["train_loss"])

        self.calibration_scores_ = self._anomaly_score_scaled(Xs[cal_idx])
        if self.contamination == "auto":
            self.set_threshold(fpr=self.fpr)
        else:
            train_scores = self._anomaly_score_scaled(Xs)
            self._store_threshold(
                threshold_for_contamination(train_scores, self.contamination),
                {"rule": "contamination", "contamination": float(self.contamination)},
            )
        return self

    def _resolve_likelihood(self, X: np.ndarray) -> str:
        in_unit_range = bool(X.min() >= 0.0 and X.max() <= 1.0)
        if self.likelihood == "auto":
            return "bernoulli" if in_unit_range else "gaussian"
        if self.likelihood == "bernoulli" and not in_unit_range:
            raise DataError(
                f"the bernoulli likelihood needs every value in [0, 1], but X ranges from "
                f"{X.min():g} to {X.max():g}; rescale the data or use likelihood='gaussian'"
            )
        return self.likelihood

    def _image_shape(self, n_features: int, min_side: int = 8) -> tuple[int, int, int] | None:
        """(C, H, W) when the rows are images: input_shape, or a square of at least min_side."""
        if self.input_shape is not None:
            return tuple(int(s) for s in self.input_shape)
        side = math.isqrt(n_features)
        return (1, side, side) if side >= min_side and side * side == n_features else None

    def _resolve_score_type(self, context_model: bool, image_shape: tuple[int, int, int] | None) -> str:
        if self.score_type == "auto":
            return "ratio" if context_model and min(image_shape[1:]) >= _RATIO_MIN_SIDE else "elbo"
        if self.score_type == "ratio" and not context_model:
            raise ValueError(
                "score_type='ratio' needs images with values in [0, 1]: pass input_shape=(C, H, W) "
                "(or rows of a square image of at least 8x8) and the bernoulli likelihood"
            )
        return self.score_type

    def _resolve_input_shape(self, n_features: int) -> tuple[int, int, int] | None:
        if self.architecture != "conv":
            return None
        shape = self._image_shape(n_features, min_side=1)
        if shape is None:
            raise ValueError(
                f"architecture='conv' needs input_shape=(C, H, W): {n_features} features is "
                "not a square single-channel image"
            )
        return shape

    # ------------------------------------------------------------------ thresholds

    def _store_threshold(self, threshold: float, rule: dict) -> None:
        self.threshold_ = float(threshold)
        self.offset_ = -self.threshold_
        self.threshold_rule_ = rule

    def set_threshold(self, fpr: float | None = None) -> "VAEAnomalyDetector":
        """Re-threshold at a target false-positive rate on the stored calibration scores."""
        check_is_fitted(self)
        fpr = self.fpr if fpr is None else fpr
        if not 0 < fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
        scores = self.calibration_scores_
        try:
            threshold = conformal_threshold(scores, fpr)
        except DataError as exc:
            threshold = float(np.max(scores))
            warnings.warn(
                f"{exc}. Using the largest calibration score instead, which guarantees a "
                f"false-positive rate of at most {1 / (len(scores) + 1):.3g}.",
                UserWarning,
                stacklevel=2,
            )
        self._store_threshold(threshold, {"rule": "fpr", "fpr": float(fpr), "n_calibration": len(scores)})
        return self

    def calibrate(
        self, X, y=None, *, fpr: float | None = None, rule: str = "f1", recall: float | None = None
    ) -> "VAEAnomalyDetector":
        """Re-threshold without retraining.

        Without y, X is new normal data: its scores replace the calibration scores and the
        threshold is set at `fpr`. With y (1 = anomaly), the threshold maximises F1
        (rule="f1"), Youden's J (rule="youden") or reaches a target recall (rule="recall").
        """
        return self.calibrate_scores(self.anomaly_score(X), y, fpr=fpr, rule=rule, recall=recall)

    def calibrate_scores(
        self, scores, y=None, *, fpr: float | None = None, rule: str = "f1", recall: float | None = None
    ) -> "VAEAnomalyDetector":
        """`calibrate` from anomaly scores already computed (e.g. streamed over a large file)."""
        check_is_fitted(self)
        scores = np.asarray(scores, dtype=np.float64)
        if y is None:
            if len(scores) == 0:
                raise DataError("no calibration scores: the normal data given is empty")
            self.calibration_scores_ = scores
            return self.set_threshold(fpr)
        threshold = label_threshold(np.asarray(y), scores, rule=rule, recall=recall)
        self._store_threshold(threshold, {"rule": rule, "recall": recall, "n_labelled": len(scores)})
        return self

    # ------------------------------------------------------------------ scoring

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        if self.likelihood_ == "bernoulli" and len(X) and (X.min() < 0.0 or X.max() > 1.0):
            row, col = np.argwhere((X < 0.0) | (X > 1.0))[0]
            raise DataError(
                f"this model uses the bernoulli likelihood and needs values in [0, 1]; "
                f"row {row}, feature {col} holds {X[row, col]:g}"
            )
        return self._standardize(X)

    def _standardizes(self) -> bool:
        return bool(np.any(self.scale_ != 1) or np.any(self.mean_ != 0))

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        if not self._standardizes():
            return X.astype(np.float32, copy=False)  # [0, 1] data: nothing to do, no copy
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def _anomaly_score_scaled(self, Xs: np.ndarray) -> np.ndarray:
        return anomaly_scores(
            self.model_, Xs, self.score_type_, n_samples=self.n_importance_samples, seed=self.seed_
        )

    def anomaly_score(self, X) -> np.ndarray:
        """Higher = more anomalous (PyOD's convention): the fitted score_type per sample."""
        return self._anomaly_score_scaled(self._validated(X))

    def score_samples(self, X) -> np.ndarray:
        """Higher = more normal (scikit-learn's convention): minus the anomaly score."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """score_samples(X) - offset_: negative for samples flagged as anomalies."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for normal samples, -1 for anomalies."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def p_values(self, X) -> np.ndarray:
        """Conformal p-values against the calibration scores: small = unlike normal data."""
        return p_values(self.calibration_scores_, self.anomaly_score(X))

    def feature_scores(self, X) -> np.ndarray:
        """Per-feature reconstruction NLL (n, d); rows sum to the reconstruction part of the score."""
        return feature_scores(self.model_, self._validated(X))

    def encode(self, X) -> np.ndarray:
        """Posterior means of the latent code, shape (n, latent_dim)."""
        return encode_means(self.model_, self._validated(X))

    def reconstruct(self, X) -> np.ndarray:
        """Reconstructions at the posterior mean, in the units of X."""
        return reconstruct(self.model_, self._validated(X)) * self.scale_ + self.mean_

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write a single model file (weights + JSON description); `metadata` is kept as is."""
        check_is_fitted(self)
        params = self.get_params()
        params["hidden_dims"] = list(params["hidden_dims"])
        description = {
            "params": params,
            "model_config": self.config_.to_dict(),
            "fitted": {
                "likelihood": self.likelihood_,
                "score_type": self.score_type_,
                "seed": self.seed_,
                "n_features_in": int(self.n_features_in_),
                "feature_names_in": [str(c) for c in getattr(self, "feature_names_in_", [])] or None,
                "threshold": self.threshold_,
                "threshold_rule": self.threshold_rule_,
                "n_epochs": self.n_epochs_,
            },
            "preprocessing": {"standardize": self._standardizes()},
            "history": self.history_,
            "metadata": metadata or {},
            "versions": {
                "vaeguard": __version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "scikit-learn": sklearn.__version__,
                "python": platform.python_version(),
            },
        }
        arrays = {_MODEL_PREFIX + k: v.detach().cpu().numpy() for k, v in self.model_.state_dict().items()}
        arrays["calibration_scores"] = np.asarray(self.calibration_scores_, dtype=np.float64)
        arrays["mean"] = np.asarray(self.mean_, dtype=np.float64)
        arrays["scale"] = np.asarray(self.scale_, dtype=np.float64)
        return write_model_file(path, description, arrays)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "VAEAnomalyDetector":
        """Rebuild a detector from a model file written by `save` (never unpickles)."""
        description, arrays = read_model_file(path)
        try:
            params = dict(description["params"], device=device)
            params["hidden_dims"] = tuple(params["hidden_dims"])
            fitted = description["fitted"]
            detector = cls(**params)
            detector.config_ = VAEConfig(**description["model_config"])
            detector.device_ = resolve_device(device)
            detector.model_ = VAE(detector.config_)
            state = {k[len(_MODEL_PREFIX):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(_MODEL_PREFIX)}
            detector.model_.load_state_dict(state)
            detector.model_.to(detector.device_).eval()
            detector.likelihood_ = fitted["likelihood"]
            detector.score_type_ = fitted["score_type"]
            detector.seed_ = fitted["seed"]
            detector.n_features_in_ = fitted["n_features_in"]
            if fitted["feature_names_in"] is not None:
                detector.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
            detector.n_epochs_ = fitted["n_epochs"]
            detector.history_ = description["history"]
            detector.metadata_ = description["metadata"]
            detector.calibration_scores_ = arrays["calibration_scores"]
            detector.mean_, detector.scale_ = arrays["mean"], arrays["scale"]
            detector._store_threshold(fitted["threshold"], fitted["threshold_rule"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path} does not describe a valid vaeguard model: {exc}") from None
        return detector


def load(path: str | Path, device: str = "auto") -> VAEAnomalyDetector:
    """Load a detector saved with `VAEAnomalyDetector.save`."""
    return VAEAnomalyDetector.load(path, device=device)
