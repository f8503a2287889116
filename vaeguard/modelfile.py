"""The model file: one safetensors file holding arrays plus a JSON description.

safetensors stores raw tensors behind a JSON header and never unpickles, so opening a model
file from an untrusted source cannot run code. The description (architecture, input,
threshold, library versions, training history) travels in the header's metadata.

`FittedState` is the one list of what a fitted detector is: the estimator's `save` and `load`
and `vaeguard info` all go through it, and it imports no torch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as safetensors_bytes

from .atomic import atomic_write
from .errors import DataError, ModelFileError
from .inputs import InputSpec, input_from_dict

FORMAT = "vaeguard-model"
# 2: the input description is a field of its own ("input"); version 1 kept it in metadata.
FORMAT_VERSION = 2
_READABLE_VERSIONS = ("1", "2")
WEIGHT_PREFIX = "model."


def write_model_file(path: str | Path, description: dict, arrays: dict[str, np.ndarray], *, inputs=()) -> Path:
    """Write arrays and a JSON-serialisable description to `path`, atomically.

    `inputs` are files the model file must not replace (see atomic.check_output).
    """
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "description": json.dumps(description, allow_nan=True),
    }
    payload = safetensors_bytes({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", inputs=inputs) as fh:
        fh.write(payload)
    return path


def read_model_file(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model file; anything that is not a vaeguard model file raises ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
            arrays = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path} is not a readable vaeguard model file (it may be corrupt, truncated or "
            f"another format): {exc}"
        ) from None
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a safetensors file but not a vaeguard model file")
    version = metadata.get("format_version", "?")
    if version not in _READABLE_VERSIONS:
        raise ModelFileError(
            f"{path} uses model file format version {version}; this vaeguard reads versions "
            f"{', '.join(_READABLE_VERSIONS)}. Upgrade vaeguard or retrain the model."
        )
    text = metadata.get("description")
    if text is None:
        raise ModelFileError(f"{path} has no model description (field 'description' of the header)")
    depth = _nesting_depth(text)
    if depth > MAX_DESCRIPTION_DEPTH:
        raise ModelFileError(f"{path}: the model description nests {depth} levels deep (at most {MAX_DESCRIPTION_DEPTH})")
    try:
        description = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path} has a damaged model description: {exc}") from None
    if version == "1" and isinstance(description, dict):
        description = _upgrade_from_version_1(description)
    return description, arrays


def _upgrade_from_version_1(description: dict) -> dict:
    """Version 1 kept the input description in metadata["input"], a table's columns under "schema"."""
    metadata = dict(description.get("metadata") or {})
    old = metadata.pop("input", None)
    if isinstance(old, dict) and old.get("kind") == "table" and isinstance(old.get("schema"), dict):
        old = {"kind": "table", **old["schema"]}
    return {**description, "metadata": metadata, "input": old}


def is_standardizing(mean: np.ndarray, scale: np.ndarray) -> bool:
    """False when (mean, scale) is the identity (zeros and ones): data used as it is."""
    return bool(np.any(scale != 1) or np.any(mean != 0))


@dataclass
class FittedState:
    """Everything a fitted detector is, as JSON-able fields and named arrays."""

    params: dict  # the estimator's constructor parameters
    model_config: dict  # VAEConfig fields
    input: InputSpec
    likelihood: str
    score_type: str
    seed: int
    n_features_in: int
    feature_names_in: list[str] | None
    threshold: float
    threshold_rule: dict
    n_epochs: int
    history: dict
    weights: dict[str, np.ndarray]  # the VAE's state_dict
    calibration_scores: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    metadata: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    _FITTED = ("likelihood", "score_type", "seed", "n_features_in", "threshold", "threshold_rule", "n_epochs")

    @property
    def standardizes(self) -> bool:
        """Whether features are standardised before the network sees them."""
        return is_standardizing(self.mean, self.scale)

    def save(self, path: str | Path, *, inputs=()) -> Path:
        fitted = {name: getattr(self, name) for name in self._FITTED}
        fitted["feature_names_in"] = self.feature_names_in
        description = {
            "params": self.params,
            "model_config": self.model_config,
            "input": self.input.to_dict(),
            "fitted": fitted,
            "history": self.history,
            "metadata": self.metadata,
            "versions": self.versions,
        }
        arrays = {WEIGHT_PREFIX + k: v for k, v in self.weights.items()}
        arrays.update(calibration_scores=self.calibration_scores, mean=self.mean, scale=self.scale)
        return write_model_file(path, description, arrays, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path) -> "FittedState":
        """Read and check a model file; ModelFileError naming the file and the bad field."""
        description, arrays = read_model_file(path)
        try:
            return cls._from_description(description, arrays)
        except (ModelFileError, DataError) as exc:
            raise ModelFileError(f"{path} does not describe a valid vaeguard model: {exc}") from None

    @classmethod
    def _from_description(cls, description, arrays: dict[str, np.ndarray]) -> "FittedState":
        check_description(description)  # every field by name and type (see _FIELDS)
        check_model_arrays(description, arrays)
        fitted = description["fitted"]
        if description["input"] is None:
            raise ModelFileError("field 'input' is missing: train the model with this vaeguard")
        spec = input_from_dict(description["input"], "field 'input'")
        n = fitted["n_features_in"]
        if spec.n_features != n:
            raise ModelFileError(f"field 'input' describes {spec.n_features} features, the model has {n}")
        return cls(
            params=description["params"],
            model_config=description["model_config"],
            input=spec,
            feature_names_in=fitted["feature_names_in"],
            history=description["history"],
            weights={k[len(WEIGHT_PREFIX):]: v for k, v in arrays.items() if k.startswith(WEIGHT_PREFIX)},
            calibration_scores=np.asarray(arrays["calibration_scores"], dtype=np.float64),
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            scale=np.asarray(arrays["scale"], dtype=np.float64),
            metadata=description["metadata"],
            versions=description["versions"],
            **{name: fitted[name] for name in cls._FITTED},
        )


