"""The report's sections, in order: ``(anchor, heading, function)``.

Each function takes the shared :class:`~.context.Context` and returns its blocks, or raises
:class:`~.context.Skipped` with a one-line note when its inputs are missing.
"""

from __future__ import annotations

from collections.abc import Callable

from realdeal.report.document import Block
from realdeal.report.sections.comparison import paired_metrics_section, unpaired_metrics_section
from realdeal.report.sections.configuration import config_section
from realdeal.report.sections.context import Context, Skipped
from realdeal.report.sections.memorization import memorization_section
from realdeal.report.sections.noise import noise_section
from realdeal.report.sections.samples import samples_section
from realdeal.report.sections.subjects import subjects_section
from realdeal.report.sections.training import timings_section, training_section

SECTIONS: tuple[tuple[str, str, Callable[[Context], list[Block]]], ...] = (
    ("subjects", "Held-out subjects: original, reconstruction, refined", subjects_section),
    ("noise", "Noise maps", noise_section),
    ("paired-metrics", "Paired metrics against the paper", paired_metrics_section),
    ("samples", "LDM samples and their refined versions", samples_section),
    ("unpaired-metrics", "Unpaired metrics against the paper", unpaired_metrics_section),
    (
        "memorization",
        "Memorisation: new brains or recalled training subjects?",
        memorization_section,
    ),
    ("training", "Training curves", training_section),
    ("timings", "Timings", timings_section),
    ("config", "Configuration and versions", config_section),
)

__all__ = ["SECTIONS", "Context", "Skipped"]
