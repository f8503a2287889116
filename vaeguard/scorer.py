"""A fitted model's scoring half, and the one scoring front-end every path goes through.

`Scorer.score_and_explain` takes raw rows (in the units the model was fitted on) and returns
scores: the rows are checked (width, finite values, [0, 1] for the bernoulli likelihood),
rounded to float32, standardised in float64 and handed to the network in float32. The
estimator's `anomaly_score`, bulk scoring (`vaeguard score`, `bulk.score_file`,
`bulk.score_frame`) and the Dask and Spark workers all call it, so a row gets the same float
whichever way it arrives: an array, a DataFrame, a CSV or a Parquet file. Rows enter as float32
because that is what every file reader yields (and what the network computes in); a float64
array gets the same rounding, so it scores like the CSV file it was written to.

`Scorer.load` reads a model file without importing scikit-learn, which costs every scoring
process about 60 MB (scikit-learn imports scipy.stats); that is what keeps `vaeguard score` on
a Parquet file under 500 MB (README, "Scoring speed"). A fitted `VAEAnomalyDetector` gives the
same object for itself with `.scorer()`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .devices import resolve_device
from .errors import DataError, ModelFileError
from .footprint import check_model_size, check_tensor_shapes, check_widths
from .inputs import NO_CELL, InputSpec
from .model import LOGVAR_MIN, VAE, VAEConfig
from .modelfile import FittedState, is_standardizing
from .scoring import ScoreState, iwae_rows, score_and_explain, scoring_rows
from .threads import threads_for

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Values (rows x features) prepared and scored at a time by `Scorer.score_and_explain`.
# Standardising and the image code length over all of X at once made float64 copies of X,
# and on a virtual machine their fresh pages cost more than the arithmetic (README, "Which
# network": Fashion-MNIST MLP scoring 1.32x, a 200,000-row table 1.39x).
CHUNK_VALUES = 1 << 18


def standardize(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, spec: InputSpec | None = None) -> np.ndarray:
    """Rows as the network sees them: heavy-tailed columns compressed (`spec.tails`), then
    (X - mean) / scale in float32 (no copy when there is nothing to do)."""
    if spec is not None:
        X = spec.compress(X)
    if not is_standardizing(mean, scale):
        return X.astype(np.float32, copy=False)  # [0, 1] data: nothing to do
    with np.errstate(over="ignore"):  # beyond float32: inf, and the score says so (not finite)
        return ((X - mean) / scale).astype(np.float32)


def column_moments(X: np.ndarray, spec: InputSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float64) of training rows, over the cells
    present; DataError naming a feature with no cell present."""
    if not np.isnan(X).any():
        return X.mean(axis=0, dtype=np.float64), X.std(axis=0, dtype=np.float64)
    present = (~np.isnan(X)).sum(axis=0)
    if (present == 0).any():
        raise DataError(f"{feature_label(spec, int(np.argmin(present)))}: every training cell is missing")
    return np.nanmean(X, axis=0, dtype=np.float64), np.nanstd(X, axis=0, dtype=np.float64)


# A recording step is material when its rounding variance (step**2 / 12) is at least this share
# of the feature's variance (step >= 0.35 std): below it the step neither floors the scale nor
# adds training noise, and the feature is standardised exactly as before.
MATERIAL_STEP_SHARE = 0.01
def material_steps(std: np.ndarray, steps: np.ndarray, spec: InputSpec | None = None) -> np.ndarray:
    """`steps` where the rounding is a material share of the feature's variance, else 0. Only
    a table's numeric columns have one: a categorical column's one-hot features are its
    likelihood's, a heavy-tailed column is compressed (`tail_compression`), and images keep
    their exact scales (their floor is on the output variance: `output_logvar_floor`)."""
    steps = np.where(steps**2 / 12.0 >= MATERIAL_STEP_SHARE * std**2, steps, 0.0)
    if spec is not None and spec.kind != "table":
        return np.zeros_like(steps)
    for s, w in getattr(spec, "groups", ()):
        steps[s : s + w] = 0.0
    for start, tail in zip(getattr(spec, "starts", ()), spec.tails if spec is not None else ()):
        if tail is not None:  # a step in the column's units is no step once compressed
            steps[start] = 0.0
    return steps


