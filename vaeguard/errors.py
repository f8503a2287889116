"""Error types. Each subclasses ValueError (or RuntimeError) so generic handlers still work."""


class VaeguardError(Exception):
    """Base class for every error vaeguard raises on purpose."""


class DataError(VaeguardError, ValueError):
    """Input data is unusable: wrong shape, non-finite values, missing columns, bad rows."""


class ModelFileError(VaeguardError, ValueError):
    """A model file is missing, corrupt, or not a vaeguard model."""


class TrainingError(VaeguardError, RuntimeError):
    """Training could not produce a usable model (for example a non-finite loss)."""


class DownloadError(VaeguardError, OSError):
    """A dataset could not be downloaded or failed verification."""
