"""torch.distributed helpers for training runs launched by ``torchrun`` (DDP).

Joining the process group and choosing each rank's device are shared with inference and live
in :mod:`realdeal.runtime.distributed`; they are re-exported here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from realdeal.runtime.distributed import (  # noqa: F401  (re-exported)
    DistInfo,
    cleanup,
    init_distributed,
    resolve_device,
)


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over ranks (returns ``t`` itself on one process)."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size