def feature_scales(std: np.ndarray, steps: np.ndarray, spec: InputSpec | None = None) -> np.ndarray:
    """Per-feature standardisation scales (float64): the training standard deviation with a
    floor, so that no feature that barely varies in training becomes a score of its own.

    Why a floor: a feature's standardised deviation is measured in its training spread, and a
    feature that is constant in all but a few training rows has a tiny spread, so a small
    deviation in a new row (or in one calibration row, which then sets the threshold) is tens
    of units and its Gaussian term dominates every score. The floor is free of units:

    - **Recording step** (a table's numeric columns): a feature recorded in steps of `step` (a flag, a
      count, 8-bit grey levels; `streaming.Levels`) is known only to within its step, a
      rounding error of variance step**2 / 12 (a uniform error across one step: the
      dequantisation noise that makes a density on discrete values meaningful), so
      scale**2 = std**2 + step**2 / 12. A 0/1 flag set in 1% of training rows gets a scale
      of 0.31, not 0.10. Only a material step counts (`material_steps`): a count recorded in
      steps much finer than its spread keeps its standard deviation bit for bit.

    A constant feature (std 0, one value) keeps scale 0 here; the estimator uses 1 for it.
    """
    steps = material_steps(std, steps, spec)
    return np.where(steps > 0, np.sqrt(std**2 + steps**2 / 12.0), std)  # no step: std, bit for bit


# A numeric column is heavy-tailed when its standard deviation exceeds this many interquartile
# ranges: a few rows make its variance (a Gaussian's is 0.74 IQR, a log-normal's with sigma 1 is
# 1.5 and with sigma 2 is 12), so standardised, its bulk is squeezed into a sliver around 0 and
# those rows, tens of standard deviations out, pull training one way and then another.
HEAVY_TAIL_RATIO = 10.0


def tail_compression(X: np.ndarray, spec: InputSpec, std: np.ndarray | None = None) -> tuple:
    """Per column of a table, (center, width) = (median, interquartile range) of a heavy-tailed
    numeric column's training cells (`TableInput.compress`), or None. `std`: the columns'
    standard deviations when X is a sample of the training rows (out-of-core training), so
    that the rule reads the whole data's spread."""
    if spec.kind != "table":
        return ()
    tails = []
    for start, levels in zip(spec.starts, spec.levels):
        cells = X[:, start][~np.isnan(X[:, start])] if levels is None else np.empty(0)
        if len(cells) < 4:
            tails.append(None)
            continue
        q1, median, q3 = np.percentile(cells, [25, 50, 75])
        spread = float(std[start]) if std is not None else float(cells.std())
        tails.append((float(median), float(q3 - q1)) if q3 > q1 and spread > HEAVY_TAIL_RATIO * (q3 - q1) else None)
    return tuple(tails) if any(tails) else ()


# An image's pixels share one unit (the grey level), so a pixel's predictive spread can be floored
# at a share of the typical pixel's: the root mean square of the pixels' training spreads.
PIXEL_FLOOR_SHARE = 0.5


