"""torch.distributed helpers for training runs launched by ``torchrun`` (DDP).

Joining the process group and choosing each rank's device are shared with inference and live
in :mod:`realdeal.runtime.distributed`; they are re-exported here. :func:`exclusive_folder`
makes rank 0 the one writer of an output folder (training runs, ``sample -o``, ``refine -o``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from realdeal.errors import InputError
from realdeal.runtime.distributed import (  # noqa: F401  (re-exported)
    DistInfo,
    cleanup,
    init_distributed,
    resolve_device,
)
from realdeal.utils.fs import folder_lock


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


def exact_mean_hook(state, bucket):
    """DDP communication hook: the ranks' mean gradient summed in float64.

    DDP's own hook sums float32 gradients in an order that depends on where each value sits in
    its bucket, and DDP lays its buckets out anew after the first step of every process. With
    three or more ranks a run resumed from a checkpoint therefore summed its first step's
    gradients in another order than the uninterrupted run and drifted from it in the last bits.
    The sum of a few float32 values is exact in float64 whatever the order (unless their
    magnitudes lie more than about 2²⁷ apart), and it is rounded to float32 once, after dividing
    by the world size.
    Twice the traffic of float32: meant for CPU (gloo) runs, which are otherwise bit for bit
    reproducible; GPU kernels are not, so GPU runs keep DDP's float32 hook.
    """
    buf = bucket.buffer()
    world = dist.get_world_size()
    wide = buf.to(torch.float64)
    fut = dist.all_reduce(wide, async_op=True).get_future()

    def mean(f: torch.futures.Future) -> torch.Tensor:
        return (f.value()[0] / world).to(buf.dtype)

    return fut.then(mean)


# DDP checks the hook's annotations themselves, not the strings of ``from __future__``.
exact_mean_hook.__annotations__ = {
    "state": object,
    "bucket": dist.GradBucket,
    "return": torch.futures.Future[torch.Tensor],
}


@contextlib.contextmanager
def exclusive_folder(
    folder: str | os.PathLike,
    info: DistInfo | None,
    check: Callable[[], Any] | None = None,
    check_first: bool = False,
) -> Iterator[Any]:
    """One realdeal process writes into ``folder`` for the duration of the block.

    Rank 0 (or a plain process) takes :func:`realdeal.utils.fs.folder_lock` and then runs
    ``check`` (decisions that must hold while nobody else writes, e.g. "no checkpoint here
    without --resume") and gets its result (other ranks: None); if it fails, every rank raises
    (the others a one-line :class:`~realdeal.errors.InputError` with rank 0's message), so a refused torchrun job stops on every rank
    instead of leaving the others waiting at their next collective. Only rank 0 holds the lock.
    ``check_first`` also runs ``check`` before the lock is taken: a refused call then makes
    nothing, not even the folder or its lock file.
    """

    main = info is None or info.is_main
    with contextlib.ExitStack() as stack:
        result, error = None, None
        if main:
            try:
                if check is not None and check_first:
                    check()
                stack.enter_context(folder_lock(folder))
                result = check() if check is not None else None
            except Exception as e:  # any failure, so that the other ranks hear of it
                stack.close()
                error = e
        if info is not None and info.distributed and dist.is_initialized():
            box = [None if error is None else str(error)]
            dist.broadcast_object_list(box, src=0)
            if error is None and box[0] is not None:
                error = InputError(None, box[0])
        if error is not None:
            raise error
        yield result
