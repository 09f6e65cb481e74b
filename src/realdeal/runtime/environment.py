"""Checks of the installed torch stack that realdeal's optional networks depend on.

torchvision (which ``lpips`` and ``pytorch-fid`` build their networks from) is compiled against
one torch release. Installed beside another torch build, ``import torchvision`` fails deep in
its operator registration (``RuntimeError: operator torchvision::nms does not exist``).
:func:`check_torchvision` imports torchvision and runs one tiny operator; where that fails it
raises :class:`~realdeal.errors.InstallationError`, one line naming both versions and the fix:
torchvision ``0.N+15`` goes with torch ``2.N`` (torch 2.5 with torchvision 0.20, …), installed
together from one package index. ``realdeal doctor`` reports the same check.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re

from realdeal.errors import InstallationError

TORCH_INDEX = "https://download.pytorch.org/whl"


def package_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` from its metadata (no import), or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release built for ``torch_version`` (``2.N.M`` → ``0.(N+15).M``), or
    ``None`` for a version that does not follow the torch 2 numbering."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", torch_version)
    if m is None or m.group(1) != "2":
        return None
    return f"0.{int(m.group(2)) + 15}.{m.group(3) or 0}"


def pair_fix(torch_version: str | None) -> str:
    """The command that installs torch and a torchvision built for it together: the installed
    torch release, its torchvision, and for a local build (``+cpu``, ``+cu121``) its index."""
    if not torch_version:
        return "pip install --force-reinstall torch torchvision"
    release, _, local = torch_version.partition("+")
    vision = matching_torchvision(release)
    cmd = f"pip install --force-reinstall torch=={release}"
    cmd += f" torchvision=={vision}" if vision else " torchvision"
    if local:
        cmd += f" --index-url {TORCH_INDEX}/{local}"
    return cmd


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def torchvision_problem() -> str | None:
    """Why torchvision cannot be used here (its error's first line), or ``None`` when it
    imports and its compiled operators run (``torchvision.ops.nms`` on one box)."""
    try:
        import torch

        tv = importlib.import_module("torchvision")
        boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        tv.ops.nms(boxes, torch.ones(1), 0.5)
    except Exception as e:  # RuntimeError (operators), ImportError, AttributeError: unusable
        return _first_line(e)
    return None


def torchvision_error(problem: str, needed_for: str = "") -> InstallationError:
    """The one-line error for an unusable torchvision (``problem``: what failed), naming the
    installed torch and torchvision versions and the command that installs a matching pair."""
    torch_version = package_version("torch")
    vision = package_version("torchvision")
    what = f"{needed_for} needs torchvision, but " if needed_for else ""
    if vision is None:
        state = f"torchvision is not installed ({problem})"
    else:
        state = f"torchvision {vision} does not work with torch {torch_version} ({problem})"
    return InstallationError(
        f"{what}{state}: install torch and torchvision together, e.g. "
        f"`{pair_fix(torch_version)}` (torchvision 0.N+15 goes with torch 2.N)"
    )


def check_torchvision(needed_for: str = "") -> None:
    """Raise :class:`~realdeal.errors.InstallationError` (one line: both versions, the fix)
    unless torchvision imports and runs one operator; ``needed_for`` names what needs it
    (e.g. ``"LPIPS (--no-lpips skips it)"``)."""
    problem = torchvision_problem()
    if problem is not None:
        raise torchvision_error(problem, needed_for)
