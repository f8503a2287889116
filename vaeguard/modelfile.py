"""The model file: one safetensors file holding arrays plus a JSON description.

safetensors stores raw tensors behind a JSON header and never unpickles, so opening a model
file from an untrusted source cannot run code. The description (architecture, input,
threshold, library versions, training history) travels in the header's metadata.

`FittedState` is the one list of what a fitted detector is: the estimator's `save` and `load`
(through vaeguard.persistence) and `vaeguard info` all go through it, and it imports no torch.

The header also holds a sha256 digest of the tensors (`tensors_sha256`), checked on every
read: a damaged or altered byte in the weights is refused instead of scoring with changed
results. It guards against damage, not against someone who rewrites the digest too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field, fields
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
DIGEST_KEY = "tensors_sha256"
# The only tensor dtypes a model file holds: the network's weights are F32, the rest F64.
_DTYPE_CODES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}


def tensor_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 (hex) over each tensor's name, dtype, shape and little-endian bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        values = arrays[name]
        code = _DTYPE_CODES[values.dtype.newbyteorder("=")]
        digest.update(json.dumps([name, code, list(values.shape), values.nbytes]).encode())
        digest.update(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).data)
    return digest.hexdigest()


def write_model_file(path: str | Path, description: dict, arrays: dict[str, np.ndarray], *, inputs=()) -> Path:
    """Write arrays and a JSON-serialisable description to `path`, atomically.

    `inputs` are files the model file must not replace (see atomic.check_output). Every array
    must be float32 or float64.
    """
    path = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    odd = [f"{k} ({v.dtype})" for k, v in arrays.items() if v.dtype.newbyteorder("=") not in _DTYPE_CODES]
    if odd:
        raise ValueError(f"a model file holds float32 and float64 arrays only, not {', '.join(odd)}")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "description": json.dumps(description, allow_nan=True),
        DIGEST_KEY: tensor_digest(arrays),
    }
    payload = safetensors_bytes(arrays, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", inputs=inputs) as fh:
        fh.write(payload)
    return path


def read_model_file(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model file; anything that is not a vaeguard model file raises ModelFileError."""
    description, arrays, digest = _read(path)
    check_digest(path, arrays, digest)
    return description, arrays


def _read(path: str | Path) -> tuple[object, dict[str, np.ndarray], str | None]:
    """The parsed description, the arrays and the stored digest (None in older files)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
            dtypes = {key: fh.get_slice(key).get_dtype() for key in fh.keys()}
            arrays = {key: fh.get_tensor(key) for key, dtype in dtypes.items() if dtype in _DTYPE_CODES.values()}
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
            f"{path} uses model file format version {_shown(version)}; this vaeguard reads versions "
            f"{', '.join(_READABLE_VERSIONS)}. Upgrade vaeguard or retrain the model."
        )
    for key, dtype in dtypes.items():
        if key not in arrays:
            raise ModelFileError(
                f"{path}: tensor {key!r} has dtype {dtype}; a vaeguard model file holds only "
                f"{' and '.join(_DTYPE_CODES.values())} tensors"
            )
    text = metadata.get("description")
    if text is None:
        raise ModelFileError(f"{path} has no model description (field 'description' of the header)")
    depth = _nesting_depth(text)
    if depth > MAX_DESCRIPTION_DEPTH:
        raise ModelFileError(f"{path}: the model description nests {depth} levels deep (at most {MAX_DESCRIPTION_DEPTH})")
    try:
        description = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer of over 4,300 digits
        raise ModelFileError(f"{path} has a damaged model description: {exc}") from None
    if version == "1" and isinstance(description, dict):
        description = _upgrade_from_version_1(path, description)
    return description, arrays, metadata.get(DIGEST_KEY)


def check_digest(path: str | Path, arrays: dict[str, np.ndarray], digest: str | None) -> None:
    """ModelFileError when the tensors do not match the stored digest; a warning when there is none."""
    if digest is None:
        warnings.warn(
            f"{path} has no tensor digest (written by an older vaeguard), so damage to its weights "
            "cannot be detected; save it again to add one",
            UserWarning,
            stacklevel=3,
        )
    elif digest != tensor_digest(arrays):
        raise ModelFileError(f"{path}: tensor data does not match its digest: the file was altered or damaged")


def _upgrade_from_version_1(path: Path, description: dict) -> dict:
    """Version 1 kept the input description in metadata["input"], a table's columns under "schema"."""
    metadata = description.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: field 'metadata' of the model description must be an object, got {_shown(metadata)}")
    metadata = dict(metadata)
    old = metadata.pop("input", None)
    if isinstance(old, dict) and old.get("kind") == "table" and isinstance(old.get("schema"), dict):
        old = {"kind": "table", **old["schema"]}
    return {**description, "metadata": metadata, "input": old}