def output_logvar_floor(std: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per-pixel floor under the Gaussian output log-variance, in standardised units (float32).

    Why: a pixel that is blank in nearly every training image (a border, a dust speck in a few)
    has a training spread near 0, and the model learns an output variance to match, so one
    lit pixel in a new image, or in one calibration image that then sets the threshold, scores
    hundreds of nats on its own. With the floor, no pixel's predictive standard deviation is
    below PIXEL_FLOOR_SHARE of the root mean square pixel spread, in grey levels: a pixel
    that varies like the image keeps its learned variance.
    """
    floor = PIXEL_FLOOR_SHARE * math.sqrt(float(np.mean(np.square(std))))
    if floor <= 0.0:  # every pixel constant: nothing to measure a floor against
        return np.full(len(scale), LOGVAR_MIN, dtype=np.float32)
    return np.maximum(2.0 * np.log(floor / scale), LOGVAR_MIN).astype(np.float32)


def feature_label(spec: InputSpec | None, j: int) -> str:
    """How a message names feature j: "column 'name'" for a table, "feature j" for images."""
    return spec.feature_label(j) if spec is not None else f"feature {j}"


def check_finite(X: np.ndarray, spec: InputSpec | None = None, *, within_float32: bool = False) -> None:
    """DataError naming the first row (counting from 0) and column that holds an infinity, or
    with `within_float32` (training) a value beyond float32 or a feature with no value,
    or the first row with no value at all. NaN is a missing cell, left out of the row's
    likelihood. Scoring lets a value beyond float32 through: it overflows float32 and its
    score, not finite, is flagged (calibration.is_flagged)."""
    if X.size:  # the common case in two reductions: min and max are NaN when a cell is, and infinite when one is
        limit = _FLOAT32_MAX if within_float32 else np.finfo(X.dtype).max
        if -limit <= X.min() and X.max() <= limit:
            return
    with np.errstate(invalid="ignore"):
        missing = np.isnan(X)
        bad = np.isinf(X) if not within_float32 else ~(np.abs(X) <= _FLOAT32_MAX) & ~missing
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = float(X[row, col])
        why = f"{value:g} is not a finite number" if math.isinf(value) else f"{value:g} is too large (beyond float32)"
        raise DataError(f"row {row}, {feature_label(spec, col)}: {why}")
    if X.shape[1] and missing.any():
        empty = missing.all(axis=1)
        if empty.any():
            raise DataError(f"row {int(np.argmax(empty))}: {NO_CELL}")
        unseen = missing.all(axis=0)
        if within_float32 and unseen.any():  # training: a feature without a value cannot be learned
            raise DataError(f"{feature_label(spec, int(np.argmax(unseen)))}: every training cell is missing")


def check_unit_range(X: np.ndarray, likelihood: str, spec: InputSpec | None = None) -> None:
    """DataError naming the first value outside [0, 1] when the likelihood is bernoulli."""
    if likelihood == "bernoulli" and len(X) and (X.min() < 0.0 or X.max() > 1.0):
        row, col = np.argwhere((X < 0.0) | (X > 1.0))[0]
        raise DataError(
            f"this model uses the bernoulli likelihood and needs values in [0, 1]; "
            f"row {row}, {feature_label(spec, col)} holds {X[row, col]:g}"
        )


def build_model(state: FittedState, path: str | Path, device: str = "auto") -> tuple[VAE, ScoreState]:
    """The VAE and the score state a model file describes, weights loaded, on `device`, in eval
    mode. Each is built once, on the meta device (shapes only), checked against the file's
    tensors and the memory budget, and only then given the file's arrays (`_filled`)."""
    target = resolve_device(device)
    try:
        cfg = VAEConfig(**state.model_config)
        check_widths(cfg)  # before building anything
        image_shape = state.input.image_shape
        with torch.device("meta"):
            model = VAE(cfg)
            score_state = ScoreState.from_config(
                state.score_config, likelihood=cfg.likelihood, image_shape=image_shape, latent_dim=cfg.latent_dim
            )
        check_tensor_shapes(model, state.weights, cfg)
        check_tensor_shapes(score_state, state.score_tensors, cfg)
        check_model_size(cfg, model=model, extra_values=score_state.n_values())
        model = _filled(model, state.weights, target)
        score_state = _filled(score_state, state.score_tensors, target)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path} does not describe a valid vaeguard model: {exc}") from None
    return model.eval(), score_state


def _filled(module: torch.nn.Module, tensors: dict[str, np.ndarray], device: torch.device) -> torch.nn.Module:
    """`module`, built on the meta device, holding `tensors` (its state_dict entries by name, in
    its dtypes) on `device`. The file's arrays are assigned, not copied into memory allocated by
    `to_empty`: from the meta device that goes through torch's reference ops, whose first use
    imports sympy, about 0.5 s of every scoring process's start-up."""
    dtypes = {k: v.dtype for k, v in module.state_dict().items()}
    module.load_state_dict({k: torch.from_numpy(v).to(dtypes.get(k, torch.float32)) for k, v in tensors.items()}, assign=True)
    return module.to(device)


