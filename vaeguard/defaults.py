"""Default resolution: what each "auto" parameter of the estimator becomes on the data it is fitted on.

Pure functions of the parameters and what the data says (its range, its input description,
its size); `VAEAnomalyDetector.fit` calls them and keeps their answers as fitted attributes
(`likelihood_`, `score_type_`, `config_`, ...). The reasoning behind each rule is in the
estimator's docstring and the README ("Which score").
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .inputs import ImageInput, InputSpec, TableInput, default_columns
from .model import VAEConfig
from .training import TrainConfig, auto_epochs, auto_patience

# The input-complexity corrections ("ratio" for near-binary images, the code length in "fused"
# for grey levels) apply from this image height and width up. A generic coder that predicts a
# pixel from its neighbours needs an image larger than its neighbourhood: "ratio" measured
# better than "elbo" on 28x28 MNIST and worse on scikit-learn's 8x8 digits; the code length
# raised Fashion-MNIST (28x28) and cut the 8x8 digits from 0.920 to 0.785 (README, "Which score").
COMPLEXITY_MIN_SIDE = 16
# likelihood="auto" picks "bernoulli" for data in [0, 1] only when the values sit near 0 and 1:
# the mean of 4·x·(1 - x) (0 for binary data, 1 for all values at 0.5) is at most this.
# Measured: MNIST digits 0.04-0.09 (strokes on background), Fashion-MNIST classes 0.21-0.38,
# scikit-learn's 8x8 digits 0.28 (grey levels). Grey-level data gets the gaussian likelihood.
BINARY_MAX_SPREAD = 0.15


def grey_spread(X: np.ndarray, max_rows: int = 10_000) -> float:
    """Mean of 4·x·(1 - x) over (at most the first max_rows rows of) X in [0, 1].

    0 when every value is 0 or 1, 1 when every value is 0.5: how far the data is from binary,
    which decides whether a Bernoulli likelihood describes it.
    """
    sample = np.asarray(X[:max_rows], dtype=np.float64)
    return float(np.nanmean(4.0 * sample * (1.0 - sample))) if sample.size else 0.0


def input_spec(X: np.ndarray, spec: InputSpec | None, input_shape, feature_names) -> InputSpec:
    """What the columns of X are: `spec` when given, else an image of `input_shape` when set,
    else a table named by `feature_names` (a DataFrame's columns) or x0, x1, ..."""
    if spec is not None:
        if spec.n_features != X.shape[1]:
            raise DataError(f"the input description has {spec.n_features} features but X has {X.shape[1]}")
        return spec
    if input_shape is not None:
        image = ImageInput(tuple(input_shape))
        if image.n_features != X.shape[1]:
            raise DataError(f"input_shape {tuple(image.shape)} holds {image.n_features} values, but X has {X.shape[1]} features")
        return image
    columns = tuple(str(c) for c in feature_names) if feature_names is not None else default_columns(X.shape[1])
    return TableInput(columns, ("float64",) * X.shape[1])


def likelihood(option: str, X: np.ndarray) -> str:
    """"bernoulli" or "gaussian" for `option` ("auto" or one of them) on X (or its range)."""
    low, high = np.nanmin(X), np.nanmax(X)  # a missing cell (NaN) has no value to check
    in_unit_range = bool(low >= 0.0 and high <= 1.0)
    if option == "auto":
        return "bernoulli" if in_unit_range and grey_spread(X) <= BINARY_MAX_SPREAD else "gaussian"
    if option == "bernoulli" and not in_unit_range:
        raise DataError(
            f"the bernoulli likelihood needs every value in [0, 1], but X ranges from "
            f"{low:g} to {high:g}; rescale the data or use likelihood='gaussian'"
        )
    return option


def standardizes(option: str | bool, likelihood: str) -> bool:
    """Whether the features are standardised: `option`, or with "auto" for gaussian only."""
    standardize = option if option != "auto" else likelihood == "gaussian"
    if standardize and likelihood == "bernoulli":
        raise ValueError("standardize=True cannot be combined with the bernoulli likelihood, which needs data in [0, 1]")
    return bool(standardize)


def image_shape(spec: InputSpec) -> tuple[int, int, int] | None:
    """(C, H, W) when the rows were declared images (input_shape or an image input), else None."""
    return spec.image_shape


def has_context_model(likelihood: str, spec: InputSpec) -> bool:
    """Whether the score state holds a pixel-context model: images in [0, 1] (bernoulli)."""
    return likelihood == "bernoulli" and image_shape(spec) is not None


def has_pixel_range(spec: InputSpec) -> bool:
    """Whether the score state holds the training range of each pixel (vaeguard.pixelrange):
    every image model, whatever its likelihood or score."""
    return image_shape(spec) is not None


def _large_image(spec: InputSpec) -> bool:
    shape = image_shape(spec)
    return shape is not None and min(shape[1:]) >= COMPLEXITY_MIN_SIDE


def has_code_length(likelihood: str, spec: InputSpec, score: str) -> bool:
    """Whether the "fused" score subtracts each image's code length from its reconstruction NLL
    (complexity.ImageCodeLength): grey-level images (gaussian) of at least COMPLEXITY_MIN_SIDE
    pixels a side. The bernoulli likelihood of near-binary images is no code length of grey
    levels; their "ratio" is the correction there."""
    return score == "fused" and likelihood == "gaussian" and _large_image(spec)


def score_type(option: str, likelihood: str, spec: InputSpec) -> str:
    """The score for `option`: "auto" is "ratio" for near-binary images of at least
    COMPLEXITY_MIN_SIDE pixels a side, "fused" for the gaussian likelihood, else "elbo"."""
    context = has_context_model(likelihood, spec)
    if option == "auto":
        if context and _large_image(spec):
            return "ratio"
        return "fused" if likelihood == "gaussian" else "elbo"
    if option == "ratio" and not context:
        raise ValueError(
            "score_type='ratio' needs images with values in [0, 1]: pass input_shape=(C, H, W) "
            "(or fit on an image folder) and the bernoulli likelihood"
        )
    return option


def architecture(option: str) -> str:
    """`option` itself, or "mlp" for "auto", whatever the input. The convolutional network is
    more accurate on grey-level images (Fashion-MNIST one-class 0.9603 against 0.9547) and
    4-5 times slower on a CPU, which put a default fit and its scoring behind PyOD's VAE; the
    MLP meets both and stays above every peer (README, "Which network")."""
    return "mlp" if option == "auto" else option


def network(params: dict, n_features: int, likelihood: str, spec: InputSpec) -> VAEConfig:
    """The VAE's configuration from the estimator's parameters and the resolved input."""
    arch = architecture(params["architecture"])
    shape = image_shape(spec)
    if arch == "conv" and shape is None:
        raise ValueError(
            f"architecture='conv' needs images: pass input_shape=(C, H, W) for the {n_features} "
            "features (or fit on an image folder)"
        )
    return VAEConfig(
        input_dim=n_features,
        latent_dim=params["latent_dim"],
        hidden_dims=tuple(params["hidden_dims"]),
        likelihood=likelihood,
        architecture=arch,
        # the image shape when the network or the context model reads images
        input_shape=shape if arch == "conv" or has_context_model(likelihood, spec) else None,
        groups=getattr(spec, "groups", ()),
        variance_floor=likelihood == "gaussian" and spec.kind == "images",
        relative_levels=bool(getattr(spec, "groups", ())),
    )


def training(params: dict, n_train: int) -> TrainConfig:
    """The training configuration; "auto" epochs and patience from the number of training rows."""
    batch_size = params["batch_size"]
    return TrainConfig(
        epochs=auto_epochs(n_train, batch_size) if params["epochs"] == "auto" else params["epochs"],
        batch_size=batch_size,
        learning_rate=params["learning_rate"],
        beta=params["beta"],
        kl_warmup_epochs=params["kl_warmup_epochs"],
        patience=auto_patience(n_train, batch_size) if params["patience"] == "auto" else params["patience"],
        verbose=bool(params["verbose"]),
    )
