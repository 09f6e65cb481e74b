"""Progress bars for long work, and log lines that do not break them.

Bars show by default, from the command line and from the Python API alike (a script that
never configures logging still sees its sampler steps). They stay off where they would only
add noise or were asked away: ``REALDEAL_NO_PROGRESS=1``, ``realdeal -q``
(:func:`set_quiet`), and output that is not a terminal (a log file, a pipe; Jupyter shows its
own widgets). :class:`ProgressLogHandler` writes log records through tqdm, so a log line
printed while a bar runs gets a line of its own instead of landing inside the bar's.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar of this process off (``True``) or back on (``realdeal -q``)."""
    global _quiet
    _quiet = bool(quiet)


def progress_enabled() -> bool:
    """Whether bars may show: not disabled by ``REALDEAL_NO_PROGRESS`` (any value but empty or
    ``0``) or by :func:`set_quiet`. A bar that may show still stays off outside a terminal."""
    if os.environ.get("REALDEAL_NO_PROGRESS", "") not in ("", "0"):
        return False
    return not _quiet


def progress(
    iterable: Iterable[T] | None = None,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    **kw,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual bar when ``iterable`` is None), on stderr
    while it is a terminal and :func:`progress_enabled`; removed when it closes."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        disable=None if progress_enabled() else True,  # None: off when not a terminal
        dynamic_ncols=True,
        leave=False,
        **kw,
    )


class ProgressLogHandler(logging.StreamHandler):
    """A stream handler that writes each record with ``tqdm.write``: running bars are cleared,
    the line is written, and the bars are drawn again below it.

    Without a ``stream`` it writes to whatever ``sys.stderr`` is when a record comes (as
    logging's last-resort handler does), not to the one there was when it was made: a caller
    that swaps ``sys.stderr`` (a test's capture, a notebook) never leaves it a closed stream.
    """

    def __init__(self, stream=None):
        super().__init__(stream)
        self._stream = stream

    @property  # type: ignore[override]
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        self._stream = value

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
