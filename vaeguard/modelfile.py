"""The model file: one safetensors file holding arrays plus a JSON description.

safetensors stores raw tensors behind a JSON header and never unpickles, so opening a model
file from an untrusted source cannot run code. The description (architecture, preprocessing,
threshold, library versions, training history) travels in the header's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as safetensors_bytes

from .atomic import atomic_write
from .errors import ModelFileError

FORMAT = "vaeguard-model"
FORMAT_VERSION = 1


def write_model_file(path: str | Path, description: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays and a JSON-serialisable description to `path`, atomically."""
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "description": json.dumps(description, allow_nan=True),
    }
    payload = safetensors_bytes({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
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
    if version != str(FORMAT_VERSION):
        raise ModelFileError(
            f"{path} uses model file format version {version}; this vaeguard reads version "
            f"{FORMAT_VERSION}. Upgrade vaeguard or retrain the model."
        )
    try:
        description = json.loads(metadata["description"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} has a damaged model description: {exc}") from None
    return description, arrays
