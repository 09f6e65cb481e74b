"""Progress bars for long work, silenced by ``realdeal -q`` or ``REALDEAL_NO_PROGRESS=1``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """Bars show unless disabled by environment or the root logger is above INFO (``-q``)."""
    if os.environ.get("REALDEAL_NO_PROGRESS"):
        return False
    return logging.getLogger().getEffectiveLevel() <= logging.INFO


def progress(
    iterable: Iterable[T] | None = None,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    **kw,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual bar when ``iterable`` is None)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        disable=not progress_enabled(),
        dynamic_ncols=True,
        leave=False,
        **kw,
    )
