"""Distributed training under `torchrun`: which rank this process is, setting up and tearing down
the process group, and summing a tensor over ranks.

Under torchrun (WORLD_SIZE > 1) the loop runs DistributedDataParallel (gloo on CPU, nccl on CUDA).
Every rank draws the same permutation per epoch and trains on its shard of it; validation eras are
split between ranks by whole eras and their per-era Spearmans are all-reduced; only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from numerflow.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; one process when they are not set."""
        return cls(rank=int(os.environ.get("RANK", "0")), world=int(os.environ.get("WORLD_SIZE", "1")),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Rank 0 alone writes files and reports."""
        return self.rank == 0


def start(device: torch.device, dist: Distributed) -> torch.device:
    """Join the process group; returns this rank's device (its own GPU under CUDA)."""
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"distributed training runs on cpu or cuda, not {device.type}")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return device


def stop(dist: Distributed) -> None:
    if dist.active and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device, dist: Distributed) -> torch.nn.Module:
    """The module that trains `model`: under torchrun its DistributedDataParallel wrapper (which
    all-reduces the gradients between ranks), else the model itself."""
    if not dist.active:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """The tensor summed over ranks, in place (itself when there is one process)."""
    if dist.active:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor
