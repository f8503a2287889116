"""vaeguard: likelihood-based anomaly detection with variational autoencoders."""

__version__ = "0.1.0"

from .errors import DataError, DownloadError, ModelFileError, TrainingError, VaeguardError  # noqa: E402
from .estimator import VAEAnomalyDetector, load  # noqa: E402

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