def is_standardizing(mean: np.ndarray, scale: np.ndarray) -> bool:
    """False when (mean, scale) is the identity (zeros and ones): data used as it is."""
    return bool(np.any(scale != 1) or np.any(mean != 0))


# The score state (scoring.ScoreState) travels where format 2 put it, inside the network: its
# shape in `model_config`, its tensors among the "model." ones. So files of every version read
# alike, and the network's part of the file is the VAE alone once these are set apart.
SCORE_CONFIG_FIELDS = ("context_model", "latent_neighbours", "code_length", "pixel_range")
SCORE_TENSOR_PREFIXES = ("context.", "neighbours.", "code_length.", "pixel_range.")


def _learned(attribute: str, section: str | None = None):
    """A FittedState field that a fitted estimator holds as `attribute`; `section`: where the
    file keeps it ("fitted": the description's "fitted" object, "arrays": a float64 tensor)."""
    return field(metadata={"attribute": attribute, "section": section})


@dataclass
class FittedState:
    """Everything a fitted detector is, as JSON-able fields and named arrays: the one list of
    its learned attributes (each field's `attribute`; vaeguard.persistence copies them)."""

    params: dict  # the estimator's constructor parameters
    model_config: dict  # VAEConfig fields: the network
    score_config: dict  # scoring.ScoreState.config(): what the score reads beside the network
    weights: dict[str, np.ndarray]  # the VAE's state_dict
    score_tensors: dict[str, np.ndarray]  # the ScoreState's state_dict
    input: InputSpec = _learned("input_spec_")
    likelihood: str = _learned("likelihood_", "fitted")
    score_type: str = _learned("score_type_", "fitted")
    seed: int = _learned("seed_", "fitted")
    n_features_in: int = _learned("n_features_in_", "fitted")
    feature_names_in: list[str] | None = _learned("feature_names_in_", "fitted")
    threshold: float = _learned("threshold_", "fitted")
    threshold_rule: dict = _learned("threshold_rule_", "fitted")
    n_epochs: int = _learned("n_epochs_", "fitted")
    history: dict = _learned("history_")
    calibration_scores: np.ndarray = _learned("calibration_scores_", "arrays")
    mean: np.ndarray = _learned("mean_", "arrays")
    scale: np.ndarray = _learned("scale_", "arrays")
    metadata: dict = field(default_factory=dict, metadata={"attribute": "metadata_"})
    versions: dict = field(default_factory=dict)

    @classmethod
    def learned(cls, section: str | None = None) -> dict[str, str]:
        """{field: estimator attribute} of the learned fields (those of `section` only, if given)."""
        return {
            f.name: f.metadata["attribute"]
            for f in fields(cls)
            if "attribute" in f.metadata and section in (None, f.metadata.get("section"))
        }

    @property
    def standardizes(self) -> bool:
        """Whether features are standardised before the network sees them."""
        return is_standardizing(self.mean, self.scale)

    def save(self, path: str | Path, *, inputs=()) -> Path:
        description = {
            "params": self.params,
            "model_config": {**self.model_config, **self.score_config},
            "input": self.input.to_dict(),
            "fitted": {name: getattr(self, name) for name in self.learned("fitted")},
            "history": self.history,
            "metadata": self.metadata,
            "versions": self.versions,
        }
        arrays = {WEIGHT_PREFIX + k: v for k, v in {**self.weights, **self.score_tensors}.items()}
        arrays.update({name: getattr(self, name) for name in self.learned("arrays")})
        return write_model_file(path, description, arrays, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path) -> "FittedState":
        """Read and check a model file; ModelFileError naming the file and the bad field.

        The digest is checked last, so a tensor that breaks the fitted state is named first.
        """
        description, arrays, digest = _read(path)
        try:
            state = cls._from_description(description, arrays)
        except (ModelFileError, DataError) as exc:
            raise ModelFileError(f"{path} does not describe a valid vaeguard model: {exc}") from None
        check_digest(path, arrays, digest)
        return state

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
        groups = [list(g) for g in getattr(spec, "groups", ())]
        if groups != description["model_config"].get("groups", []):
            raise ModelFileError("field 'model_config.groups' does not match the categorical columns of field 'input.levels'")
        model_config = dict(description["model_config"])
        score_config = {name: model_config.pop(name) for name in SCORE_CONFIG_FIELDS if name in model_config}
        weights, score_tensors = {}, {}
        for key, values in arrays.items():
            if key.startswith(WEIGHT_PREFIX):
                name = key[len(WEIGHT_PREFIX):]
                (score_tensors if name.startswith(SCORE_TENSOR_PREFIXES) else weights)[name] = values
        return cls(
            params=description["params"],
            model_config=model_config,
            score_config=score_config,
            weights=weights,
            score_tensors=score_tensors,
            input=spec,
            history=description["history"],
            metadata=description["metadata"],
            versions=description["versions"],
            **{name: fitted[name] for name in cls.learned("fitted")},
            **{name: np.asarray(arrays[name], dtype=np.float64) for name in cls.learned("arrays")},
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


def _int_at_least(low: int):
    return lambda v: _is_int(v) and v >= low


def _number_in(low: float, high: float, *, low_closed: bool = False, high_closed: bool = False):
    """A test for a number in the interval from low to high (open ends unless said closed)."""
    def test(v) -> bool:
        return _is_number(v) and (low <= v if low_closed else low < v) and (v <= high if high_closed else v < high)

    return test


def _one_of(*choices):
    return lambda v: isinstance(v, str) and v in choices


# Kept equal to model.LIKELIHOODS and scoring.SCORE_TYPES (tests/test_modelfile.py checks):
# those modules import torch, which `vaeguard info` must not.
LIKELIHOODS = ("bernoulli", "gaussian")
SCORE_TYPES = ("elbo", "recon", "iwae", "kl", "ratio", "fused")
_SEEDS = 2**32  # numpy's and scikit-learn's seed range

# What every field the library reads must hold: (dotted field, test, what it must be).
_FIELDS = [
    ("params", lambda v: isinstance(v, dict), "an object"),
    ("params.hidden_dims", _positive_ints, "a list of integers >= 1"),
    ("params.batch_size", _int_at_least(1), "an integer >= 1"),
    ("params.learning_rate", _number_in(0, math.inf), "a number > 0"),
    ("params.beta", _number_in(0, math.inf, low_closed=True), "a number >= 0"),
    ("params.n_importance_samples", _int_at_least(1), "an integer >= 1"),
    ("model_config", lambda v: isinstance(v, dict), "an object"),
    ("model_config.input_dim", _int_at_least(1), "an integer >= 1"),
    ("model_config.latent_dim", _int_at_least(1), "an integer >= 1"),
    ("model_config.hidden_dims", _positive_ints, "a list of integers >= 1"),
    ("model_config.likelihood", lambda v: isinstance(v, str), "a string"),
    ("model_config.architecture", lambda v: isinstance(v, str), "a string"),
    ("model_config.input_shape", lambda v: v is None or (_positive_ints(v) and len(v) == 3), "null or [channels, height, width]"),
    ("model_config.conv_channels", _positive_ints, "a list of integers >= 1"),

    ("model_config.context_model", lambda v: isinstance(v, bool), "true or false"),
    ("fitted", lambda v: isinstance(v, dict), "an object"),
    ("fitted.likelihood", _one_of(*LIKELIHOODS), f"one of {', '.join(LIKELIHOODS)}"),
    ("fitted.score_type", _one_of(*SCORE_TYPES), f"one of {', '.join(SCORE_TYPES)}"),
    ("fitted.seed", lambda v: _is_int(v) and 0 <= v < _SEEDS, "an integer in [0, 2**32)"),
    ("fitted.n_features_in", _int_at_least(1), "an integer >= 1"),
    ("fitted.feature_names_in", lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)), "null or a list of strings"),
    ("fitted.threshold", _is_number, "a finite number"),
    ("fitted.threshold_rule", lambda v: isinstance(v, dict) and isinstance(v.get("rule"), str) and v["rule"] in _RULE_FIELDS, "an object such as {\"rule\": \"fpr\", \"fpr\": 0.01, \"n_calibration\": 100}"),
    ("fitted.n_epochs", _int_at_least(0), "an integer >= 0"),
    ("history", lambda v: isinstance(v, dict) and all(isinstance(x, list) and all(_is_number(y) for y in x) for x in v.values()), "an object of number lists"),
    ("input", lambda v: v is None or isinstance(v, dict), "an object such as {\"kind\": \"images\", \"shape\": [1, 28, 28]}"),
    ("metadata", lambda v: isinstance(v, dict), "an object"),
    ("versions", lambda v: isinstance(v, dict), "an object"),
]