@dataclass(frozen=True, eq=False)
class Scorer:
    """Scores rows in the units the model was fitted on; see the module docstring.

    `calibration_scores` and `threshold` are None only inside `VAEAnomalyDetector.fit`, which
    scores its calibration rows through this front-end before there is a threshold.
    """

    model: VAE
    score_state: ScoreState
    input_spec: InputSpec
    likelihood: str
    score_type: str
    seed: int
    n_importance_samples: int
    mean: np.ndarray
    scale: np.ndarray
    calibration_scores: np.ndarray | None
    threshold: float | None
    # torch's thread count while scoring (vaeguard.threads.threads_for); None: the process's as
    # it is, which `vaeguard score` sets once for the whole run
    threads: int | str | None = None

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Scorer:
        """Read a model file written by `VAEAnomalyDetector.save` (never unpickles)."""
        state = FittedState.load(path)
        model, score_state = build_model(state, path, device)
        return cls.from_fitted(model, score_state, state.params["n_importance_samples"], vars(state))

    @classmethod
    def from_fitted(
        cls, model: VAE, score_state: ScoreState, n_importance_samples: int, learned, threads: int | str | None = None
    ) -> Scorer:
        """The scorer of a network and score state with `learned`, the learned fields by their
        FittedState names (a FittedState's, or a detector's by vaeguard.persistence.learned)."""
        threshold = learned["threshold"]
        return cls(
            model=model,
            score_state=score_state,
            input_spec=learned["input"],
            likelihood=learned["likelihood"],
            score_type=learned["score_type"],
            seed=learned["seed"],
            n_importance_samples=n_importance_samples,
            mean=learned["mean"],
            scale=learned["scale"],
            calibration_scores=learned["calibration_scores"],
            threshold=None if threshold is None else float(threshold),
            threads=threads,
        )

    @functools.cached_property
    def rows(self) -> int:
        """Rows per scoring block (scoring.scoring_rows): the memory budget is checked once per
        Scorer, on its first scoring call, not once per chunk."""
        return scoring_rows(self.model.cfg, self.score_type, self.n_importance_samples, self.score_state)

    def prepare(self, X) -> np.ndarray:
        """Raw rows (n, n_features) -> the float32 rows the network reads: checked (DataError
        naming the row and column of an infinite value, or of one outside [0, 1] for the
        bernoulli likelihood, or a row with every cell missing), rounded to float32,
        standardised; a missing cell stays NaN."""
        return standardize(self._checked(X), self.mean, self.scale, self.input_spec)

    def _checked(self, X) -> np.ndarray:
        """Raw rows checked as `prepare` says and rounded to float32, not standardised."""
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        n_features = self.input_spec.n_features
        if X.ndim != 2 or X.shape[1] != n_features:
            raise DataError(f"expected rows of {n_features} features, got an array of shape {X.shape}")
        check_finite(X, self.input_spec)
        with np.errstate(over="ignore"):  # beyond float32: inf, and the score says so (not finite)
            X = X.astype(np.float32, copy=False)
        check_unit_range(X, self.likelihood, self.input_spec)
        return X

    @functools.cached_property
    def chunk_rows(self) -> int:
        """Rows prepared and scored at a time: whole blocks (so every row meets the network in
        the block it would meet over all of X, and scores the same) of about CHUNK_VALUES values."""
        unit = self.rows if self.score_type != "iwae" else math.lcm(self.rows, iwae_rows(self.n_importance_samples))
        return unit * max(1, CHUNK_VALUES // (unit * self.input_spec.n_features))

    def score_and_explain(self, X, *, explain: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The scoring front-end: anomaly scores of raw rows (float64, higher = more anomalous)
        and, with `explain`, the per-feature reconstruction NLL, from one forward pass."""
        X = self._checked(X)
        with contextlib.nullcontext() if self.threads is None else threads_for(self.threads):
            return self._score_chunks(X, explain)

    def _score_chunks(self, X: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        step = self.chunk_rows
        if len(X) <= step:
            return self._score_chunk(X, explain)
        scores = np.empty(len(X))
        features = np.empty(X.shape) if explain else None  # filled in place: no second copy to concatenate
        for start in range(0, len(X), step):
            part, part_features = self._score_chunk(X[start : start + step], explain)
            scores[start : start + step] = part
            if explain:
                features[start : start + step] = part_features
        return scores, features

    def _score_chunk(self, X: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        code_length = self.score_state.code_length
        return score_and_explain(
            self.model, standardize(X, self.mean, self.scale, self.input_spec), self.score_type,
            n_samples=self.n_importance_samples, seed=self.seed, explain=explain, state=self.score_state, rows=self.rows,
            code_lengths=None if code_length is None else code_length.nats(X),
        )

    def anomaly_score(self, X) -> np.ndarray:
        return self.score_and_explain(X, explain=False)[0]


def as_scorer(model) -> Scorer:
    """`model` itself when it is a Scorer, else the scorer of a fitted VAEAnomalyDetector."""
    return model if isinstance(model, Scorer) else model.scorer()
