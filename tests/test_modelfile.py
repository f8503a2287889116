"""Model files: round trips, and refusing anything that is not one, without running it."""

import pickle

import numpy as np
import pytest

import vaeguard
from vaeguard.errors import ModelFileError
from vaeguard.modelfile import read_model_file, write_model_file


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
    old = vaeguard.load(tmp_path / "v1.vgm", device="cpu")
    assert old.input_spec_ == det.input_spec_ and old.metadata_ == {"trained_on": "x.csv"}
    np.testing.assert_array_equal(old.anomaly_score(X), det.anomaly_score(X))
    meta["format_version"] = "7"
    save_file(arrays, str(tmp_path / "v7.vgm"), metadata=meta)
    with pytest.raises(ModelFileError, match="format version 7"):
        vaeguard.load(tmp_path / "v7.vgm")