# Fields checked when present: estimator parameters and model_config fields that a file may
# predate (the categorical groups, the variance floor, the latent neighbour count, the image
# code length). They mirror the estimator's `_parameter_constraints`, which need scikit-learn.
_FIELDS_IF_PRESENT = [
    ("model_config.groups", lambda v: isinstance(v, list) and all(isinstance(g, list) and len(g) == 2 and all(_is_int(i) and i >= 0 for i in g) for g in v),
     "a list of [first feature, width] pairs"),
    ("model_config.variance_floor", lambda v: isinstance(v, bool), "true or false"),
    ("model_config.relative_levels", lambda v: isinstance(v, bool), "true or false"),
    ("params.latent_dim", _int_at_least(1), "an integer >= 1"),
    ("params.likelihood", _one_of("auto", *LIKELIHOODS), "auto, bernoulli or gaussian"),
    ("params.architecture", _one_of("auto", "mlp", "conv"), "auto, mlp or conv"),
    ("params.input_shape", lambda v: v is None or (_positive_ints(v) and len(v) == 3), "null or [channels, height, width]"),
    ("params.score_type", _one_of("auto", *SCORE_TYPES), f"auto or one of {', '.join(SCORE_TYPES)}"),
    ("params.epochs", lambda v: v == "auto" or _int_at_least(1)(v), "auto or an integer >= 1"),
    ("params.kl_warmup_epochs", _int_at_least(0), "an integer >= 0"),
    ("params.patience", lambda v: v == "auto" or _int_at_least(1)(v), "auto or an integer >= 1"),
    ("params.validation_fraction", _number_in(0, 0.5, low_closed=True), "a number in [0, 0.5)"),
    ("params.calibration_fraction", _number_in(0, 0.5), "a number in (0, 0.5)"),
    ("params.fpr", _number_in(0, 1), "a number in (0, 1)"),
    ("params.contamination", lambda v: v == "auto" or _number_in(0, 0.5, high_closed=True)(v), "auto or a number in (0, 0.5]"),
    ("params.standardize", lambda v: v == "auto" or isinstance(v, bool), "auto, true or false"),
    ("params.random_state", lambda v: v is None or (_is_int(v) and 0 <= v < _SEEDS), "null or an integer in [0, 2**32)"),
    ("params.device", lambda v: isinstance(v, str), "a string"),
    ("params.threads", lambda v: v == "auto" or _int_at_least(1)(v), "auto or an integer >= 1"),
    ("params.verbose", lambda v: isinstance(v, bool) or _int_at_least(0)(v), "true, false or an integer >= 0"),
    ("model_config.latent_neighbours", _int_at_least(0), "an integer >= 0"),
    ("model_config.code_length", lambda v: isinstance(v, bool), "true or false"),
    ("model_config.pixel_range", lambda v: isinstance(v, bool), "true or false"),
]

