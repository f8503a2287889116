"""A fitted estimator to its `modelfile.FittedState` and back: what `save` and `load` do.

The learned attributes are those `FittedState.learned()` names, copied by the two functions
here and nowhere else; the network and the score state go through `scorer.build_model`,
which builds each once.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import sklearn
import torch

from ._version import __version__
from .errors import ModelFileError
from .modelfile import FittedState
from .scorer import build_model


def learned(detector) -> dict:
    """The detector's learned attributes by their FittedState names (None where not set yet)."""
    return {name: getattr(detector, attribute, None) for name, attribute in FittedState.learned().items()}


def fitted_state(detector, metadata: dict | None = None) -> FittedState:
    """The fitted `detector`'s state; `metadata` (kept as is) replaces the detector's own."""
    params = detector.get_params()
    params["hidden_dims"] = list(params["hidden_dims"])
    if params["input_shape"] is not None:
        params["input_shape"] = list(params["input_shape"])
    values = learned(detector)
    values.update({name: np.asarray(values[name], dtype=np.float64) for name in FittedState.learned("arrays")})
    if values["feature_names_in"] is not None:
        values["feature_names_in"] = [str(c) for c in values["feature_names_in"]]
    values["metadata"] = metadata if metadata is not None else (values["metadata"] or {})
    return FittedState(
        params=params,
        model_config=detector.config_.to_dict(),
        score_config=detector.score_state_.config(),
        weights={k: v.detach().cpu().numpy() for k, v in detector.model_.state_dict().items()},
        score_tensors=detector.score_state_.tensors(),
        versions={
            "vaeguard": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "python": platform.python_version(),
        },
        **values,
    )


def restore(cls, state: FittedState, path: str | Path, device: str = "auto"):
    """A fitted `cls` (VAEAnomalyDetector) from `state`, read from `path`, on `device`."""
    model, score_state = build_model(state, path, device)
    params = dict(state.params, device=device)
    params["hidden_dims"] = tuple(params["hidden_dims"])
    if params.get("input_shape") is not None:
        params["input_shape"] = tuple(params["input_shape"])
    try:
        detector = cls(**params)
    except TypeError as exc:
        raise ModelFileError(f"{path} does not describe a valid vaeguard model: {exc}") from None
    detector.config_, detector.model_, detector.score_state_ = model.cfg, model, score_state
    detector.device_ = next(model.parameters()).device
    for name, attribute in FittedState.learned().items():
        value = getattr(state, name)
        if name == "feature_names_in":
            if value is None:
                continue  # scikit-learn's convention: the attribute exists only for named columns
            value = np.asarray(value, dtype=object)
        setattr(detector, attribute, value)
    detector._store_threshold(state.threshold, state.threshold_rule)  # and offset_, which follows it
    return detector
