"""One call for distributed set-up (torchrun DDP: nccl on CUDA, gloo on CPU) and small collective helpers.

Single-process runs use the same code path with world size 1, so trainers never branch on DDP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from model.device import resolve_device


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_arg: str | None = None, ddp_flag: bool = False, local_rank_arg: int = -1) -> DistInfo:
    """Initialise the process group when started by torchrun; pick the device for this rank."""
    if ddp_flag and not launched_by_torchrun():
        raise SystemExit("--ddp was given but this process was not started by torchrun (RANK/WORLD_SIZE are unset); "
                         "launch with: torchrun --nproc_per_node N trainer/<script>.py ... --ddp")
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_arg if local_rank_arg >= 0 else 0))
    device = resolve_device(device_arg, local_rank)  # ValueError naming --device for a device this machine lacks
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(values: list[float], op: str = "sum", device=None) -> list[float]:
    """All-reduce a few numbers (float64) in one call; identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device or "cpu")
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return t.tolist()


def gather_objects(obj, is_main: bool):
    """Every rank's `obj` as a list on rank 0 (None elsewhere); [obj] when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size() if is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj, src: int = 0):
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


_GROUP_CLOSED = False  # this process ran a process group and closed it (see `group_closed`)


def cleanup(wait: bool = True) -> None:
    """Wait for every rank (`wait=False` after an error: no barrier, so torchrun can end the others), then
    destroy the process group."""
    global _GROUP_CLOSED
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
        _GROUP_CLOSED = True


def group_closed() -> bool:
    """Whether `cleanup` closed a process group in this process: its entry point then exits without the
    interpreter's teardown (trainer/cli.py), where gloo's threads can abort or hang after a finished run."""
    return _GROUP_CLOSED
