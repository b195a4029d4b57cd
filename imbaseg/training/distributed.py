"""torchrun integration: process-group setup from the environment, rank helpers, all-reduce.

``torchrun --nproc_per_node=N -m imbaseg train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; a plain
``imbaseg train`` runs as a world of one and every helper here degrades to a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_kind: str) -> tuple[int, int, int]:
    """Initialise the process group when launched by torchrun; returns (rank, local_rank, world)."""
    world = env_world_size()
    if world <= 1:
        return 0, 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (in place and returned); identity in a single process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def max_over_ranks(values: list[int], device: torch.device | str = "cpu") -> list[int]:
    """The element-wise maximum of ``values`` over the ranks (a collective: every rank calls it at the
    same point); ``values`` itself in a single process."""
    if not is_distributed():
        return [int(v) for v in values]
    t = torch.tensor([float(v) for v in values], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
