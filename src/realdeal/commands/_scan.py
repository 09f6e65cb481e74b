"""Flags shared by the commands that take your own scans: intensity mapping and brain."""

from __future__ import annotations

import argparse


def add_input_flags(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """Positional NIfTI inputs and ``-o/--out`` (both optional where another form exists)."""
    p.add_argument(
        "inputs", nargs="*" if optional else "+", help="NIfTI files, folders or quoted globs"
    )
    p.add_argument(
        "-o", "--out", required=not optional, help="output folder (or a .nii.gz for one input)"
    )


def add_scan_flags(p: argparse.ArgumentParser) -> None:
    """``--intensity``, ``--brain-mask``, ``--skull-strip`` and ``--allow-head``."""
    p.add_argument(
        "--intensity",
        choices=["auto", "scaled", "raw", "percentile"],
        help="input intensities: scaled = already in [−1, 1]; raw = training units (the stored "
        "training mapping); percentile = any units (the scan's own brain percentiles); auto "
        "(default) picks scaled, else raw if it puts the brain inside [−1, 1], else percentile",
    )
    p.add_argument(
        "--brain-mask",
        metavar="MASK",
        help="brain mask on the input's grid (a file, or a folder of <input name>.nii.gz masks)",
    )
    p.add_argument(
        "--skull-strip",
        action="store_true",
        help="extract the brain by affine registration of MNI152 (adult T1w near MNI shape)",
    )
    p.add_argument(
        "--allow-head",
        action="store_true",
        help="process scans that look like heads with skull and scalp (refused by default)",
    )
