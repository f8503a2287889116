"""The device rule (vaeguard.devices)."""

import pytest
import torch


@pytest.mark.parametrize("device, message", [
    ("cuda", "sees no CUDA device"), ("cuda:1", "sees no CUDA device"), ("mps", "no Apple GPU"),
    ("tpu", "must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"), ("cpu:0", "must be"), ("cuda:x", "must be"),
])
def test_a_device_that_is_not_here_is_a_clear_error(device, message):
    from vaeguard.devices import resolve_device

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=message):
        resolve_device(device)
    assert resolve_device("cpu") == resolve_device("auto") == torch.device("cpu")
