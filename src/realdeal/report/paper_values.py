"""The RealDeal paper's HCP numbers (main Tables 1–3, supplement Tables 4–6), as data.

Every value is keyed by ``(row, metric, axis)`` with the paper's row names (``Recon.``,
``RealDeal``, ``Orig.``, ``Synthetic``), realdeal's metric names (those of
:mod:`realdeal.metrics.suite`) and axes ``dim0``/``dim1``/``dim2`` (``""`` for scalar
metrics). Setting of all of them: HCP young-adult T1w, 224×288×224 at 0.7 mm, 20 test
subjects (paired) or 20 LDM samples against the test images (unpaired, Inception features).
"""

from __future__ import annotations

import dataclasses

DIMS = ("dim0", "dim1", "dim2")
RECON, REALDEAL, ORIG, SYNTHETIC = "Recon.", "RealDeal", "Orig.", "Synthetic"
SETTING = (
    "HCP young adult T1w, 224×288×224 at 0.7 mm, full-scale models; paired metrics over 20 "
    "test subjects, unpaired over 20 LDM samples (Inception features)"
)


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """One table of the paper: its number, caption and values as printed (``"0.030"``)."""

    number: str
    caption: str
    values: dict[tuple[str, str, str], str]


@dataclasses.dataclass(frozen=True)
class PaperValue:
    """One number of the paper: its value, the text as printed, and the table it is from."""

    value: float
    text: str
    table: str


def _axes(row: str, metric: str, vals: tuple[str, str, str]) -> dict:
    return {(row, metric, d): v for d, v in zip(DIMS, vals, strict=True)}


TABLES: tuple[PaperTable, ...] = (
    PaperTable(
        "Table 1",
        "LPIPS, HOG texture distance (whole brain, cerebellum) and white-matter noise KL "
        "to the original",
        {
            **_axes(RECON, "lpips", ("0.078", "0.073", "0.079")),
            **_axes(REALDEAL, "lpips", ("0.029", "0.027", "0.030")),
            **_axes(RECON, "hog_brain", ("7.602", "6.486", "7.181")),
            **_axes(REALDEAL, "hog_brain", ("6.451", "5.610", "6.093")),
            **_axes(RECON, "hog_cerebellum", ("2.639", "3.243", "3.149")),
            **_axes(REALDEAL, "hog_cerebellum", ("2.143", "2.734", "2.715")),
            (RECON, "kl_white_matter", ""): "0.775",
            (REALDEAL, "kl_white_matter", ""): "0.149",
        },
    ),
    PaperTable(
        "Table 2",
        "Sharpness (variance of the Laplacian in random 64³ patches)",
        {
            (ORIG, "sharpness", ""): "0.0139",
            (RECON, "sharpness", ""): "0.0063",
            (REALDEAL, "sharpness", ""): "0.0111",
        },
    ),
    PaperTable(
        "Table 3",
        "FID, coverage and density (k = 10) of LDM samples and their refined versions",
        {
            **_axes(SYNTHETIC, "fid", ("46.62", "48.77", "46.59")),
            **_axes(REALDEAL, "fid", ("17.30", "18.23", "19.17")),
            **_axes(ORIG, "fid", ("2.48", "2.74", "2.84")),
            **_axes(SYNTHETIC, "coverage_k10", ("0.311", "0.322", "0.310")),
            **_axes(REALDEAL, "coverage_k10", ("0.763", "0.738", "0.745")),
            **_axes(ORIG, "coverage_k10", ("0.971", "0.970", "0.936")),
            **_axes(SYNTHETIC, "density_k10", ("0.172", "0.189", "0.168")),
            **_axes(REALDEAL, "density_k10", ("0.492", "0.462", "0.494")),
            **_axes(ORIG, "density_k10", ("0.910", "0.912", "0.907")),
        },
    ),
    PaperTable(
        "suppl. Table 4",
        "Noise KL divergence in the lateral ventricles",
        {
            (RECON, "kl_lateral_ventricles", ""): "0.3941",
            (REALDEAL, "kl_lateral_ventricles", ""): "0.0702",
        },
    ),
    PaperTable(
        "suppl. Table 5",
        "Coverage and density, k = 5",
        {
            **_axes(SYNTHETIC, "coverage_k5", ("0.192", "0.196", "0.186")),
            **_axes(REALDEAL, "coverage_k5", ("0.588", "0.558", "0.572")),
            **_axes(ORIG, "coverage_k5", ("0.916", "0.910", "0.884")),
            **_axes(SYNTHETIC, "density_k5", ("0.150", "0.165", "0.143")),
            **_axes(REALDEAL, "density_k5", ("0.453", "0.422", "0.452")),
            **_axes(ORIG, "density_k5", ("0.880", "0.878", "0.867")),
        },
    ),
    PaperTable(
        "suppl. Table 6",
        "Coverage and density, k = 20",
        {
            **_axes(SYNTHETIC, "coverage_k20", ("0.468", "0.482", "0.471")),
            **_axes(REALDEAL, "coverage_k20", ("0.882", "0.870", "0.855")),
            **_axes(ORIG, "coverage_k20", ("0.975", "0.975", "0.939")),
            **_axes(SYNTHETIC, "density_k20", ("0.203", "0.216", "0.202")),
            **_axes(REALDEAL, "density_k20", ("0.531", "0.499", "0.529")),
            **_axes(ORIG, "density_k20", ("0.933", "0.933", "0.927")),
        },
    ),
)


def paper_value(row: str | None, metric: str, axis: str = "") -> PaperValue | None:
    """The paper's number for ``row``/``metric``/``axis`` (``None`` if it reports none)."""
    if row is None:
        return None
    for table in TABLES:
        text = table.values.get((row, metric, axis))
        if text is not None:
            return PaperValue(float(text), text, table.number)
    return None


def tables_for(metric: str) -> list[str]:
    """Numbers of the paper tables that report ``metric`` (e.g. ``["Table 1"]``)."""
    return [t.number for t in TABLES if any(m == metric for _, m, _ in t.values)]


def paper_row(set_name: str, mode: str) -> str | None:
    """The paper's row for one of our set names, by name: refined sets → ``RealDeal``.

    ``mode`` is ``"paired"`` (``recon…`` → ``Recon.``) or ``"unpaired"`` (``sample``/``ldm``/
    ``synth…`` → ``Synthetic``); ``original`` → ``Orig.``. Unknown names → ``None``.
    """
    name = set_name.lower()
    if name == "original":
        return ORIG
    if "refin" in name or "realdeal" in name:
        return REALDEAL
    if mode == "paired" and "recon" in name:
        return RECON
    if mode == "unpaired" and any(k in name for k in ("sample", "ldm", "synth", "generated")):
        return SYNTHETIC
    return None
