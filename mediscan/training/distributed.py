"""torch.distributed in one place: the same entry point runs on one device or under torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job; rank 0 logs, evaluates and saves."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun job."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_type: str) -> DistInfo:
    """Join the process group that torchrun describes in the environment (nccl on CUDA, else gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def cleanup(info: DistInfo) -> None:
    """Wait for rank 0 (it evaluates and saves), then leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's equal share of an epoch's (already shuffled) indices, like DistributedSampler."""
    if not info.enabled:
        return indices
    per_rank = len(indices) // info.world_size
    return indices[info.rank * per_rank:(info.rank + 1) * per_rank]


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision (e.g. stop early) shared with every rank."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())

