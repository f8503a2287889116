"""What a network needs in memory, and whether a model file's tensors are the ones it
describes: checked before anything is allocated (the limits themselves are in `limits`).

The network is built on PyTorch's "meta" device, which records shapes and allocates nothing.
This sits at the model's level (it builds a `VAE`), so `limits`, a foundation that data
modules use, does not depend on the network.
"""

from __future__ import annotations

import json
import math

import torch
from torch import nn

from .errors import DataError, ModelFileError
from .limits import MAX_WIDTH, check_input_features, gib, memory_budget
from .model import VAE


def model_footprint(cfg, model: VAE | None = None) -> tuple[int, int]:
    """(number of parameters, activation values per row) of the VAE `cfg` describes.

    The network is built on the meta device (shapes only, no memory, whatever the sizes), or
    `model` (already built from `cfg`, on any device) is counted instead; the answer is kept
    per configuration. Activations are counted by shape arithmetic: running even a meta
    forward pass would import torch's compiler stack (about 75 MB and a second on every load).
    """
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _FOOTPRINTS:
        check_widths(cfg)
        if model is None:
            with torch.device("meta"):
                model = VAE(cfg)
        n_params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        encoder_in = cfg.input_shape if cfg.architecture == "conv" else (cfg.input_dim,)
        per_row = _layer_outputs(model.encoder, encoder_in) + _layer_outputs(model.decoder, (cfg.latent_dim,))
        if len(_FOOTPRINTS) >= _KEPT_FOOTPRINTS:
            _FOOTPRINTS.pop(next(iter(_FOOTPRINTS)))
        _FOOTPRINTS[key] = (int(n_params), per_row + 3 * cfg.input_dim)
    return _FOOTPRINTS[key]


_KEPT_FOOTPRINTS = 64
_FOOTPRINTS: dict[str, tuple[int, int]] = {}  # model_footprint's answers by configuration (JSON)


def check_widths(cfg) -> None:
    """DataError when a layer or code width of `cfg` is over MAX_WIDTH: checked before building."""
    for name in ("input_dim", "latent_dim"):
        value = getattr(cfg, name)
        if value > MAX_WIDTH:
            raise DataError(f"{name} {value:,} is over the limit of {MAX_WIDTH:,}")
    for name in ("hidden_dims", "conv_channels"):
        for value in getattr(cfg, name):
            if value > MAX_WIDTH:
                raise DataError(f"{name} holds {value:,}, over the limit of {MAX_WIDTH:,}")


def _layer_outputs(part, shape: tuple[int, ...]) -> int:
    """Values per row that the layers of `part` (an encoder or a decoder) output, in order."""
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
    k, s, p, d = layer.kernel_size[axis], layer.stride[axis], layer.padding[axis], layer.dilation[axis]
    if isinstance(layer, nn.ConvTranspose2d):
        return (n - 1) * s - 2 * p + d * (k - 1) + layer.output_padding[axis] + 1
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def check_model_size(
    cfg, *, rows: int = 1, samples: int = 1, training: bool = False, extra_values: int = 0, model: VAE | None = None
) -> int:
    """Bytes the model needs for `rows` rows (x `samples` codes each); DataError over the budget.

    An estimate meant to err on the large side: parameters and `extra_values` (the score
    state's, held beside the network) (x4 when training: weights, gradients, two Adam moments)
    plus every layer's output for the rows, x4 for temporaries and x3 more when training (the
    backward pass). `model`: the network already built from `cfg` (see `model_footprint`).
    """
    check_input_features(cfg.input_dim)
    n_params, per_row = model_footprint(cfg, model)
    n_params += extra_values
    # x4: the temporaries around each layer's output (clamp, exp, squares); x3 more to train.
    need = 4 * n_params * (4 if training else 1) + 4 * per_row * rows * samples * 4 * (3 if training else 1)
    if need > memory_budget():
        raise DataError(
            f"this model would need about {gib(need)} ({n_params:,} parameters; input {cfg.input_dim:,}, "
            f"hidden {list(cfg.hidden_dims)}, latent {cfg.latent_dim:,}), over the memory budget of "
            f"{gib(memory_budget())}: use smaller layers, a smaller image size, or raise "
            "VAEGUARD_MEMORY_BUDGET_GB"
        )
    return need


def check_tensor_shapes(module: nn.Module, arrays: dict, cfg) -> None:
    """ModelFileError unless `arrays` are exactly the tensors of `module` (built on the meta
    device from the file's description, nothing allocated), by name and shape."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in arrays.items()}
    for name, shape in expected.items():
        if name not in found:
            raise ModelFileError(f"tensor '{name}' is missing from the file (the description needs shape {list(shape)})")
        if found[name] != shape:
            raise ModelFileError(
                f"tensor '{name}' has shape {list(found[name])} in the file, but the description "
                f"(hidden {list(cfg.hidden_dims)}, latent {cfg.latent_dim}) needs {list(shape)}"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ModelFileError(f"tensor '{extra[0]}' is in the file but not in the network the description builds")
