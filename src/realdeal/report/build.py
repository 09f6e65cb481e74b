"""The run report: ``report.html``, ``report.md``, ``report.json`` and ``figures/*.png``.

:func:`build_report` reads a run folder through its manifest ``run.json``
(:mod:`realdeal.report.run`) and writes, into ``RUN/report/``:

- slice figures of up to three held-out subjects (original | reconstruction | refined, with an
  enlarged cortical box) and of up to three LDM samples next to their refined versions;
- noise maps (image − NLM-denoised image, the noise-KL metric's own denoiser) on one slice;
- the metric tables in the paper's layout, with the paper's HCP values beside ours
  (:mod:`realdeal.report.paper_values`);
- training curves, timings, configuration and versions.

Each section (:mod:`realdeal.report.sections`) turns its inputs into a list of blocks
(:mod:`realdeal.report.document`), rendered twice (:mod:`realdeal.report.render`) to
self-contained HTML and to Markdown. Every section whose inputs are missing is replaced by a
one-line note, so partial runs still get a report. The folder is built beside its
destination and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from realdeal import __version__
from realdeal.errors import InputError, RealDealError
from realdeal.report.cells import MISSING
from realdeal.report.document import Block, Note, Para
from realdeal.report.render import render_html, render_markdown
from realdeal.report.run import Run, load_run
from realdeal.report.sections import SECTIONS, Context, Skipped
from realdeal.utils.fs import atomic_dir, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

REPORT_FORMAT = "realdeal-report"


def _check_out(out: Path, run: Run) -> None:
    """Refuse to replace a folder that is not a report (the run itself, or foreign data)."""
    res, root = out.resolve(), run.root.resolve()
    if res == root or root.is_relative_to(res):
        raise InputError(out, "the report folder cannot be the run folder or one above it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / "report.json").is_file():
            raise InputError(out, "exists and is not a realdeal report folder; choose another")


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Build the report of the run in ``run_dir``; return the path of ``report.html``.

    Reads ``RUN/run.json`` (format ``realdeal-run``) and the inputs it names; writes
    ``report.html``, ``report.md``, ``report.json`` and ``figures/*.png`` into ``out``
    (default ``RUN/report``), replacing an earlier report there atomically. Sections whose
    inputs are missing become one-line notes. A missing or invalid ``run.json`` raises
    :class:`~realdeal.errors.InputError`.
    """
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.root / "report"
    _check_out(out, run)
    built = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    title = f"RealDeal report — {run.root.resolve().name}"
    m = run.manifest
    intro: list[Block] = [
        Para(
            f"Run folder: {run.root.resolve()} · preset: {m.get('preset', MISSING)} · "
            f"run started: {m.get('created', MISSING)} · finished: {m.get('finished', MISSING)}"
            f" · report built: {built}"
        )
    ]
    with atomic_dir(
        out,
        overwrite=True,
        marker=("report.json", REPORT_FORMAT),
        contents=("report.html", "report.md", "report.json", "figures"),
    ) as tmp:
        ctx = Context(run, tmp)
        rendered: list[tuple[str, str, list[Block]]] = []
        status = []
        for anchor, heading, fn in SECTIONS:
            try:
                blocks = fn(ctx)
                status.append({"id": anchor, "title": heading, "status": "ok", "note": None})
            except (Skipped, RealDealError, OSError) as e:
                reason = str(e) if isinstance(e, Skipped) else f"could not read its inputs ({e})"
                log.warning("report section %r skipped: %s", heading, reason)
                blocks = [Note(f"Skipped: {reason}.")]
                status.append({"id": anchor, "title": heading, "status": "skipped", "note": reason})
            rendered.append((anchor, heading, blocks))
        write_text_atomic(tmp / "report.html", render_html(title, intro, rendered))
        write_text_atomic(tmp / "report.md", render_markdown(title, intro, rendered))
        write_json_atomic(
            tmp / "report.json",
            {
                "format": REPORT_FORMAT,
                "version": 1,
                "run": str(run.root.resolve()),
                "built": built,
                "realdeal": __version__,
                "sections": status,
                "figures": [f for f in ctx.figure_files if (tmp / f).is_file()],
                "comparison": ctx.comparison,
            },
        )
    log.info("report written to %s", out / "report.html")
    return out / "report.html"
