"""Multi-process training with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

A plain ``anyrestore train`` is one process. Under ``torchrun --nproc_per_node N`` (or a
multi-node ``torchrun``) the environment carries ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and the
rendezvous address; we join the group from ``env://`` with NCCL on GPUs and gloo on CPU.
Rank 0 alone logs, validates' summary and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from anyrestore.errors import DeviceError


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise DeviceError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs visible"
            )
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return Dist(rank=rank, world_size=world, local_rank=local)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_sum(d: Dist, values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over all processes (one collective)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(d: Dist, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (on every process)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap(
    model: torch.nn.Module, d: Dist, device: torch.device, find_unused: bool
) -> torch.nn.Module:
    """DDP-wrap ``model`` for a distributed run; unchanged otherwise."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
