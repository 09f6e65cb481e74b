"""Label conventions: FreeSurfer ``aseg``/``aparc+aseg`` codes and the regions the metrics use.

HCP ships FreeSurfer label maps, so realdeal uses FreeSurfer codes throughout; the built-in
cohort writes its label maps with the same codes, so one set of region definitions serves both.
"""

from __future__ import annotations

import numpy as np

# FreeSurfer codes (left, right).
LEFT_WM, RIGHT_WM = 2, 41
LEFT_CORTEX, RIGHT_CORTEX = 3, 42
LEFT_LAT_VENT, RIGHT_LAT_VENT = 4, 43
LEFT_INF_LAT_VENT, RIGHT_INF_LAT_VENT = 5, 44
LEFT_CEREBELLUM_WM, RIGHT_CEREBELLUM_WM = 7, 46
LEFT_CEREBELLUM_CORTEX, RIGHT_CEREBELLUM_CORTEX = 8, 47
CSF = 24

REGIONS: dict[str, tuple[int, ...]] = {
    "white_matter": (LEFT_WM, RIGHT_WM),
    "lateral_ventricles": (LEFT_LAT_VENT, RIGHT_LAT_VENT, LEFT_INF_LAT_VENT, RIGHT_INF_LAT_VENT),
    "cerebellum": (
        LEFT_CEREBELLUM_WM,
        LEFT_CEREBELLUM_CORTEX,
        RIGHT_CEREBELLUM_WM,
        RIGHT_CEREBELLUM_CORTEX,
    ),
}
"""Region name → FreeSurfer codes (docs/method.md#spec-2). ``brain`` is every non-zero label."""

NAMES = {
    0: "background",
    LEFT_WM: "Left-Cerebral-White-Matter",
    RIGHT_WM: "Right-Cerebral-White-Matter",
    LEFT_CORTEX: "Left-Cerebral-Cortex",
    RIGHT_CORTEX: "Right-Cerebral-Cortex",
    LEFT_LAT_VENT: "Left-Lateral-Ventricle",
    RIGHT_LAT_VENT: "Right-Lateral-Ventricle",
    LEFT_INF_LAT_VENT: "Left-Inf-Lat-Vent",
    RIGHT_INF_LAT_VENT: "Right-Inf-Lat-Vent",
    LEFT_CEREBELLUM_WM: "Left-Cerebellum-White-Matter",
    LEFT_CEREBELLUM_CORTEX: "Left-Cerebellum-Cortex",
    RIGHT_CEREBELLUM_WM: "Right-Cerebellum-White-Matter",
    RIGHT_CEREBELLUM_CORTEX: "Right-Cerebellum-Cortex",
    CSF: "CSF",
}


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of a named region (``brain`` or a key of :data:`REGIONS`)."""
    if region == "brain":
        return labels > 0
    try:
        codes = REGIONS[region]
    except KeyError:
        raise KeyError(f"unknown region {region!r}; known: brain, {', '.join(REGIONS)}") from None
    return np.isin(labels, codes)
