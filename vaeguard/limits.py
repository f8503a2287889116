"""Size limits, checked before anything large is allocated. The one place they are set.

A hostile or mistaken size (a model file describing a 12,500,000-wide layer, `--latent-dim
100000000`, `--image-size 100000x100000`, n_importance_samples=10**9) must become a clear
error, not a machine swapping itself to death or an allocation traceback. So:

- `MEMORY_BUDGET_BYTES` (default 4 GiB; environment variable VAEGUARD_MEMORY_BUDGET_GB) bounds
  what one model may need: its parameters (times 4 when training: weights, gradients and two
  Adam moments) plus the activations of one batch of rows, estimated by `vaeguard.footprint`
  (which builds the network on PyTorch's "meta" device: this module imports no network).
- `MAX_IMAGE_PIXELS` bounds one image file decoded (width x height, read from its header
  before decoding): above it the file gets a per-file error.
- `MAX_INPUT_FEATURES` bounds the width of a row (C x H x W for images).
- `MAX_IMPORTANCE_SAMPLES` bounds K of the importance-weighted score.
- `MAX_EPOCHS` bounds `epochs` (`--epochs`).
- `MAX_SAMPLES` and `MAX_INTERPOLATION_STEPS` bound the rows one `sample` or `interpolate`
  call generates (the CLI's `--n` and `--steps` use the same numbers).
"""

from __future__ import annotations

import math
import os

from .errors import DataError


def _budget_from_env() -> int:
    text = os.environ.get("VAEGUARD_MEMORY_BUDGET_GB", "").strip()
    if not text:
        return 4 * 2**30
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"VAEGUARD_MEMORY_BUDGET_GB must be a number of gigabytes, got {text!r}") from None
    if not 0 < value < 2**20:
        raise DataError(f"VAEGUARD_MEMORY_BUDGET_GB must be a positive number of gigabytes, got {text!r}")
    return int(value * 2**30)


try:
    MEMORY_BUDGET_BYTES, _BUDGET_ERROR = _budget_from_env(), None
except DataError as exc:  # raised where the budget is used, as a one-line error, not at import (--help must work)
    MEMORY_BUDGET_BYTES, _BUDGET_ERROR = 4 * 2**30, exc


def memory_budget() -> int:
    """The memory budget in bytes; DataError when VAEGUARD_MEMORY_BUDGET_GB is not a valid size."""
    if _BUDGET_ERROR is not None:
        raise _BUDGET_ERROR
    return MEMORY_BUDGET_BYTES


MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb warning threshold (2**30 / 4 / 3)
MAX_INPUT_FEATURES = 4_000_000
MAX_IMPORTANCE_SAMPLES = 100_000
MAX_SAMPLES = 100_000
MAX_INTERPOLATION_STEPS = 1_000
MAX_EPOCHS = 100_000  # an epoch cap beyond any real training: a typo (10**23) becomes a clear error
# Widths of a layer or a code: anything larger cannot fit the budget with any input.
MAX_WIDTH = 2**28


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def check_input_features(n_features: int, what: str = "a row") -> None:
    """DataError when rows of `n_features` values are over MAX_INPUT_FEATURES."""
    if n_features > MAX_INPUT_FEATURES:
        raise DataError(
            f"{what} holds {n_features:,} values, over the limit of {MAX_INPUT_FEATURES:,} "
            "(for images: pass a smaller --image-size)"
        )


def check_importance_samples(n_samples: int) -> None:
    if not 1 <= n_samples <= MAX_IMPORTANCE_SAMPLES:
        raise DataError(f"n_importance_samples must be between 1 and {MAX_IMPORTANCE_SAMPLES:,}, got {n_samples:,}")


def check_generated_rows(name: str, n: int, cap: int, n_features: int) -> None:
    """DataError when `name` asks for more than `cap` generated rows, or for rows of
    `n_features` values that would not fit the memory budget, checked before allocating.

    About 24 bytes a value: the decoded float32 rows, then the float64 rows in the units of X
    and the temporary between them.
    """
    if n > cap:
        raise DataError(f"{name} is {n:,}, over the limit of {cap:,} per call")
    need = 24 * n * n_features
    if need > memory_budget():
        raise DataError(
            f"{name} is {n:,}: rows of {n_features:,} values would need about {gib(need)}, over the memory budget "
            f"of {gib(MEMORY_BUDGET_BYTES)}: ask for fewer or raise VAEGUARD_MEMORY_BUDGET_GB"
        )


def check_image_shape(shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    if h * w > MAX_IMAGE_PIXELS or math.prod(shape) > MAX_INPUT_FEATURES:
        raise DataError(
            f"image size {h}x{w} with {c} channel{'s' if c > 1 else ''} is {c * h * w:,} values per image, "
            f"over the limit of {MAX_INPUT_FEATURES:,}; pass a smaller --image-size"
        )