# The fields each threshold rule needs (see calibration.describe_threshold_rule).
_COUNT = (_int_at_least(0), "an integer >= 0")
_RULE_FIELDS = {
    "fpr": {"fpr": (_number_in(0, 1), "a number in (0, 1)"), "n_calibration": _COUNT},
    "contamination": {"contamination": (_number_in(0, 0.5, high_closed=True), "a number in (0, 0.5]")},
    "recall": {"recall": (_number_in(0, 1, high_closed=True), "a number in (0, 1]"), "n_labelled": _COUNT},
    "f1": {"n_labelled": _COUNT},
    "youden": {"n_labelled": _COUNT},
}
# Sections whose numbers the library reads; metadata is the user's, kept as given.
_NUMERIC_SECTIONS = ("params", "model_config", "input", "fitted", "history")


def check_description(description) -> None:
    """ModelFileError naming the first field that is missing, mistyped or out of range.

    First every number in the sections the library reads must be finite and an integer
    within 64 bits (Python's json reads Infinity, NaN, 1e400 as inf and integers of any
    size, which end in an OverflowError far from the file); then each field of `_FIELDS`,
    `_FIELDS_IF_PRESENT` and the threshold rule's own fields.
    """
    if not isinstance(description, dict):
        raise ModelFileError(f"the model description must be a JSON object, not {type(description).__name__}")
    for section in _NUMERIC_SECTIONS:
        if section in description:
            _check_numbers(description[section], section)
    for name, test, what in _FIELDS:
        _check_field(description, name, test, what)
    for name, test, what in _FIELDS_IF_PRESENT:
        _check_field(description, name, test, what, required=False)
    rule = description["fitted"]["threshold_rule"]
    for key, (test, what) in _RULE_FIELDS[rule["rule"]].items():
        _check_field(description, f"fitted.threshold_rule.{key}", test, what)
    _check_consistent(description)


