"""Process groups for runs launched by ``torchrun``, and splitting inference work between ranks.

``torchrun --nproc_per_node=N -m realdeal …`` (one node) or ``torchrun --nnodes=M
--nproc_per_node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT -m realdeal …`` (one launch
per node) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and
``GROUP_RANK``; :func:`init_distributed` reads them (NCCL on GPUs, gloo on CPU). Without them
everything runs as a single process (rank 0 of 1). Training (DDP) and inference both start
here; inference commands additionally split their inputs with :func:`shard` (rank ``r`` of
``N`` takes items ``r, r + N, …``), write one output file per input, and let rank 0 write the
side files after :func:`gather_objects`, or hand every result to rank 0 in input order with
:func:`gather_shards`. Because every input's result depends only on the input and the seed
(never on the rank), the outputs equal those of a single process.

Across nodes, every rank must read the same inputs and, where ranks write files, see the same
output folder: :func:`check_same` and :func:`check_shared_folder` turn a node that does not
into one error line on every rank. A :class:`~realdeal.errors.RealDealError` on one rank
reaches the others with :func:`broadcast_error` (as a :class:`Failure`, since some error types
do not survive pickling), so that a refused job stops everywhere instead of leaving ranks
waiting at their next collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from realdeal.errors import ConfigError, InputError, RealDealError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """This process's place in the job and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1
    """Processes on this node (they share its CPUs): torchrun's ``LOCAL_WORLD_SIZE``."""
    node_rank: int = 0
    """This node's index among the job's nodes: torchrun's ``GROUP_RANK``."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def where(self) -> str:
        """``rank R/N``, and ``on node K`` when the job spans several nodes (for messages)."""
        node = f" on node {self.node_rank}" if self.local_world_size < self.world_size else ""
        return f"rank {self.rank}/{self.world_size}{node}"


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


def init_distributed(device: str = "auto", timeout: datetime.timedelta | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment (if any).

    One node or several: torchrun's agents agree on ``MASTER_ADDR``/``MASTER_PORT`` during
    their rendezvous, and every rank joins through them (``env://``). ``LOCAL_WORLD_SIZE``
    defaults to ``WORLD_SIZE`` when a launcher leaves it out (one node). ``timeout``: how long a
    collective call waits for the slowest rank (``None``: torch's default, 30 minutes for
    gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    node = int(os.environ.get("GROUP_RANK", "0"))
    dev = resolve_device(device, local)
    info = DistInfo(
        rank=rank,
        world_size=world,
        local_rank=local,
        device=dev,
        local_world_size=local_world,
        node_rank=node,
    )
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout else {}))
        log.info("%s joined the %s process group on %s", info.where(), backend, dev)
    return info


def cleanup() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def inference_group(
    device: str = "auto", timeout: datetime.timedelta | None = None
) -> Iterator[DistInfo]:
    """This process's :class:`DistInfo` for the duration of an inference command.

    Joins torchrun's process group when launched by it (and leaves it afterwards, if this
    call joined it); a plain process gets rank 0 of 1. ``device`` as :func:`resolve_device`,
    ``timeout`` as :func:`init_distributed`.
    """
    joined = not dist.is_initialized()
    info = init_distributed(device, timeout)
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


def gather_shards(mine: Sequence[T], n: int, info: DistInfo | None) -> list[T | None] | None:
    """The inverse of :func:`shard`: on rank 0, all ``n`` results in input order; ``None`` on
    the other ranks (one process: ``list(mine)``).

    ``mine`` holds this rank's results in the order of its share (item ``i`` of the input is
    rank ``i % world_size``'s ``i // world_size``-th); a result a rank did not reach stays
    ``None``. This is a collective call: every rank must make it. Only rank 0 receives the
    results, so a large result (per-volume features) is held once, not once per rank.
    """
    if info is None or not info.distributed:
        return list(mine)
    parts: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(list(mine), parts, dst=0)
    if parts is None:
        return None
    out: list[T | None] = [None] * n
    for r, part in enumerate(parts):
        for j, x in enumerate(part):
            out[r + j * info.world_size] = x
    return out


def broadcast_object(obj: Any, info: DistInfo | None) -> Any:
    """Rank 0's ``obj`` on every rank (collective; one process: ``obj``)."""
    if info is None or not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclasses.dataclass(frozen=True)
