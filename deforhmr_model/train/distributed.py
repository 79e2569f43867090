"""PyTorch distributed data parallel setup for ``torchrun`` (single or multi node).

``torchrun --nnodes N --nproc_per_node G -m deforhmr_model.train fit ...`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables;
:func:`init_distributed` reads them, picks NCCL on CUDA and gloo on CPU, and
pins each process to ``cuda:LOCAL_RANK``. Without those variables the run is a
single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deforhmr_model.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """rank / world size / local rank, and the device this process computes on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if launched by ``torchrun`` (``WORLD_SIZE`` > 1), else single process.

    ``device`` goes through :func:`deforhmr_model.device.resolve_device` with this process's
    LOCAL_RANK (raises ``DeviceError`` for an unavailable device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (identity for a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
