"""vaeguard: likelihood-based anomaly detection with variational autoencoders.

Importing the package is cheap: the estimator (and with it PyTorch) and the submodules load on
first use, so `vaeguard --help` and `vaeguard info` start without importing torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import DataError, DownloadError, ModelFileError, TrainingError, VaeguardError

_FROM_ESTIMATOR = ("VAEAnomalyDetector", "load")
_SUBMODULES = (
    "bulk", "calibration", "config", "digits", "evaluation", "images", "inputs", "metrics",
    "mnist", "model", "modelfile", "plots", "report", "scorer", "scoring", "sources", "tabular", "training",
)

__all__ = [
    "VAEAnomalyDetector",
    "load",
    "VaeguardError",
    "DataError",
    "ModelFileError",
    "TrainingError",
    "DownloadError",
    "__version__",
]


def __getattr__(name: str):
    if name in _FROM_ESTIMATOR:
        return getattr(importlib.import_module(".estimator", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM_ESTIMATOR, *_SUBMODULES])
