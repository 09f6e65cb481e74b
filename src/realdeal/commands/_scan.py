"""Flags shared by the commands that take your own scans: inputs, intensity mapping, brain."""

from __future__ import annotations

import argparse

from realdeal.commands._flags import Flag


def add_input_flags(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """Positional NIfTI inputs and ``-o/--out`` (both optional where another form exists)."""
    p.add_argument(
        "inputs", nargs="*" if optional else "+", help="NIfTI files, folders or quoted globs"
    )
    p.add_argument(
        "-o", "--out", required=not optional, help="output folder (or a .nii.gz for one input)"
    )


#: ``--intensity``, ``--brain-mask``, ``--skull-strip`` and ``--allow-head``: the flags of the
#: fields of :class:`~realdeal.data.intensity.ScanOptions` (and of the settings that repeat
#: them, :class:`~realdeal.pipelines.refiner.RefineSettings`).
SCAN_FLAGS: dict[str, str | Flag] = {
    "intensity": Flag(
        "input intensities: scaled = already in [−1, 1]; raw = training units (the stored "
        "training mapping); percentile = any units (the scan's own brain percentiles); auto "
        "picks scaled, else raw if it puts the brain inside [−1, 1], else percentile",
        choices="realdeal.data.intensity:INTENSITY_MODES",
    ),
    "brain_mask": Flag(
        "brain mask on the input's grid (a file, or a folder of <input name>.nii.gz masks)",
        metavar="MASK",
    ),
    "skull_strip": Flag(
        "extract the brain by affine registration of MNI152 (adult T1w near MNI shape)",
        switch=True,
    ),
    "allow_head": Flag(
        "process scans that look like heads with skull and scalp (refused by default)",
        switch=True,
    ),
}
