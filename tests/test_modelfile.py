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
