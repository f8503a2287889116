"""TOML run configurations: a [detector] table of estimator parameters and a [data] table.

Command-line options override the file; the file overrides the estimator's defaults.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path
from typing import Any

from .errors import DataError
from .estimator import VAEAnomalyDetector

DETECTOR_FIELDS = tuple(inspect.signature(VAEAnomalyDetector.__init__).parameters)[1:]
DATA_FIELDS = ("columns", "exclude", "id_column", "label_column", "image_size", "channels")
_LIST_FIELDS = {"hidden_dims", "input_shape", "columns", "exclude", "image_size"}


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a config file into {"detector": {...}, "data": {...}}, rejecting unknown fields."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid TOML file: {exc}") from None
    unknown_tables = set(raw) - {"detector", "data"}
    if unknown_tables:
        raise DataError(f"{path}: unknown table(s) {sorted(unknown_tables)}; expected [detector] and [data]")
    config = {}
    for table, known in (("detector", DETECTOR_FIELDS), ("data", DATA_FIELDS)):
        values = raw.get(table, {})
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DataError(f"{path}: unknown field(s) {unknown} in [{table}]; known fields: {', '.join(known)}")
        for name in _LIST_FIELDS & set(values):
            if not isinstance(values[name], list):
                raise DataError(f"{path}: [{table}] {name} must be a list, got {values[name]!r}")
            values[name] = tuple(values[name]) if table == "detector" else values[name]
        config[table] = values
    return config


def merge(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The config table updated with every override that was given (is not None)."""
    return {**config, **{k: v for k, v in overrides.items() if v is not None}}
