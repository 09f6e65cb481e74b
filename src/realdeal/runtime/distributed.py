"""Process groups for runs launched by ``torchrun``, and splitting inference work between ranks.

``torchrun --nproc_per_node=N -m realdeal …`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them (NCCL on GPUs, gloo on CPU). Without them
everything runs as a single process (rank 0 of 1). Training (DDP) and inference both start
here; inference commands additionally split their inputs with :func:`shard` (rank ``r`` of
``N`` takes items ``r, r + N, …``), write one output file per input, and let rank 0 write the
side files after :func:`gather_objects`. Because every input's result depends only on the
input and the seed (never on the rank), the outputs equal those of a single process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from realdeal.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """This process's place in the job and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"``: this rank's GPU if CUDA is available, else CPU; ``"cuda"``: this rank's GPU.

    ``local_rank`` defaults to torchrun's ``LOCAL_RANK`` (0 outside torchrun), so that every
    process of a multi-GPU run computes on its own card.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
        if local_rank >= (n := torch.cuda.device_count()):
            if n == 0:
                raise ConfigError("device cuda: no CUDA GPU is available here (use auto or cpu)")
            raise ConfigError(
                f"local rank {local_rank} needs GPU cuda:{local_rank}, but this machine has {n} "
                f"GPU(s): start at most {n} processes per node (torchrun --nproc_per_node={n})"
            )
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def inference_group(device: str = "auto") -> Iterator[DistInfo]:
    """This process's :class:`DistInfo` for the duration of an inference command.

    Joins torchrun's process group when launched by it (and leaves it afterwards, if this
    call joined it); a plain process gets rank 0 of 1. ``device`` as :func:`resolve_device`.
    """
    joined = not dist.is_initialized()
    info = init_distributed(device)
    try:
        yield info
    except BaseException:
        if joined and info.distributed:
            cleanup()  # no barrier: the other ranks may never get there
        raise
    if joined and info.distributed:
        # Every rank waits for the others before any leaves: a gloo rank that tore its group
        # down while rank 0 was still writing refine.json made rank 0 abort at its own
        # teardown now and then ("terminate called without an active exception", CI).
        dist.barrier()
        cleanup()


def shard(items: Sequence[T], info: DistInfo | None) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``.

    Interleaving (rather than contiguous blocks) keeps ranks balanced when neighbouring
    inputs are alike in size.
    """
    if info is None or not info.distributed:
        return list(items)
    return list(items[info.rank :: info.world_size])


def gather_objects(obj: Any, info: DistInfo | None) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` on one process).

    ``obj`` must be picklable; this is a collective call, so every rank must make it.
    """
    if info is None or not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
