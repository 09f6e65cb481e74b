"""Progress from the Python API: the pipelines show bars on a terminal without any logging
set up, and stay quiet when asked (``REALDEAL_NO_PROGRESS``, ``-q``) or off a terminal."""

from __future__ import annotations

import io
import logging

import numpy as np
import torch

from realdeal.utils import progress as P


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch) -> Terminal:
    """stderr is a terminal, nothing disables bars, and logging is as a script leaves it
    (the root logger at WARNING, as the Python API sees it when nothing configured it).
    Called in the test itself: pytest puts its own stderr back after fixtures ran."""
    term = Terminal()
    monkeypatch.delenv("REALDEAL_NO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    P.set_quiet(False)
    return term


def test_bars_show_by_default_and_are_turned_off_on_request(monkeypatch):
    terminal = _terminal(monkeypatch)
    assert P.progress_enabled()
    bar = P.progress(total=3, desc="counting")
    bar.update(2)
    bar.close()
    assert "counting" in terminal.getvalue()
    try:
        P.set_quiet(True)  # realdeal -q
        assert not P.progress_enabled() and P.progress(total=3).disable
    finally:
        P.set_quiet(False)
    monkeypatch.setenv("REALDEAL_NO_PROGRESS", "1")
    assert not P.progress_enabled() and P.progress(total=3).disable


def test_no_bar_off_a_terminal(monkeypatch):
    monkeypatch.delenv("REALDEAL_NO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a pipe or a log file
    P.set_quiet(False)
    assert P.progress_enabled() and P.progress(total=3).disable


def test_the_ldm_pipeline_shows_its_sampler_steps(monkeypatch, tmp_path):
    from realdeal.pipelines.ldm import LatentDiffusionPipeline
    from tiny_ldm import tiny_ldm_checkpoint

    pipe = LatentDiffusionPipeline.from_checkpoint(tiny_ldm_checkpoint(tmp_path))
    terminal = _terminal(monkeypatch)
    pipe(1, sampler="ddim", steps=2, seed=0)
    out = terminal.getvalue()
    assert "\rddim 1-1/1: " in out and "/2 " in out, out  # a bar over the 2 steps


def test_the_refiner_pipeline_shows_its_batches(monkeypatch, tmp_path):
    from realdeal.pipelines.refiner import RefinerPipeline
    from tiny_refiner import tiny_refiner_checkpoint

    pipe = RefinerPipeline.from_checkpoint(tiny_refiner_checkpoint(tmp_path / "r.pt"))
    terminal = _terminal(monkeypatch)
    x = np.full((16, 16, 16), -1.0, np.float32)
    x[4:12, 4:12, 4:12] = 0.2
    pipe(torch.from_numpy(x)[None], steps=1, seed=0)
    assert "\rrefine: " in terminal.getvalue()  # a bar's line (tqdm starts each with \r)
    terminal.seek(0)
    terminal.truncate()
    pipe(torch.from_numpy(x)[None], steps=1, seed=0, show_progress=False)
    assert "\rrefine: " not in terminal.getvalue()
