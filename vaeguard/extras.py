"""Optional dependencies: import them on demand, or say in one line which extra installs them.

The core install (torch, numpy, pandas, scikit-learn) reads CSV files and image folders on one
machine. Parquet, Dask and Spark live in extras so that users who do not need them do not pay
for them: `pip install 'vaeguard[parquet]'`, `'vaeguard[dask]'`, `'vaeguard[spark]'`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import VaeguardError

# What each extra is for, as the error message names it.
_PURPOSE = {"parquet": "reading and writing Parquet", "dask": "the Dask engine", "spark": "the Spark engine"}


class MissingExtraError(VaeguardError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming `pip install 'vaeguard[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingExtraError(
            f"{_PURPOSE.get(extra, extra)} needs {top}, which is not installed: pip install 'vaeguard[{extra}]'"
        ) from exc
