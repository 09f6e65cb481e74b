"""``realdeal report RUN`` labels every metric as the demo's own report does, in a process that
never ran an evaluation (the labels must not depend on what ran before in the process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from realdeal.metrics import tables as T

METRICS = ["fd_patchstats", "coverage_k10_patchstats", "density_k10_patchstats",
           "coverage_k5_patchstats", "density_k5_patchstats", "precision_k5_patchstats",
           "recall_k5_patchstats", "precision_k10_patchstats", "recall_k10_patchstats"]  # fmt: skip


def _run_folder(root):
    """A run folder holding only an unpaired evaluation's results (patch-stats features)."""
    run = root / "run"
    (run / "ev").mkdir(parents=True)
    summary = [
        {"set": s, "metric": m, "axis": a, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 4}
        for s in ("sample", "original")
        for m in METRICS
        for a in T.DIMS
    ]
    (run / "ev" / "results.json").write_text(json.dumps({
        "mode": "unpaired", "sets": ["sample"], "summary": summary, "records": [],
        "config": {"unpaired": {"features": "patchstats", "ks": [5, 10]}},
    }))  # fmt: skip
    (run / "run.json").write_text(
        json.dumps({"format": "realdeal-run", "version": 1, "unpaired": {"eval": "ev"}})
    )
    return run


def test_metric_labels_need_no_earlier_evaluation():
    assert T.metric_label("precision_k5_patchstats") == "Precision k=5 ↑"
    assert T.metric_label("coverage_k10") == "Coverage k=10 ↑"
    assert T.LABELS.get("recall_k3_patchstats", "x") == "Recall k=3 ↑"
    assert T.metric_label("psnr") == "PSNR (dB) ↑" and T.metric_label("new_thing") == "new_thing"


@pytest.mark.slow
def test_a_rebuilt_report_shows_labels_not_metric_names(tmp_path):
    run = _run_folder(tmp_path)
    res = subprocess.run([sys.executable, "-m", "realdeal", "-q", "report", str(run)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    md = (run / "report" / "report.md").read_text()
    assert "Further per-axis metrics" in md  # precision/recall: no paper value
    for m in METRICS:
        assert m not in md, m
    for label in ("Precision k=5 ↑", "Recall k=10 ↑"):
        assert label in md, label
