"""Size limits, checked before anything large is allocated. The one place they are set.

A hostile or mistaken size (a model file describing a 12,500,000-wide layer, `--latent-dim
100000000`, `--image-size 100000x100000`, n_importance_samples=10**9) must become a clear
error, not a machine swapping itself to death or an allocation traceback. So:

- `MEMORY_BUDGET_BYTES` (default 4 GiB; environment variable VAEGUARD_MEMORY_BUDGET_GB) bounds
  what one model may need: its parameters (times 4 when training: weights, gradients and two
  Adam moments) plus the activations of one batch of rows. The estimate builds the network
  on PyTorch's "meta" device, which records shapes and allocates nothing, and counts the
  activations from the layer shapes.
- `MAX_IMAGE_PIXELS` bounds one image file decoded (width x height, read from its header
  before decoding): above it the file gets a per-file error.
- `MAX_INPUT_FEATURES` bounds the width of a row (C x H x W for images).
- `MAX_IMPORTANCE_SAMPLES` bounds K of the importance-weighted score.
- `MAX_EPOCHS` bounds `epochs` (`--epochs`).
- `MAX_SAMPLES` and `MAX_INTERPOLATION_STEPS` bound the rows one `sample` or `interpolate`
  call generates (the CLI's `--n` and `--steps` use the same numbers).
"""

from __future__ import annotations

import functools
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


def model_footprint(cfg) -> tuple[int, int]:
    """(number of parameters, activation values per row) of the VAE `cfg` describes.

    The network is built on the meta device (shapes only, no memory, whatever the sizes) and
    its activations are counted by shape arithmetic: running even a meta forward pass would
    import torch's compiler stack (about 75 MB and a second on every model load).
    """
    import json

    return _footprint(json.dumps(cfg.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=64)
def _footprint(cfg_json: str) -> tuple[int, int]:
    import json

    import torch

    from .model import VAE, VAEConfig

    cfg = VAEConfig(**json.loads(cfg_json))
    for name in ("input_dim", "latent_dim"):
        value = getattr(cfg, name)
        if value > MAX_WIDTH:
            raise DataError(f"{name} {value:,} is over the limit of {MAX_WIDTH:,}")
    for name in ("hidden_dims", "conv_channels"):
        for value in getattr(cfg, name):
            if value > MAX_WIDTH:
                raise DataError(f"{name} holds {value:,}, over the limit of {MAX_WIDTH:,}")
    with torch.device("meta"):
        model = VAE(cfg)
    n_params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    encoder_in = cfg.input_shape if cfg.architecture == "conv" else (cfg.input_dim,)
    per_row = _layer_outputs(model.encoder, encoder_in) + _layer_outputs(model.decoder, (cfg.latent_dim,))
    return int(n_params), per_row + 3 * cfg.input_dim


def _layer_outputs(part, shape: tuple[int, ...]) -> int:
    """Values per row that the layers of `part` (an encoder or a decoder) output, in order."""
    from torch import nn

    total = 0
    for layer in part.modules():
        if any(True for _ in layer.children()):
            continue
        if isinstance(layer, nn.Linear):
            shape = (layer.out_features,)
        elif isinstance(layer, nn.Flatten):
            shape = (math.prod(shape),)
        elif isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            if len(shape) == 1:  # the decoder's view of its flat features as an image
                shape = part.feature_shape
            shape = (layer.out_channels, *(_conv_output(n, layer, i) for i, n in enumerate(shape[1:])))
        total += math.prod(shape)  # an activation keeps its input's shape
    return total


def _conv_output(n: int, layer, axis: int) -> int:
    """Output length along `axis` (0: height, 1: width) of a Conv2d or ConvTranspose2d layer."""
    from torch import nn

    k, s, p, d = layer.kernel_size[axis], layer.stride[axis], layer.padding[axis], layer.dilation[axis]
    if isinstance(layer, nn.ConvTranspose2d):
        return (n - 1) * s - 2 * p + d * (k - 1) + layer.output_padding[axis] + 1
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def check_model_size(cfg, *, rows: int = 1, samples: int = 1, training: bool = False) -> int:
    """Bytes the model needs for `rows` rows (x `samples` codes each); DataError over the budget.

    An estimate meant to err on the large side: parameters (x4 when training: weights,
    gradients, two Adam moments) plus every layer's output for the rows, x4 for temporaries
    and x3 more when training (the backward pass).
    """
    check_input_features(cfg.input_dim)
    n_params, per_row = model_footprint(cfg)
    # x4: the temporaries around each layer's output (clamp, exp, squares); x3 more to train.
    need = 4 * n_params * (4 if training else 1) + 4 * per_row * rows * samples * 4 * (3 if training else 1)
    if need > memory_budget():
        raise DataError(
            f"this model would need about {gib(need)} ({n_params:,} parameters; input {cfg.input_dim:,}, "
            f"hidden {list(cfg.hidden_dims)}, latent {cfg.latent_dim:,}), over the memory budget of "
            f"{gib(MEMORY_BUDGET_BYTES)}: use smaller layers, a smaller image size, or raise "
            "VAEGUARD_MEMORY_BUDGET_GB"
        )
    return need


def check_image_shape(shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    if h * w > MAX_IMAGE_PIXELS or math.prod(shape) > MAX_INPUT_FEATURES:
        raise DataError(
            f"image size {h}x{w} with {c} channel{'s' if c > 1 else ''} is {c * h * w:,} values per image, "
            f"over the limit of {MAX_INPUT_FEATURES:,}; pass a smaller --image-size"
        )


def check_model_tensors(cfg, arrays: dict, prefix: str = "model.") -> None:
    """ModelFileError unless the network tensors in `arrays` are exactly those `cfg` describes.

    Compares names and shapes with the network built on the meta device (nothing allocated),
    so a description claiming layers larger than the file holds is refused before any
    allocation, then checks the memory budget.
    """
    import torch

    from .errors import ModelFileError
    from .model import VAE

    model_footprint(cfg)  # the width limits, before building anything
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VAE(cfg).state_dict().items()}
    found = {k[len(prefix):]: tuple(v.shape) for k, v in arrays.items() if k.startswith(prefix)}
    for name, shape in expected.items():
        if name not in found:
            raise ModelFileError(f"tensor '{prefix}{name}' is missing from the file (the description needs shape {list(shape)})")
        if found[name] != shape:
            raise ModelFileError(
                f"tensor '{prefix}{name}' has shape {list(found[name])} in the file, but the description "
                f"(hidden {list(cfg.hidden_dims)}, latent {cfg.latent_dim}) needs {list(shape)}"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ModelFileError(f"tensor '{prefix}{extra[0]}' is in the file but not in the network the description builds")
    check_model_size(cfg)