class Failure:
    """A :class:`~realdeal.errors.RealDealError` as plain, picklable data: its class and its
    message. (``InputError(path, problem)`` does not unpickle, so errors cross process and rank
    boundaries as this.)"""

    kind: type
    message: str

    @classmethod
    def of(cls, error: RealDealError) -> Failure:
        return cls(type(error), str(error))

    def error(self) -> RealDealError:
        """The error again, of its own class, with its message."""
        kind = self.kind if issubclass(self.kind, RealDealError) else RealDealError
        e = kind.__new__(kind)
        Exception.__init__(e, self.message)
        if isinstance(e, InputError):  # the message already names the path
            e.path, e.problem = None, self.message
        return e


def broadcast_error(error: RealDealError | None, info: DistInfo | None) -> None:
    """Collective: when rank 0 has an ``error``, every rank raises it (rank 0 its own exception,
    the others the same class and message, see :class:`Failure`); else every rank returns.

    One process: raises ``error`` if there is one.
    """
    if info is None or not info.distributed:
        if error is not None:
            raise error
        return
    failure = broadcast_object(Failure.of(error) if error is not None else None, info)
    if error is not None:
        raise error
    if failure is not None:
        raise failure.error()


def main_first(fn: Callable[[], T], info: DistInfo | None) -> T:
    """``fn()`` on rank 0, then on the other ranks: a download into a shared cache happens once.

    If rank 0's call raises a :class:`~realdeal.errors.RealDealError`, every rank raises it and
    the others never call ``fn`` (collective).
    """
    if info is None or not info.distributed:
        return fn()
    if not info.is_main:
        broadcast_error(None, info)  # raises rank 0's error, if it had one
        return fn()
    try:
        result = fn()
    except RealDealError as e:
        broadcast_error(e, info)
        raise
    broadcast_error(None, info)
    return result


def check_same(value: Any, info: DistInfo | None, what: str) -> None:
    """Collective: every rank holds the same ``value`` (a list of input files, say), or every
    rank raises one :class:`~realdeal.errors.ConfigError` line naming the ranks that differ.

    Ranks on several nodes list their inputs each on its own file system; a node that sees
    other files would compute the wrong share without a word.
    """
    if info is None or not info.distributed:
        return
    values = gather_objects((value, info.node_rank), info)
    differ = [f"{r} (node {node})" for r, (v, node) in enumerate(values) if v != values[0][0]]
    if differ:
        raise ConfigError(
            f"{what} differ between ranks: rank(s) {', '.join(differ)} see other ones than "
            f"rank 0 (node {values[0][1]}); every node must read the same files"
        )


def check_shared_folder(folder: str | os.PathLike, info: DistInfo | None) -> None:
    """Collective: every rank sees the files rank 0 writes into ``folder``, or every rank raises
    one :class:`~realdeal.errors.InputError` line.

    Rank 0 creates ``folder`` and a hidden marker file in it, every rank looks for the marker,
    and rank 0 removes it. On one node this always holds; across nodes ``folder`` must lie on a
    file system that every node mounts (where ranks write their own outputs and rank 0 the
    side files, or every rank reads a checkpoint rank 0 wrote).
    """
    if info is None or not info.distributed:
        return
    folder = Path(folder)
    marker, error = None, None
    if info.is_main:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / f".realdeal-shared.{uuid.uuid4().hex}"
            marker.touch()
        except OSError as e:
            error = InputError(folder, f"cannot write here: {e.strerror or e}")
    broadcast_error(error, info)
    marker = broadcast_object(marker, info)
    seen = gather_objects((marker.exists(), info.node_rank), info)
    if info.is_main:
        marker.unlink(missing_ok=True)
    blind = [f"{r} (node {node})" for r, (ok, node) in enumerate(seen) if not ok]
    if blind:
        raise InputError(
            folder,
            f"rank(s) {', '.join(blind)} do not see what rank 0 writes here: on several "
            "nodes, put it on a file system every node mounts",
        )
