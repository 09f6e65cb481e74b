"""Show: slice figures and the run report.

:mod:`.build` builds a run's report (:func:`~realdeal.report.build.build_report`) from
:mod:`.run` (the run folder's ``run.json`` and training logs) and :mod:`.sections` (one module
per group of sections), as :mod:`.document` blocks that :mod:`.render` writes to HTML and
Markdown; :mod:`.figures` draws the PNGs, :mod:`.paper_values` holds the paper's numbers.
Metric values are computed in :mod:`realdeal.metrics`; the report only reads and shows them.
"""
