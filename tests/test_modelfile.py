"""Model files: round trips, and refusing anything that is not one, without running it."""

import dataclasses
import pickle

import numpy as np
import pytest

import vaeguard
from vaeguard import modelfile
from vaeguard.errors import ModelFileError
from vaeguard.modelfile import DIGEST_KEY, read_model_file, tensor_digest, write_model_file


def test_round_trip_keeps_arrays_and_description(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([1.5, -2.0])}
    path = write_model_file(tmp_path / "m.vgm", {"a": [1, 2], "b": None}, arrays)
    description, loaded = read_model_file(path)
    assert description == {"a": [1, 2], "b": None}
    np.testing.assert_array_equal(loaded["w"], arrays["w"])
    np.testing.assert_array_equal(loaded["s"], arrays["s"])


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.vgm"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelFileError, match="not a readable vaeguard model file"):
        vaeguard.load(evil)
    assert not marker.exists()


def test_torch_pickle_file_is_refused(tmp_path):
    import torch

    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError):
        vaeguard.load(path)


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        vaeguard.load(tmp_path / "nope.vgm")
    good = write_model_file(tmp_path / "m.vgm", {}, {"x": np.zeros(100)})
    truncated = tmp_path / "t.vgm"
    truncated.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(ModelFileError):
        read_model_file(truncated)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a vaeguard model file"):
        read_model_file(tmp_path / "other.safetensors")


def test_version_1_files_still_load(tmp_path):
    """Version 1 kept the input description in metadata["input"] (a table's under "schema")."""
    import json

    import pandas as pd
    from safetensors.numpy import save_file

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=["u", "v"])
    det = vaeguard.VAEAnomalyDetector(latent_dim=2, hidden_dims=(4,), epochs=2, random_state=0, device="cpu").fit(X)
    description, arrays = read_model_file(det.save(tmp_path / "v2.vgm"))
    spec = description.pop("input")
    spec.pop("kind")
    description["metadata"] = {"input": {"kind": "table", "schema": spec}, "trained_on": "x.csv"}
    meta = {"format": "vaeguard-model", "format_version": "1", "description": json.dumps(description)}
    save_file(arrays, str(tmp_path / "v1.vgm"), metadata=meta)
    with pytest.warns(UserWarning, match="v1.vgm has no tensor digest"):
        old = vaeguard.load(tmp_path / "v1.vgm", device="cpu")
    assert old.input_spec_ == det.input_spec_ and old.metadata_ == {"trained_on": "x.csv"}
    np.testing.assert_array_equal(old.anomaly_score(X), det.anomaly_score(X))
    meta["format_version"] = "7"
    save_file(arrays, str(tmp_path / "v7.vgm"), metadata=meta)
    with pytest.raises(ModelFileError, match='format version "7"'):
        vaeguard.load(tmp_path / "v7.vgm")


def test_saved_file_carries_a_digest_and_reloads_silently_scoring_identically(tmp_path):
    """The user's metadata is kept as given, NaN and big integers included (the checks of
    numbers cover only the fields vaeguard reads)."""
    import warnings

    X = np.random.default_rng(1).normal(size=(80, 3))
    det = vaeguard.VAEAnomalyDetector(latent_dim=2, hidden_dims=(4,), epochs=2, random_state=0, device="cpu", fpr=0.2).fit(X)
    path = det.save(tmp_path / "m.vgm", metadata={"odd": float("nan"), "big": 10**30})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = vaeguard.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    assert loaded.metadata_["big"] == 10**30 and np.isnan(loaded.metadata_["odd"])
    _, arrays = read_model_file(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        assert fh.metadata()[DIGEST_KEY] == tensor_digest(arrays)


def test_digest_covers_names_dtypes_shapes_and_bytes():
    base = {"w": np.arange(6, dtype=np.float32), "s": np.ones(2)}
    changed = [
        {"v": base["w"], "s": base["s"]},
        {"w": base["w"].astype(np.float64), "s": base["s"]},
        {"w": base["w"].reshape(2, 3), "s": base["s"]},
        {"w": base["w"] + 1, "s": base["s"]},
    ]
    assert tensor_digest(dict(reversed(base.items()))) == tensor_digest(base)  # name order, not insertion
    assert len({tensor_digest(base), *(tensor_digest(c) for c in changed)}) == 1 + len(changed)


def test_model_files_hold_float32_and_float64_arrays_only(tmp_path):
    with pytest.raises(ValueError, match="float32 and float64 arrays only, not x \\(int64\\)"):
        write_model_file(tmp_path / "m.vgm", {}, {"x": np.zeros(3, dtype=np.int64)})
    assert not (tmp_path / "m.vgm").exists()


def test_checks_cover_every_estimator_parameter_and_mirror_the_torch_modules():
    """modelfile keeps its own copies of the likelihood and score type names (it must not
    import torch); they must equal the originals, and every parameter must have a check."""
    from vaeguard import model, scoring

    assert modelfile.LIKELIHOODS == model.LIKELIHOODS and modelfile.SCORE_TYPES == scoring.SCORE_TYPES
    checked = {name.split(".", 1)[1] for name, _, _ in modelfile._FIELDS + modelfile._FIELDS_IF_PRESENT if name.startswith("params.")}
    assert checked == set(vaeguard.VAEAnomalyDetector().get_params())
    assert {name.split(".", 1)[1] for name, _, _ in modelfile._FIELDS + modelfile._FIELDS_IF_PRESENT if name.startswith("model_config.")} == {
        f.name for f in dataclasses.fields(model.VAEConfig)
    } | set(modelfile.SCORE_CONFIG_FIELDS)
