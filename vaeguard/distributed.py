"""Multi-process training with torch DistributedDataParallel, launched by torchrun.

    torchrun --nproc-per-node 2 -m vaeguard train normal.parquet -o model.vgm

torchrun starts one process per GPU (or per CPU worker) and sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT; `vaeguard train` sees WORLD_SIZE > 1, joins the process group
(nccl on CUDA, gloo on CPU), and every process trains on its share of the training rows with
gradients averaged after each step. The split into training, validation and calibration rows
is the same in every process (same seed), the per-process batch is the configured batch size
divided by the number of processes (so one step sees as many rows as a single-process step),
and only rank 0 writes the model file, in the same format as a single-process run.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) asked for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> str:
    """Join the process group torchrun describes; returns the device this process should use.

    gloo on CPU, nccl on CUDA (one GPU per process, chosen by LOCAL_RANK).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl")
        return f"cuda:{local_rank}"
    dist.init_process_group(backend="gloo")
    return "cpu"


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_writer() -> bool:
    """Only rank 0 writes files."""
    return world()[0] == 0


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