MAX_DESCRIPTION_DEPTH = 32


def _nesting_depth(text: str) -> int:
    """How deep JSON arrays and objects nest in `text` (brackets inside strings ignored)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text).encode("utf-8", errors="replace")
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_ints(v) -> bool:
    return isinstance(v, list) and all(_is_int(x) and x >= 1 for x in v)


# What every field the library reads must hold: (dotted field, test, what it must be).
_FIELDS = [
    ("params", lambda v: isinstance(v, dict), "an object"),
    ("params.hidden_dims", _positive_ints, "a list of integers >= 1"),
    ("params.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("params.learning_rate", _is_number, "a number"),
    ("params.beta", _is_number, "a number"),
    ("params.n_importance_samples", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("model_config", lambda v: isinstance(v, dict), "an object"),
    ("model_config.input_dim", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("model_config.latent_dim", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("model_config.hidden_dims", _positive_ints, "a list of integers >= 1"),
    ("model_config.likelihood", lambda v: isinstance(v, str), "a string"),
    ("model_config.architecture", lambda v: isinstance(v, str), "a string"),
    ("model_config.input_shape", lambda v: v is None or (_positive_ints(v) and len(v) == 3), "null or [channels, height, width]"),
    ("model_config.conv_channels", _positive_ints, "a list of integers >= 1"),
    ("model_config.context_model", lambda v: isinstance(v, bool), "true or false"),
    ("fitted", lambda v: isinstance(v, dict), "an object"),
    ("fitted.likelihood", lambda v: isinstance(v, str), "a string"),
    ("fitted.score_type", lambda v: isinstance(v, str), "a string"),
    ("fitted.seed", _is_int, "an integer"),
    ("fitted.n_features_in", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("fitted.feature_names_in", lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)), "null or a list of strings"),
    ("fitted.threshold", lambda v: _is_number(v) and math.isfinite(v), "a finite number"),
    ("fitted.threshold_rule", lambda v: _valid_rule(v), "an object such as {\"rule\": \"fpr\", \"fpr\": 0.01, \"n_calibration\": 100}"),
    ("fitted.n_epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("history", lambda v: isinstance(v, dict) and all(isinstance(x, list) and all(_is_number(y) for y in x) for x in v.values()), "an object of number lists"),
    ("input", lambda v: v is None or isinstance(v, dict), "an object such as {\"kind\": \"images\", \"shape\": [1, 28, 28]}"),
    ("metadata", lambda v: isinstance(v, dict), "an object"),
    ("versions", lambda v: isinstance(v, dict), "an object"),
]


def _valid_rule(rule) -> bool:
    """A threshold rule as calibration.describe_threshold_rule reads it."""
    if not isinstance(rule, dict) or not isinstance(rule.get("rule"), str):
        return False
    needs = {
        "fpr": {"fpr": _is_number, "n_calibration": _is_int},
        "contamination": {"contamination": _is_number},
        "recall": {"recall": _is_number, "n_labelled": _is_int},
        "f1": {"n_labelled": _is_int},
        "youden": {"n_labelled": _is_int},
    }.get(rule.get("rule"))
    return needs is not None and all(key in rule and test(rule[key]) for key, test in needs.items())


def check_description(description) -> None:
    """ModelFileError naming the first field (see _FIELDS) that is missing or holds the wrong type."""
    if not isinstance(description, dict):
        raise ModelFileError(f"the model description must be a JSON object, not {type(description).__name__}")
    for name, test, what in _FIELDS:
        parent, _, key = name.rpartition(".")
        holder = description
        for part in filter(None, parent.split(".")):
            holder = holder[part]
        if key not in holder:
            raise ModelFileError(f"the model description lacks the field '{name}'")
        try:
            valid = bool(test(holder[key]))
        except (TypeError, ValueError, AttributeError, KeyError):
            valid = False
        if not valid:
            raise ModelFileError(f"field '{name}' of the model description must be {what}, got {_shown(holder[key])}")


def check_model_arrays(description: dict, arrays: dict[str, np.ndarray], path: str | Path | None = None) -> None:
    """ModelFileError naming the first tensor that holds NaN/inf or breaks the fitted state's shape.

    Expected: `mean` and `scale` of length n_features_in (scale > 0), `calibration_scores`
    one-dimensional and non-empty, every tensor finite.
    """
    where = f"{path}: " if path else ""
    n = description["fitted"]["n_features_in"]
    for name in ("mean", "scale", "calibration_scores"):
        if name not in arrays:
            raise ModelFileError(f"{where}tensor '{name}' is missing from the file")
    for name in ("mean", "scale"):
        if arrays[name].shape != (n,):
            raise ModelFileError(f"{where}tensor '{name}' has shape {list(arrays[name].shape)}, expected [{n}] (n_features_in)")
    if arrays["calibration_scores"].ndim != 1 or arrays["calibration_scores"].size == 0:
        raise ModelFileError(f"{where}tensor 'calibration_scores' must be a non-empty list of scores")
    for name, values in arrays.items():
        if values.dtype.kind not in "fiub":
            raise ModelFileError(f"{where}tensor '{name}' has dtype {values.dtype}, not a number type")
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ModelFileError(f"{where}tensor '{name}' holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    if not (arrays["scale"] > 0).all():
        raise ModelFileError(f"{where}tensor 'scale' holds {int((arrays['scale'] <= 0).sum())} value(s) <= 0; a scale must be positive")


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