def _check_numbers(value, name: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ModelFileError(f"field {_field(name)} of the model description must be a finite number, got {_shown(value)}")
    if _is_int(value) and not -(2**63) <= value < 2**63:
        raise ModelFileError(f"field {_field(name)} of the model description must be a number within 64-bit integers, got {_shown(value)}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{name}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{name}[{i}]")


def _check_field(description: dict, name: str, test, what: str, required: bool = True) -> None:
    parent, _, key = name.rpartition(".")
    holder = description
    for part in filter(None, parent.split(".")):
        holder = holder[part]
    if key not in holder:
        if required:
            raise ModelFileError(f"the model description lacks the field '{name}'")
        return
    try:
        valid = bool(test(holder[key]))
    except (TypeError, ValueError, AttributeError, KeyError):
        valid = False
    if not valid:
        raise ModelFileError(f"field '{name}' of the model description must be {what}, got {_shown(holder[key])}")


def _check_consistent(description: dict) -> None:
    """Fields that must agree with each other (the score type needs the parts it reads)."""
    config, fitted = description["model_config"], description["fitted"]
    names = fitted["feature_names_in"]
    if names is not None and len(names) != fitted["n_features_in"]:
        raise ModelFileError(f"field 'fitted.feature_names_in' names {len(names)} features, 'fitted.n_features_in' is {fitted['n_features_in']}")
    if fitted["likelihood"] != config["likelihood"]:
        raise ModelFileError(
            f"field 'fitted.likelihood' is {_shown(fitted['likelihood'])} but 'model_config.likelihood' is {_shown(config['likelihood'])}"
        )
    if fitted["score_type"] == "fused" and not config.get("latent_neighbours"):
        raise ModelFileError("field 'fitted.score_type' is \"fused\" but 'model_config.latent_neighbours' is 0: the model holds no neighbours")
    if config.get("code_length") and (fitted["score_type"] != "fused" or description["input"].get("kind") != "images"):
        raise ModelFileError("field 'model_config.code_length' is true but the model is not an image model with the fused score")
    if config.get("pixel_range") and description["input"].get("kind") != "images":
        raise ModelFileError("field 'model_config.pixel_range' is true but the model is not an image model")
    if fitted["score_type"] == "ratio" and not config["context_model"]:
        raise ModelFileError("field 'fitted.score_type' is \"ratio\" but 'model_config.context_model' is false: the model holds no context model")


def check_model_arrays(description: dict, arrays: dict[str, np.ndarray], path: str | Path | None = None) -> None:
    """ModelFileError naming the first tensor that holds NaN/inf or breaks the fitted state's shape.

    Expected: the network's tensors F32 and `mean`, `scale`, `calibration_scores` F64 (the
    dtypes `save` writes), `mean` and `scale` of length n_features_in (scale > 0),
    `calibration_scores` one-dimensional and non-empty, every tensor finite.
    """
    where = f"{path}: " if path else ""
    n = description["fitted"]["n_features_in"]
    for name in FittedState.learned("arrays"):
        if name not in arrays:
            raise ModelFileError(f"{where}tensor '{name}' is missing from the file")
    for name, values in arrays.items():
        expected = np.float32 if name.startswith(WEIGHT_PREFIX) else np.float64
        if values.dtype != expected:
            raise ModelFileError(
                f"{where}tensor {name!r} has dtype {_DTYPE_CODES[values.dtype]}, but vaeguard stores it as "
                f"{_DTYPE_CODES[np.dtype(expected)]}"
            )
    for name in ("mean", "scale"):
        if arrays[name].shape != (n,):
            raise ModelFileError(f"{where}tensor '{name}' has shape {list(arrays[name].shape)}, expected [{n}] (n_features_in)")
    if arrays["calibration_scores"].ndim != 1 or arrays["calibration_scores"].size == 0:
        raise ModelFileError(f"{where}tensor 'calibration_scores' must be a non-empty list of scores")
    for name, values in arrays.items():
        if not np.isfinite(values).all():
            raise ModelFileError(f"{where}tensor {name!r} holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    if not (arrays["scale"] > 0).all():
        raise ModelFileError(f"{where}tensor 'scale' holds {int((arrays['scale'] <= 0).sum())} value(s) <= 0; a scale must be positive")


def _field(name: str) -> str:
    """A field's name quoted; escaped when the file's keys hold line breaks or other controls."""
    return f"'{name}'" if name.isprintable() else json.dumps(name)


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
