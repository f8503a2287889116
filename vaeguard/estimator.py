"""VAEAnomalyDetector: a scikit-learn outlier detector backed by a variational autoencoder."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from . import defaults, generative, persistence
from .calibration import (
    check_rate,
    conformal_threshold,
    is_flagged,
    label_threshold,
    p_values,
    refuse_broken_scores,
    threshold_for_contamination,
)
from .devices import resolve_device
from .errors import DataError
from .footprint import check_model_size
from .inputs import InputSpec
from .latent import MAX_REFERENCE_CODES
from .limits import MAX_EPOCHS, MAX_IMPORTANCE_SAMPLES, MAX_INTERPOLATION_STEPS, MAX_SAMPLES, check_generated_rows
from .modelfile import FittedState
from .model import VAE, VAEConfig
from .scorer import Scorer, check_finite, column_moments, feature_scales, material_steps, output_logvar_floor, standardize, tail_compression
from .scoring import SCORE_TYPES, ScoreState, encode_means, fit_latent_neighbours, fit_level_offsets, reconstruct, score_and_explain, scoring_rows
from .streaming import Levels
from .threads import threads_for
from .training import TrainConfig, train_vae, train_vae_batches

_POSITIVE_INT = [Interval(Integral, 1, None, closed="left")]


def _threaded(method):
    """`method` run with torch's thread count from the detector's `threads`, the caller's
    restored after it (vaeguard.threads.threads_for)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with threads_for(self.threads):
            return method(self, *args, **kwargs)

    return run


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
        "auto": bernoulli when every value lies in [0, 1] and the values sit near 0 and 1
        (mean of 4·x·(1 - x) at most 0.15, see `defaults.grey_spread`: MNIST-like strokes), otherwise
        gaussian (with standardisation: grey-level images such as Fashion-MNIST, tables).
    architecture : "mlp", "conv" (images given as flat rows of `input_shape` (C, H, W)) or
        "auto": the MLP, for every input. The convolutional network is the choice for accuracy
        on grey-level images (Fashion-MNIST one-class 0.9603 against the MLP's 0.9547) at 4-5
        times the CPU time. The resolved one is `config_.architecture`.
    input_shape : (C, H, W) of image rows. Rows are images only when declared so: by
        `input_shape`, by fitting on an image folder, or by `fit(X, input_spec=ImageInput(...))`;
        otherwise X is a table, whatever its number of columns or range.
    score_type : "elbo" (negative ELBO), "recon", "iwae" (importance-weighted -log p(x)), "kl",
        "ratio" (negative ELBO minus -log p(x) under a local pixel-context model; images in
        [0, 1] only), "fused" (reconstruction NLL and latent 5-NN distance, each as a robust
        z-score on the validation rows, averaged) or "auto": "ratio" for near-binary images in
        [0, 1] of at least 16x16 pixels, "fused" with the gaussian likelihood (tables,
        grey-level images), otherwise "elbo" (on smaller images the local context already
        spans the shape).
    epochs : the most training epochs (early stopping on the validation loss may end sooner);
        "auto": 50, or on small data enough epochs for 2,000 gradient steps, and on large data
        at most 15,000 steps (training.auto_epochs).
    patience : epochs without a better validation loss before training stops; "auto": 10, or on
        small data enough epochs for 100 gradient steps (training.auto_patience).
    batch_size, learning_rate, beta, kl_warmup_epochs : training.
    validation_fraction : share of data for early stopping on the validation negative ELBO.
    calibration_fraction : share of data held out to set the threshold and p-values.
    fpr : target false-positive rate of the threshold on normal data.
    contamination : "auto" or a float in (0, 0.5], as in scikit-learn.
    standardize : scale features to zero mean, unit variance ("auto": for gaussian only).
    n_importance_samples : K for score_type="iwae".
    random_state, device ("auto", "cpu", "cuda"), verbose.
    threads : torch's thread count for fitting and scoring on the CPU; "auto": the cores this
        process may use less those other processes keep busy (vaeguard.threads, issue #23).
        It holds while a method runs; the caller's count is restored after it.

    `fit` also records what the model reads (`input_spec_`): a table's columns, or an image
    shape; bulk scoring of files goes through it (see vaeguard.bulk). As in PyOD, it sets
    `decision_scores_` (anomaly scores of the training data) and `labels_` (1 = outlier,
    0 = inlier, at the current threshold); neither is stored in model files.

    The generative side: `sample`, `decode`, `interpolate`, `traverse` (rows in the units of X).
    """

    _parameter_constraints: dict = {
        "latent_dim": _POSITIVE_INT,
        "hidden_dims": [tuple, list],
        "likelihood": [StrOptions({"auto", "bernoulli", "gaussian"})],
        "architecture": [StrOptions({"auto", "mlp", "conv"})],
        "input_shape": [None, tuple, list],
        "score_type": [StrOptions({"auto", *SCORE_TYPES})],
        "epochs": [StrOptions({"auto"}), Interval(Integral, 1, MAX_EPOCHS, closed="both")],
        "batch_size": _POSITIVE_INT,
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "kl_warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "patience": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "calibration_fraction": [Interval(Real, 0, 0.5, closed="neither")],
        "fpr": [Interval(Real, 0, 1, closed="neither")],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "standardize": [StrOptions({"auto"}), "boolean"],
        "n_importance_samples": [Interval(Integral, 1, MAX_IMPORTANCE_SAMPLES, closed="both")],
        "random_state": ["random_state"],
        "device": [str],
        "threads": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    # Defaults live in VAEConfig and TrainConfig; the estimator reads them from there.
    def __init__(
        self,
        *,
        latent_dim: int = VAEConfig.latent_dim,
        hidden_dims: tuple[int, ...] = VAEConfig.hidden_dims,
        likelihood: str = "auto",
        architecture: str = "auto",
        input_shape: tuple[int, int, int] | None = None,
        score_type: str = "auto",
        epochs: int | str = "auto",
        batch_size: int = TrainConfig.batch_size,
        learning_rate: float = TrainConfig.learning_rate,
        beta: float = TrainConfig.beta,
        kl_warmup_epochs: int = TrainConfig.kl_warmup_epochs,
        patience: int | str = "auto",
        validation_fraction: float = 0.1,
        calibration_fraction: float = 0.2,
        fpr: float = 0.01,
        contamination: str | float = "auto",
        standardize: str | bool = "auto",
        n_importance_samples: int = 64,
        random_state: int | None = None,
        device: str = "auto",
        threads: int | str = "auto",
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
        self.threads = threads
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing cell, left out of the row's likelihood
        return tags

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None, *, input_spec: InputSpec | None = None) -> "VAEAnomalyDetector":
        """Train on X (normal data; y is ignored) and set the threshold. Returns self.

        X is an array, a DataFrame, or the path of a CSV file or an image folder (read with
        vaeguard.sources.read_training_data's defaults). `input_spec` says what the columns
        are when X comes from a file read by other means; without it X is an image of
        `input_shape` when that is set, else a table (the DataFrame's column names, or x0, x1, ...).
        A NaN, infinite or beyond-float32 value is a DataError naming its row and column.
        """
        self._validate_params()
        with threads_for(self.threads):
            return self._fit(X, input_spec)

    def _fit(self, X, input_spec: InputSpec | None) -> "VAEAnomalyDetector":
        if isinstance(X, (str, os.PathLike)):
            from .sources import read_training_data

            data = read_training_data(X, image_shape=self.input_shape)
            for note in data.notes:  # the columns left out, and why
                warnings.warn(f"{X}: {note}", UserWarning, stacklevel=3)
            X, input_spec = data.X, data.input_spec
        elif hasattr(X, "columns") and hasattr(X, "dtypes"):  # a DataFrame
            from .tabular import role_warnings

            for warning in role_warnings(X):
                warnings.warn(warning, UserWarning, stacklevel=3)
            if any(dtype.kind not in "iuf" for dtype in X.dtypes):  # text, true/false, category: categorical columns
                from .sources import FrameSource
                from .tabular import ColumnRoles

                data = FrameSource(X).read_training(ColumnRoles(columns=[str(c) for c in X.columns]))
                X, input_spec = data.X, data.input_spec
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite=False)
        n = len(X)
        if n < 3:
            raise ValueError(
                f"{type(self).__name__} needs at least 3 samples (training, validation and "
                f"calibration), got {n} sample{'s' if n != 1 else ''}"
            )
        self.input_spec_ = defaults.input_spec(X, input_spec, self.input_shape, getattr(self, "feature_names_in_", None))
        check_finite(X, self.input_spec_, within_float32=True)  # the cells the training readers refuse
        if input_spec is not None and input_spec.kind == "table" and not input_spec.groups and not hasattr(self, "feature_names_in_"):
            # rows read from a file: the model knows its column names, as if fitted on a DataFrame
            self.feature_names_in_ = np.asarray(input_spec.columns, dtype=object)
        rng = check_random_state(self.random_state)
        self.seed_ = int(rng.randint(np.iinfo(np.int32).max))
        order = rng.permutation(n)
        n_cal = max(1, round(self.calibration_fraction * n))
        n_val = max(1, round(self.validation_fraction * n)) if self.validation_fraction > 0 else 0
        n_val = min(n_val, n - n_cal - 1)
        cal_idx, val_idx, train_idx = np.split(order, [n_cal, n_cal + n_val])

        self.likelihood_ = defaults.likelihood(self.likelihood, X)
        train = X[train_idx]
        if defaults.standardizes(self.standardize, self.likelihood_):
            tails = tail_compression(train, self.input_spec_)
            if tails:
                self.input_spec_ = dataclasses.replace(self.input_spec_, tails=tails)
            # float64 whatever X is: the model file stores float64, and a loaded detector
            # must standardise bit-identically to the fitted one
            mean, std = column_moments(self.input_spec_.compress(train), self.input_spec_)
            # only a table's columns have a recording step (material_steps): images skip the sort
            recorded = Levels(X.shape[1]).update(train).steps() if self.input_spec_.kind == "table" else np.zeros(X.shape[1])
            steps = material_steps(std, recorded, self.input_spec_)
            scale = feature_scales(std, steps, self.input_spec_)
        else:
            mean, std, scale, steps = None, None, None, None
        train_cfg, n_reference = self._setup(
            X.shape[1], mean, scale, n_train=len(train_idx), n_reference=min(len(train_idx), MAX_REFERENCE_CODES)
        )
        if self.config_.variance_floor:
            std = column_moments(train, self.input_spec_)[1] if std is None else std
            self.model_.output_logvar_min.copy_(torch.from_numpy(output_logvar_floor(std, self.scale_)))
        if self.score_state_.code_length is not None:
            self.score_state_.code_length.fit(train)
        del train  # the raw rows: not held through training
        Xs = self._standardize(X)
        Xs_train = Xs[train_idx]
        rows = torch.as_tensor(Xs_train, dtype=torch.float32)  # the training rows as the network reads them
        for part in (self.score_state_.context, self.score_state_.pixel_range):
            if part is not None:
                part.fit(rows)
        self.score_state_.to(self.device_)
        self.history_ = train_vae(
            self.model_, Xs_train, Xs[val_idx], train_cfg, seed=self.seed_, device=self.device_,
            jitter=None if steps is None else steps / self.scale_,
        )
        self.n_epochs_ = len(self.history_["train_loss"])
        fit_level_offsets(self.model_, [Xs_train])  # before the fused scales, which read the terms
        if n_reference:
            # Scales come from the validation rows (training rows when there are none), never
            # from the calibration rows, whose scores must stay exchangeable with new normals.
            scale_idx = val_idx if len(val_idx) else train_idx
            code_length = self.score_state_.code_length
            fit_latent_neighbours(
                self.model_, self.score_state_, Xs_train[:n_reference], Xs[scale_idx],
                None if code_length is None else code_length.nats(X[scale_idx].astype(np.float32)),
            )

        # Scores come from the raw rows through the scoring front-end, as new rows' scores do; a
        # row scores the same in any batch, so the calibration rows' are read off all rows' scores.
        training_scores = self._front_end().anomaly_score(X)
        self.calibration_scores_ = training_scores[cal_idx]
        if self.contamination == "auto":
            self.set_threshold(fpr=self.fpr)
        else:
            self._store_threshold(
                threshold_for_contamination(training_scores, self.contamination),
                {"rule": "contamination", "contamination": float(self.contamination)},
            )
        # PyOD's fitted attributes: anomaly scores of the training data and their flags.
        self.decision_scores_ = training_scores
        self.labels_ = is_flagged(training_scores, self.threshold_).astype(int)
        return self

    def _setup(
        self, n_features: int, mean: np.ndarray | None, scale: np.ndarray | None, n_train: int, n_reference: int
    ) -> tuple[TrainConfig, int]:
        """Scaling, score type, network, score state and device from what the data says (see
        vaeguard.defaults); the training config and the number of reference codes (score_type
        "fused"). Shared by `fit` and `fit_stream`, after `likelihood_` is set.
        """
        if mean is not None:
            self.mean_, self.scale_ = np.array(mean, dtype=np.float64), np.where(scale > 1e-12, scale, 1.0)
            for s, w in getattr(self.input_spec_, "groups", ()):  # a categorical column's one-hot features stay 0 or 1
                self.mean_[s : s + w], self.scale_[s : s + w] = 0.0, 1.0
        else:
            self.mean_, self.scale_ = np.zeros(n_features), np.ones(n_features)
        params = self.get_params()
        self.score_type_ = defaults.score_type(self.score_type, self.likelihood_, self.input_spec_)
        self.config_ = defaults.network(params, n_features, self.likelihood_, self.input_spec_)
        n_reference = n_reference if self.score_type_ == "fused" else 0
        context = defaults.has_context_model(self.likelihood_, self.input_spec_)
        code_length = defaults.has_code_length(self.likelihood_, self.input_spec_, self.score_type_)
        image = defaults.image_shape(self.input_spec_)
        shape = dict(image_shape=image if context else None, n_reference=n_reference,
                     code_length_shape=image if code_length else None,
                     range_features=n_features if defaults.has_pixel_range(self.input_spec_) else 0)
        with torch.device("meta"):  # the memory checks, before allocating anything
            probe = ScoreState(**shape, latent_dim=self.latent_dim)
        check_model_size(self.config_, rows=self.batch_size, training=True, extra_values=probe.n_values())
        scoring_rows(self.config_, self.score_type_, self.n_importance_samples, probe)
        self.score_state_ = ScoreState(**shape, latent_dim=self.latent_dim)
        self.device_ = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_)
            self.model_ = VAE(self.config_)
        return defaults.training(params, n_train), n_reference

    def fit_stream(self, stream) -> "VAEAnomalyDetector":
        """Train on a table larger than memory, streamed from disk (a vaeguard.streaming.TableStream).

        The same model as `fit` in structure and file format: statistics come from a first
        pass, validation and calibration rows are chosen by a seeded hash of each row, and the
        training loop (vaeguard.training) reads shuffled mini-batches from the stream each
        epoch. Memory is bounded by the stream's chunk, shuffle buffer and held-out caps.
        Only contamination="auto" (a threshold from the calibration rows) is supported.
        """
        self._validate_params()
        with threads_for(self.threads):
            return self._fit_stream(stream)

    def _fit_stream(self, stream) -> "VAEAnomalyDetector":
        if self.contamination != "auto":
            raise ValueError("out-of-core training sets the threshold from calibration rows: use contamination='auto'")
        from .distributed import world

        if world()[1] > 1:
            raise ValueError("out-of-core training runs in one process; under torchrun, train in memory (without --out-of-core)")
        rng = check_random_state(self.random_state)
        self.seed_ = int(rng.randint(np.iinfo(np.int32).max))
        stats = stream.prepare(self.seed_, self.validation_fraction, self.calibration_fraction, reference_rows=MAX_REFERENCE_CODES)
        self.input_spec_ = stream.input_spec
        self.n_features_in_ = self.input_spec_.n_features
        self.likelihood_ = defaults.likelihood(self.likelihood, np.array([stats.low, stats.high]))
        standardize = defaults.standardizes(self.standardize, self.likelihood_)
        if standardize:
            self._compress_tails(stats)
        train_cfg, n_reference = self._setup(
            self.n_features_in_, stats.mean if standardize else None,
            feature_scales(stats.std, stats.steps, self.input_spec_) if standardize else None,
            n_train=stats.n_train, n_reference=len(stats.reference),
        )
        if self.score_state_.context is not None or self.score_state_.code_length is not None:
            raise ValueError("out-of-core training reads tables: image models train in memory")
        batch_size = max(1, min(self.batch_size, stats.n_train))
        validation = self._standardize(stats.validation)
        self.history_ = train_vae_batches(
            self.model_,
            lambda epoch, generator: stream.train_batches(epoch, batch_size, transform=self._standardize),
            validation,
            train_cfg,
            seed=self.seed_,
            device=self.device_,
            jitter=material_steps(stats.std, stats.steps, self.input_spec_) / self.scale_ if standardize else None,
        )
        self.n_epochs_ = len(self.history_["train_loss"])
        fit_level_offsets(self.model_, stream.train_batches(0, batch_size, transform=self._standardize))
        if n_reference:
            reference = self._standardize(stats.reference[:n_reference])
            self.score_state_.to(self.device_)
            fit_latent_neighbours(self.model_, self.score_state_, reference, validation if len(validation) else reference)
        self.calibration_scores_ = np.concatenate([self._front_end().anomaly_score(X) for X in stream.calibration_chunks()])
        # PyOD's decision_scores_ (every training row's score) would grow with the file: not set.
        return self.set_threshold(fpr=self.fpr)

    def _compress_tails(self, stats) -> None:
        """Out-of-core training: the heavy-tailed columns (by the whole data's spread), and
        their moments after compression, from the held-out rows in memory (a sample of the
        training rows' distribution: validation and reference rows are chosen by the hash)."""
        sample = np.concatenate([stats.validation, stats.reference])
        tails = tail_compression(sample, self.input_spec_, std=stats.std)
        if not tails:
            return
        self.input_spec_ = dataclasses.replace(self.input_spec_, tails=tails)
        mean, std = column_moments(self.input_spec_.compress(sample), self.input_spec_)
        compressed = [start for start, tail in zip(self.input_spec_.starts, tails) if tail is not None]
        stats.mean, stats.std = stats.mean.copy(), stats.std.copy()
        stats.mean[compressed], stats.std[compressed] = mean[compressed], std[compressed]

    # ------------------------------------------------------------------ thresholds

    def _store_threshold(self, threshold: float, rule: dict) -> None:
        if not math.isfinite(threshold):
            raise DataError(f"the threshold would be {threshold}: the scores it comes from are not finite")
        self.threshold_ = float(threshold)
        self.offset_ = -self.threshold_
        self.threshold_rule_ = rule
        if hasattr(self, "decision_scores_"):  # PyOD's labels_ follow the current threshold
            self.labels_ = is_flagged(self.decision_scores_, self.threshold_).astype(int)

    def set_threshold(self, fpr: float | None = None) -> "VAEAnomalyDetector":
        """Re-threshold at a target false-positive rate on the stored calibration scores."""
        check_is_fitted(self)
        fpr = check_rate(self.fpr if fpr is None else fpr)
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
        refuse_broken_scores(scores)
        if y is None:
            if len(scores) == 0:
                raise DataError("no calibration scores: the normal data given is empty")
            self.calibration_scores_ = scores
            return self.set_threshold(fpr)
        threshold = label_threshold(np.asarray(y), scores, rule=rule, recall=recall)
        self._store_threshold(threshold, {"rule": rule, "recall": recall, "n_labelled": len(scores)})
        return self

    # ------------------------------------------------------------------ scoring

    def _checked(self, X) -> np.ndarray:
        """X validated as scikit-learn does (fitted, feature names, width); finite values are
        the scoring front-end's to check, so that every path names a bad cell alike."""
        check_is_fitted(self)
        if getattr(self.input_spec_, "groups", ()) and hasattr(X, "columns"):  # categorical columns: encoded by name
            from .sources import FrameSource

            X = FrameSource(X).features(self.input_spec_)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False, ensure_all_finite=False)

    def _validated(self, X) -> tuple[np.ndarray, int]:
        """X as the network reads it (vaeguard.scorer.Scorer.prepare), and the rows per block
        to run it in (the scorer's, so that every output is computed as the scores are)."""
        X = self._checked(X)  # first: NotFittedError before fit
        scorer = self._front_end()
        return scorer.prepare(X), scorer.rows

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        return standardize(X, self.mean_, self.scale_, self.input_spec_)

    def _front_end(self) -> Scorer:
        """The scoring front-end over the fitted state (also inside fit, before the threshold);
        it scores with this detector's `threads`."""
        return Scorer.from_fitted(self.model_, self.score_state_, self.n_importance_samples, persistence.learned(self), self.threads)

    def anomaly_score(self, X) -> np.ndarray:
        """Higher = more anomalous (PyOD's convention): the fitted score_type per sample."""
        X = self._checked(X)
        return self._front_end().anomaly_score(X)

    def score_and_explain(self, X) -> tuple[np.ndarray, np.ndarray]:
        """`anomaly_score(X)` and `feature_scores(X)` from one forward pass: what bulk scoring uses."""
        X = self._checked(X)
        return self._front_end().score_and_explain(X)

    def scorer(self) -> Scorer:
        """The fitted model's scoring half (vaeguard.scorer.Scorer): what bulk scoring and the
        engines use; it shares this detector's network and scores bit-identically."""
        check_is_fitted(self)
        return self._front_end()

    def score_samples(self, X) -> np.ndarray:
        """Higher = more normal (scikit-learn's convention): minus the anomaly score."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """score_samples(X) - offset_: negative for samples flagged as anomalies."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for normal samples, -1 for anomalies (vaeguard.calibration.is_flagged)."""
        return np.where(is_flagged(self.anomaly_score(X), self.threshold_), -1, 1)

    def p_values(self, X) -> np.ndarray:
        """Conformal p-values against the calibration scores: small = unlike normal data."""
        scores = self.anomaly_score(X)  # first: NotFittedError before fit
        return p_values(self.calibration_scores_, scores)

    @_threaded
    def feature_scores(self, X, *, as_frame: bool = False):
        """Per-feature reconstruction NLL (n, d); rows sum to the reconstruction part of the score.

        as_frame=True: a pandas DataFrame with columns `get_feature_names_out()` (the
        DataFrame's columns seen in fit, else x0, x1, ...) and X's index when X is a DataFrame.
        """
        Xs, rows = self._validated(X)  # first: NotFittedError before fit
        scores = score_and_explain(self.model_, Xs, "recon", rows=rows)[1]
        if self.input_spec_.kind == "table":  # a categorical column is one feature, not one per level
            scores = self.input_spec_.column_scores(scores)
        if not as_frame:
            return scores
        import pandas as pd

        return pd.DataFrame(scores, columns=self.get_feature_names_out(), index=getattr(X, "index", None))

    @_threaded
    def encode(self, X) -> np.ndarray:
        """Posterior means of the latent code, shape (n, latent_dim)."""
        Xs, rows = self._validated(X)  # first: NotFittedError before fit
        return encode_means(self.model_, Xs, rows)

    @_threaded
    def reconstruct(self, X) -> np.ndarray:
        """Reconstructions at the posterior mean, in the units of X."""
        Xs, rows = self._validated(X)  # first: NotFittedError before fit
        return self._to_units(reconstruct(self.model_, Xs, rows))

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path, metadata: dict | None = None, *, inputs=()) -> Path:
        """Write a single model file (weights + JSON description); `metadata` is kept as is.

        `inputs`: files (e.g. the training data) that `path` must not be; DataError if it is.
        """
        check_is_fitted(self)
        return persistence.fitted_state(self, metadata).save(path, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "VAEAnomalyDetector":
        """Rebuild a detector from a model file written by `save` (never unpickles)."""
        return persistence.restore(cls, FittedState.load(path), path, device)

    # ------------------------------------------------------------------ generative side and interop
    # Samples, decodings and interpolations come back in the units of X: standardisation and
    # tail compression are undone, and image models (bernoulli likelihood) give pixel values in [0, 1].

    def _to_units(self, Xs: np.ndarray) -> np.ndarray:
        return self.input_spec_.expand(np.asarray(Xs, dtype=np.float64) * self.scale_ + self.mean_)

    def _seed_for(self, random_state) -> int:
        """random_state=None: the detector's own seed (the same rows on every call, like the scores)."""
        if random_state is None:
            return int(self.seed_)
        if isinstance(random_state, Integral) and not isinstance(random_state, bool):
            return int(random_state)
        if isinstance(random_state, np.random.RandomState):
            return int(random_state.randint(np.iinfo(np.int32).max))
        raise ValueError(f"random_state must be None, an int or a numpy RandomState, got {random_state!r}")

    def _one_row(self, x, name: str) -> np.ndarray:
        """One sample (a 1-D row, a one-row 2-D array or DataFrame, or a pandas Series), scaled."""
        check_is_fitted(self)
        if hasattr(x, "to_frame") and getattr(x, "ndim", 0) == 1:  # a pandas Series: keep its names
            x = x.to_frame().T.infer_objects()
        if not hasattr(x, "columns"):
            x = np.asarray(x, dtype=np.float64)
            if x.ndim == 1:
                x = x[None, :]
        if x.ndim != 2 or x.shape[0] != 1:
            raise DataError(f"{name} must be one sample (a row of {self.n_features_in_} values), got shape {tuple(x.shape)}")
        if x.shape[1] != self.n_features_in_:
            raise DataError(f"{name} has {x.shape[1]} values, but the model expects {self.n_features_in_} features")
        return self._validated(x)[0]

    def _latent_width(self) -> int:
        return int(self.config_.latent_dim)

    @_threaded
    def sample(self, n: int = 16, *, random_state=None, mean: bool = True) -> np.ndarray:
        """n new samples, shape (n, n_features), in the units of X.

        Codes are drawn from the prior N(0, I) and decoded: with mean=True each row is the
        decoder mean E[x | z] (smooth; for images the pixel intensities), with mean=False one
        draw from the likelihood p(x | z) (Bernoulli: pixels 0 or 1; Gaussian: the mean plus
        noise with the learned per-feature variance). random_state=None uses the detector's
        own seed, so the same call gives the same rows; pass an int for another draw.
        Blurry or all-alike samples warn of a model that has not learned the normal data.
        At most `limits.MAX_SAMPLES` rows a call (DataError beyond it, or beyond the memory budget).
        """
        check_is_fitted(self)
        if not isinstance(n, Integral) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        check_generated_rows("n", int(n), MAX_SAMPLES, int(self.n_features_in_))
        _, Xs = generative.sample(self.model_, int(n), self._seed_for(random_state), mean=bool(mean))
        return self._to_units(Xs)

    @_threaded
    def decode(self, Z) -> np.ndarray:
        """E[x | z] for each latent code (rows of Z, shape (n, latent_dim)), in the units of X."""
        check_is_fitted(self)
        Z = np.asarray(Z, dtype=np.float64)
        width = self._latent_width()
        if Z.ndim == 1 and Z.shape[0] == width:
            Z = Z[None, :]
        if Z.ndim != 2 or Z.shape[1] != width:
            raise DataError(f"Z must have shape (n, {width}) (latent_dim={width}), got {Z.shape}")
        if not np.all(np.isfinite(Z)):
            raise DataError(f"Z holds {int((~np.isfinite(Z)).sum())} NaN or infinite values")
        return self._to_units(generative.decode(self.model_, Z))

    @_threaded
    def interpolate(self, x_a, x_b, steps: int = 8, method: str = "slerp") -> np.ndarray:
        """`steps` decoded points on the latent path from x_a to x_b, shape (steps, n_features).

        Both samples are encoded to their posterior means; the path between the codes is
        spherical ("slerp", the default: the norm goes linearly from one code's to the other's
        along the great circle, so every point keeps a norm typical of the N(0, I) prior, where
        the decoder was trained) or a straight line ("linear", whose middle points have smaller
        norms than any code the prior produces). The first and last rows are the
        reconstructions of x_a and x_b. At most `limits.MAX_INTERPOLATION_STEPS` steps.
        """
        rows = np.vstack([self._one_row(x_a, "x_a"), self._one_row(x_b, "x_b")])
        if not isinstance(steps, Integral) or isinstance(steps, bool) or steps < 2:
            raise ValueError(f"steps must be an integer >= 2 (the two endpoints included), got {steps!r}")
        check_generated_rows("steps", int(steps), MAX_INTERPOLATION_STEPS, int(self.n_features_in_))
        za, zb = encode_means(self.model_, rows, self._front_end().rows)
        if method not in generative.INTERPOLATIONS:
            raise ValueError(f"method must be one of {generative.INTERPOLATIONS}, got {method!r}")
        return self._to_units(generative.decode(self.model_, generative.interpolate_codes(za, zb, int(steps), method)))

    @_threaded
    def traverse(self, x, dim: int, values=None) -> np.ndarray:
        """Decodings of x's code with latent coordinate `dim` set to each of `values`.

        Shape (len(values), n_features), in the units of X. `values` are in units of the
        prior's standard deviation (default: -3 to 3 in 7 steps). Shows what one latent
        dimension encodes; `active_dims_` ranks the dimensions the model uses.
        """
        row = self._one_row(x, "x")
        z = encode_means(self.model_, row, self._front_end().rows)[0]
        width = self._latent_width()
        if not isinstance(dim, Integral) or isinstance(dim, bool) or not 0 <= dim < width:
            raise ValueError(f"dim must be an integer in [0, {width - 1}] (latent_dim={width}), got {dim!r}")
        values = np.linspace(-3.0, 3.0, 7) if values is None else np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or len(values) == 0 or not np.all(np.isfinite(values)):
            raise DataError(f"values must be a non-empty 1-D sequence of finite numbers, got shape {values.shape}")
        return self._to_units(generative.decode(self.model_, generative.traverse_codes(z, int(dim), values)))

    @_threaded
    def active_dims(self, X, k: int | None = None) -> np.ndarray:
        """Latent dimensions ranked by their mean KL to the prior on X, most used first (k of them)."""
        Xs = self._validated(X)[0]
        return generative.active_dims(self.model_, Xs, self._latent_width() if k is None else int(k))

    def predict_proba(self, X) -> np.ndarray:
        """Columns [p_value, 1 - p_value] per sample, shape (n, 2).

        Column 1 is 1 minus the conformal p-value against the calibration scores: the share
        of held-out normal data (with the +1 correction) that scores lower than the sample,
        the evidence that it is an anomaly. It is NOT a calibrated posterior probability
        P(anomaly | x): that needs the anomaly base rate, which normal-only training never
        sees. A normal sample's column 1 is uniform on [0, 1]; thresholding it at 1 - fpr is
        (up to ties) the conformal threshold.
        """
        check_is_fitted(self)
        p = self.p_values(X)
        return np.column_stack([p, 1.0 - p])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the features (the columns of `feature_scores`): the DataFrame columns seen
        in fit, else the table columns of `input_spec_` (a model trained from a CSV file),
        else x0, x1, ... as in scikit-learn."""
        check_is_fitted(self)
        spec = getattr(self, "input_spec_", None)
        if input_features is None and not hasattr(self, "feature_names_in_") and spec is not None and spec.kind == "table":
            return np.asarray(spec.columns, dtype=object)
        return _check_feature_names_in(self, input_features)


def load(path: str | Path, device: str = "auto") -> VAEAnomalyDetector:
    """Load a detector saved with `VAEAnomalyDetector.save`."""
    return VAEAnomalyDetector.load(path, device=device)
