"""Paired tables name only the metrics that were computed."""

from __future__ import annotations

from realdeal.metrics import tables as T


def _rows(metrics: list[str], axes: dict[str, tuple[str, ...]]) -> list[dict]:
    return [
        {"set": "recon", "metric": m, "axis": a, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6,
         "n": 3}
        for m in metrics
        for a in axes.get(m, ("",))
    ]  # fmt: skip


PER_AXIS = {m: T.DIMS for m in ("lpips", "hog_brain", "hog_cerebellum")}


def test_the_title_leaves_out_lpips_when_it_was_not_computed():
    without = T.paired_markdown(
        _rows(["hog_brain", "hog_cerebellum", "kl_white_matter", "kl_lateral_ventricles"],
              PER_AXIS), ["recon"],
    )  # fmt: skip
    first = without.splitlines()[0]
    assert "LPIPS" not in without
    assert first == (
        "**Table 1 — distance to the original (HOG texture, noise KL; suppl. Table 4: ventricles)**"
    )
    with_lpips = T.paired_markdown(_rows(["lpips", "hog_brain"], PER_AXIS), ["recon"])
    assert (
        with_lpips.splitlines()[0] == "**Table 1 — distance to the original (LPIPS, HOG texture)**"
    )


def test_the_suite_titles_a_no_lpips_run_without_lpips():
    assert "LPIPS" not in T.distance_title(["hog_brain", "kl_white_matter", "sharpness", "psnr"])
    assert T.distance_title(["kl_white_matter"]) == "Table 1 — distance to the original (noise KL)"
