"""Where torch computes: "auto", "cpu", "cuda", "cuda:N" or "mps", checked to be present.

A foundation module (it imports only torch), so that scoring a model file does not pull in
the training loop to ask which device to use.
"""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cpu', 'cuda', 'cuda:N' or 'mps', each checked to be
    present, so a missing GPU is a clear error rather than a torch traceback later."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return torch.device("cpu")
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but PyTorch sees no CUDA device")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} was requested but PyTorch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
        return torch.device(device)
    if kind == "mps" and not index:
        if not torch.backends.mps.is_available():
            raise ValueError("device='mps' was requested but PyTorch sees no Apple GPU (MPS)")
        return torch.device("mps")
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
