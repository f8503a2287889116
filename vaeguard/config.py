"""TOML run configurations: a [detector] table of estimator parameters and a [data] table.

Command-line options override the file; the file overrides the estimator's defaults. Every
value is checked when the file is read, against the estimator's own parameter constraints
and the limits in `vaeguard.limits`, so a bad value is one line naming the file and the field.
This module imports the estimator only to check values: the command line asks it about
devices and config paths while it parses, before anything heavy is loaded.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from .errors import DataError

DATA_FIELDS = ("columns", "exclude", "id_column", "label_column", "image_size", "channels")
_LIST_FIELDS = {"hidden_dims", "input_shape", "columns", "exclude", "image_size"}
# Device names torch.device accepts (it keeps the index N in an int8); whether this machine has
# the device is devices.resolve_device's question, when the run starts.
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:(0|[1-9][0-9]{0,2}))?")
_MAX_DEVICE_INDEX = 127


@functools.cache
def detector_fields() -> tuple[str, ...]:
    """The [detector] fields: the parameters of VAEAnomalyDetector."""
    from .estimator import VAEAnomalyDetector

    return tuple(inspect.signature(VAEAnomalyDetector.__init__).parameters)[1:]


def check_device(text: str) -> str:
    """`text` when it names a device (DEVICES; N a GPU index); ValueError otherwise."""
    match = _DEVICE.fullmatch(text)
    if match is None or (match.group(2) is not None and int(match.group(2)) > _MAX_DEVICE_INDEX):
        raise ValueError(f"must be {either(DEVICES)} (N from 0 to {_MAX_DEVICE_INDEX}), got {show_value(text)}")
    return text


def check_detector_value(name: str, value: Any) -> None:
    """ValueError, one line saying what `name` accepts, unless the estimator takes `value` for it.

    The accepted values come from VAEAnomalyDetector._parameter_constraints (what `fit`
    enforces) and the widths from vaeguard.limits (what the memory check enforces), so the
    command line and config files accept exactly what the library does.
    """
    from sklearn.utils._param_validation import make_constraint

    from .estimator import VAEAnomalyDetector
    from .limits import MAX_WIDTH

    if name == "device":
        if not isinstance(value, str):
            _fail("a device name such as cpu", value)
        check_device(value)
        return
    raw = VAEAnomalyDetector._parameter_constraints[name]
    takes_bool = any(c in ("boolean", "verbose") for c in raw if isinstance(c, str))
    if (isinstance(value, bool) and not takes_bool) or not any(make_constraint(c).is_satisfied_by(value) for c in raw):
        _fail(" or ".join(dict.fromkeys(_describe(c) for c in raw)), value)
    if name == "latent_dim" and value > MAX_WIDTH:
        raise ValueError(f"must be at most {MAX_WIDTH:,} (the width limit of vaeguard.limits), got {value}")
    if name == "hidden_dims":
        for size in value:
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_WIDTH:
                raise ValueError(f"must hold layer sizes from 1 to {MAX_WIDTH:,} (the width limit of vaeguard.limits), got {show_value(size)}")


def _describe(constraint) -> str:
    """One of the estimator's parameter constraints in words, without Python reprs."""
    from sklearn.utils._param_validation import Interval, StrOptions, make_constraint

    if constraint in ("boolean", "verbose"):
        return "true or false"
    if constraint == "random_state":  # only its integers can come from text
        return " or ".join(str(c) for c in make_constraint(constraint)._constraints if isinstance(c, Interval))
    if isinstance(constraint, StrOptions):
        return either(sorted(constraint.options))
    if constraint in (tuple, list):
        return "a list"
    if constraint is str:
        return "a string"
    return str(make_constraint(constraint))


def either(values) -> str:
    """'a, b or c': accepted values in an error message."""
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def show_value(value: Any) -> str:
    """A value for an error message: its repr (one line, escapes visible), at most 60 characters."""
    text = str(value).lower() if isinstance(value, bool) else repr(value)  # as TOML writes it
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(accepted: str, value: Any) -> None:
    raise ValueError(f"must be {accepted}, got {show_value(value)}")


def check_config_file(path: str | Path) -> Path:
    """`path` when it is a regular file; DataError otherwise, before anything opens it (a FIFO
    would block the reader until something writes to it)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such config file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read this config file: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file; a config is a TOML file")
    return path


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a config file into {"detector": {...}, "data": {...}}, rejecting unknown fields and
    values the estimator would refuse, each with one line naming the file and the field."""
    path = check_config_file(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid TOML file: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read this config file: {exc.strerror}") from None
    unknown_tables = set(raw) - {"detector", "data"}
    if unknown_tables:
        raise DataError(f"{path}: unknown table(s) {', '.join(sorted(unknown_tables))}; expected [detector] and [data]")
    config = {}
    for table, known in (("detector", detector_fields()), ("data", DATA_FIELDS)):
        values = raw.get(table, {})
        if not isinstance(values, dict):
            raise DataError(f"{path}: {table} must be a table ([{table}]), got {show_value(values)}")
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DataError(f"{path}: unknown field(s) {', '.join(unknown)} in [{table}]; known fields: {', '.join(known)}")
        for name in _LIST_FIELDS & set(values):
            if not isinstance(values[name], list):
                raise DataError(f"{path}: [{table}] {name} must be a list, got {show_value(values[name])}")
            values[name] = tuple(values[name]) if table == "detector" else values[name]
        try:
            (_check_detector_values if table == "detector" else _check_data_values)(values)
        except ValueError as exc:  # "FIELD must be ..."
            raise DataError(f"{path}: [{table}] {exc}") from None
        config[table] = values
    return config


def _check_detector_values(values: dict[str, Any]) -> None:
    for name, value in values.items():
        try:
            check_detector_value(name, value)
        except ValueError as exc:
            raise ValueError(f"{name} {exc}") from None


def check_channels(value: Any) -> None:
    """ValueError unless `value` is an image's channel count: 1 (grayscale) or 3 (RGB)."""
    if isinstance(value, bool) or value not in (1, 3):
        raise ValueError(f"must be 1 (grayscale) or 3 (RGB), got {show_value(value)}")


def _check_data_values(values: dict[str, Any]) -> None:
    """The [data] fields: column names, and an image size the limits allow."""
    from .limits import check_image_shape

    for name in ("columns", "exclude"):
        names = values.get(name)
        if names is not None and not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"{name} must be a list of column names, got {show_value(names)}")
    if values.get("columns") == []:  # an empty exclude leaves nothing out; no columns is a mistake
        raise ValueError("columns lists no columns: leave it out to use every numeric column")
    for name in ("id_column", "label_column"):
        if name in values and not (isinstance(values[name], str) and values[name].strip()):
            raise ValueError(f"{name} must be a column name, got {show_value(values[name])}")
    channels = values.get("channels")
    if channels is not None:
        try:
            check_channels(channels)
        except ValueError as exc:
            raise ValueError(f"channels {exc}") from None
    size = values.get("image_size")
    if size is not None:
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
            raise ValueError(f"image_size must be [HEIGHT, WIDTH] in pixels, got {show_value(size)}")
        try:
            check_image_shape((channels or 1, *size))
        except DataError as exc:
            raise ValueError(f"image_size {exc}") from None


def merge(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The config table updated with every override that was given (is not None)."""
    return {**config, **{k: v for k, v in overrides.items() if v is not None}}
