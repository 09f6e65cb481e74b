"""Devices and precision: where a model runs, in which dtype, and how to name it in logs."""

from __future__ import annotations

import functools
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import torch

from realdeal.config import device_problem
from realdeal.errors import ConfigError
from realdeal.runtime.distributed import resolve_device as _resolve_device

__all__ = [
    "Precision",
    "autocast_context",
    "check_device",
    "cpu_has_native_bf16",
    "device_label",
    "resolve_device",
    "resolve_precision",
]

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def check_device(name: str, flag: str = "--device") -> None:
    """Refuse, in one :class:`~realdeal.errors.ConfigError` line naming ``flag``, a device
    that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or a GPU this machine does not have
    (``cuda`` without CUDA, ``cuda:3`` on a one-GPU machine): torch would otherwise fail with a
    traceback, some only once the work has started."""
    problem = device_problem(name)
    if problem:
        raise ConfigError(f"{flag}: {problem}")
    if not name.startswith("cuda"):
        return
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise ConfigError(f"{flag} {name}: no CUDA GPU is available here (use auto or cpu)")
    index = int(name.partition(":")[2] or 0)
    if index >= n:
        raise ConfigError(f"{flag} {name}: this machine has {n} CUDA GPU(s), cuda:0 … cuda:{n - 1}")


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The torch device for ``name`` (:data:`~realdeal.config.DEVICE_NAMES`), after
    :func:`check_device`; see :func:`realdeal.runtime.distributed.resolve_device`."""
    check_device(name)
    return _resolve_device(name, local_rank)


def device_label(device: torch.device, world_size: int = 1) -> str:
    """Where training runs, for logs and checkpoint manifests: ``cpu (2 threads)``,
    ``cuda:0 (NVIDIA H100 80GB HBM3)``, prefixed by the process count under torchrun."""
    if device.type == "cuda":
        label = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        label = f"{device.type} ({torch.get_num_threads()} threads)"
    return f"{world_size} × {label}" if world_size > 1 else label


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16 instructions).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on plain
    AVX-512 CPUs, where bf16 is emulated: there a small U-Net's training step took 2.4 s in bf16
    against 0.76 s in fp32 (one thread), so ``auto`` must not pick bf16 on such a CPU. Where
    ``/proc/cpuinfo`` is absent (not Linux) oneDNN's answer is used.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(
    precision: Precision, device: torch.device
) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether to use a grad scaler)."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            logging.getLogger(__name__).warning(
                "bf16 requested, but this CPU has no native bf16: it is emulated and far slower "
                "than fp32 (measured: 3x slower for a small U-Net's training step, up to ~70x for "
                "the refiner's inference); use --precision fp32"
            )
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ConfigError("fp16 training needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.float16, True


def inference_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an inference command (``None`` = fp32).

    ``auto``: bf16 on a CUDA device that supports it and on a CPU with native bf16
    (:func:`cpu_has_native_bf16`), fp32 elsewhere. Measured on an H100 with the paper refiner
    and on 2 cores of an AVX512-BF16 CPU, bf16 is faster at the same quality (docs/results/gpu.md,
    docs/results/cpu.md). On a CPU that
    would emulate bf16 ``auto`` stays fp32 (emulation is many times slower). So CPU outputs
    depend on the chip's bf16 support, as they already did on its vector width in the last
    float bits; ``--precision fp32`` gives the fp32 result anywhere.
    """
    if precision == "auto" and device.type == "cuda":  # training's auto would pick fp16
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return resolve_precision(precision, device)[0]  # type: ignore[arg-type]


def autocast_context(dtype: torch.dtype | None, device: torch.device):
    """``torch.autocast`` for ``dtype`` (a no-op context for fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


class FixedBatch(torch.nn.Module):
    """``net`` called on every batch padded (with zeros) to ``size`` samples, output cut back.

    A compiled network sees one batch shape instead of one per partial batch (each new shape
    would compile again). The refiner's layers act on each sample alone (group norm, per-window
    attention), so the padding changes a window's output only in the last float bits, like any
    change of batch size.
    """

    def __init__(self, net: torch.nn.Module, size: int):
        super().__init__()
        self.net, self.size = net, int(size)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n > self.size:
            raise ValueError(f"batch of {n} windows over the fixed batch size {self.size}")
        if n < self.size:
            x = torch.cat([x, x.new_zeros((self.size - n, *x.shape[1:]))])
            t = torch.cat([t, t.new_zeros(self.size - n)])
        return self.net(x, t)[:n]


def compiled_network(net: torch.nn.Module, batch: int, backend: str) -> torch.nn.Module:
    """``torch.compile`` of ``net`` at one fixed batch size (:class:`FixedBatch`).

    Compiling pays off after the first call on a GPU (measured on an H100 with the paper refiner:
    docs/results/gpu.md).
    """
    return torch.compile(FixedBatch(net, batch), backend=backend, dynamic=False)
