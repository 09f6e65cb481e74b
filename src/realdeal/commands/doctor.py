"""``realdeal doctor``: what this installation can run — packages, devices, optional data.

One line per check: its status, what was checked, and what it is needed for.

Required (``OK``, else ``MISSING`` or ``BROKEN``; any failure makes the exit status 1): Python
3.10 or newer; torch, imported and computing; the packages realdeal depends on (monai, numpy,
nibabel, dipy, scikit-image, nilearn, lpips, pytorch-fid, safetensors) installed; torchvision's
compiled operators loading with this torch (LPIPS and FID build their networks from
torchvision, and ``realdeal evaluate`` computes both by default); nilearn's MNI152 template
(the cohort, skull stripping and automatic labels).

Optional (``OK`` or ``absent``; never an exit status of 1): Colin27 and the AAL atlas from
Debian's ``mricron-data`` (a second cohort source, cerebellum labels); the LPIPS AlexNet and
FID Inception weight files in the torch.hub cache (downloaded on first use; ``--no-lpips``
and ``--features patchstats`` do without them); the shipped demo checkpoints. Devices are
reported (``info``): CUDA GPUs, and whether the CPU computes bf16 natively.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
from pathlib import Path

from realdeal.commands._checks import check_writable_file

#: (distribution, what realdeal needs it for) of every required package but torch and
#: torchvision, which are checked by running them.
PACKAGES = (
    ("monai", "networks, training, the cohort's deformations"),
    ("numpy", "everything"),
    ("nibabel", "reading and writing NIfTI files"),
    ("dipy", "noise KL, automatic labels, skull stripping"),
    ("scikit-image", "SSIM, HOG, the cohort"),
    ("nilearn", "the MNI152 template"),
    ("lpips", "LPIPS (its linear layers)"),
    ("pytorch-fid", "FID (its InceptionV3)"),
    ("safetensors", "latents (encode, train ldm)"),
)

OK, BROKEN, MISSING, ABSENT, INFO = "OK", "BROKEN", "MISSING", "absent", "info"


@dataclasses.dataclass
class Check:
    """One line of the report: ``status`` of ``name`` (``detail`` says what it is for, or
    why it failed); a failed ``required`` check makes the exit status 1."""

    group: str
    name: str
    status: str
    detail: str
    required: bool

    @property
    def failed(self) -> bool:
        return self.required and self.status in (BROKEN, MISSING)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the installation: packages, torch/torchvision, devices, optional data",
        description=__doc__,
    )
    p.add_argument(
        "--weights-dir",
        help="folder searched for the LPIPS and FID weight files (default: the torch.hub "
        "cache, as for realdeal evaluate)",
    )
    p.add_argument(
        "-o", "--out", help="also write the checks as JSON to this file (for a bug report)"
    )
    p.set_defaults(func=run, preflight=_preflight)


def _preflight(args: argparse.Namespace) -> None:
    if args.out:
        check_writable_file(args.out, "-o/--out")


def run(args: argparse.Namespace) -> int:
    from realdeal import __version__

    checks = [*package_checks(), *device_checks(), *data_checks(args.weights_dir)]
    print(
        f"realdeal {__version__} ({Path(__file__).resolve().parents[1]}), Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    for group in dict.fromkeys(c.group for c in checks):
        print(f"\n{group}")
        for c in (c for c in checks if c.group == group):
            print(f"  {c.status:<8} {c.name:<24} {c.detail}")
    failed = [c.name for c in checks if c.failed]
    print(
        f"\n{len(failed)} required item(s) broken or missing: {', '.join(failed)}"
        if failed
        else "\neverything required works"
    )
    if args.out:
        from realdeal.utils.fs import write_json_atomic

        write_json_atomic(
            args.out,
            {
                "realdeal": __version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "ok": not failed,
                "checks": [dataclasses.asdict(c) for c in checks],
            },
        )
    return 1 if failed else 0


def package_checks() -> list[Check]:
    """Python, torch (computing), torchvision (operators loading) and the other packages."""
    from realdeal.runtime.environment import package_version

    group = "packages (required)"
    py_ok = sys.version_info >= (3, 10)
    out = [
        Check(
            group,
            f"Python {platform.python_version()}",
            OK if py_ok else BROKEN,
            "realdeal needs 3.10 or newer",
            True,
        ),
        _torch_check(group),
        _torchvision_check(group),
    ]
    for dist, used_for in PACKAGES:
        version = package_version(dist)
        out.append(
            Check(group, f"{dist} {version}", OK, used_for, True)
            if version
            else Check(
                group, dist, MISSING, f"not installed (pip install {dist}): {used_for}", True
            )
        )
    return out


def _torch_check(group: str) -> Check:
    try:
        import torch

        assert float(torch.ones(2) @ torch.ones(2)) == 2.0
    except Exception as e:  # ImportError, a broken build: reported, not raised
        return Check(group, "torch", BROKEN, f"does not work ({_first_line(e)})", True)
    build = f", CUDA {torch.version.cuda} build" if torch.version.cuda else ""
    return Check(group, f"torch {torch.__version__}", OK, f"computes{build}", True)


def _torchvision_check(group: str) -> Check:
    from realdeal.runtime.environment import package_version, torchvision_error, torchvision_problem

    needed = "LPIPS and FID (realdeal evaluate)"
    version = package_version("torchvision")
    problem = torchvision_problem()
    if problem is None:
        return Check(group, f"torchvision {version}", OK, f"operators load: {needed}", True)
    return Check(
        group,
        f"torchvision {version}" if version else "torchvision",
        BROKEN if version else MISSING,
        f"{torchvision_error(problem)} — needed for {needed}",
        True,
    )


def device_checks() -> list[Check]:
    """CUDA GPUs and the CPU's bf16 (information: never required)."""
    group = "devices"
    try:
        import torch

        from realdeal.runtime.device import cpu_has_native_bf16
    except Exception as e:  # torch itself is reported above
        return [
            Check(group, "devices", INFO, f"unknown: torch does not load ({_first_line(e)})", False)
        ]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cuda = Check(group, "CUDA", INFO, f"{len(names)} GPU(s): {', '.join(names)}", False)
    else:
        cuda = Check(group, "CUDA", INFO, "no GPU: everything runs on the CPU", False)
    bf16 = (
        "native (AVX512-BF16 or AMX): --precision auto computes in bf16 on the CPU"
        if cpu_has_native_bf16()
        else "not native (emulated, slower): --precision auto computes in fp32 on the CPU"
    )
    return [cuda, Check(group, "CPU bf16", INFO, bf16, False)]


def data_checks(weights_dir: str | None = None) -> list[Check]:
    """Colin27/AAL, the MNI152 template, the deep metrics' weight files, the demo models."""
    group = "data and weights"
    from realdeal.data import cohort

    folder = Path(cohort.MRICRON_DIR)
    colin = [folder / "ch2bet.nii.gz", folder / "aal.nii.gz"]
    out = [
        Check(group, "Colin27 + AAL", OK, f"{folder}: a cohort source, cerebellum labels", False)
        if all(p.is_file() for p in colin)
        else Check(
            group,
            "Colin27 + AAL",
            ABSENT,
            f"not in {folder} (Debian: apt-get install mricron-data): the cohort uses "
            "MNI152 alone, automatic labels have no cerebellum",
            False,
        ),
        _mni152_check(group),
    ]
    from realdeal.metrics.weights import ALEXNET, FID_INCEPTION, checkpoint_dir

    where = checkpoint_dir(weights_dir)
    for weight, name, avoid in (
        (ALEXNET, "LPIPS AlexNet weights", "evaluate paired --no-lpips"),
        (FID_INCEPTION, "FID Inception weights", "evaluate unpaired --features patchstats"),
    ):
        path = where / weight.name
        out.append(
            Check(group, name, OK, f"{path}: {weight.used_for}", False)
            if path.is_file()
            else Check(
                group,
                name,
                ABSENT,
                f"not in {where}: downloaded on first use of {weight.used_for}; offline, "
                f"download {weight.url} there, or use {avoid}",
                False,
            )
        )
    out.append(_demo_check(group))
    return out


def _mni152_check(group: str) -> Check:
    """nilearn's MNI152 T1 template file, found without importing nilearn (slow)."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return Check(group, "MNI152 template", MISSING, "nilearn is not installed", True)
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    found = sorted(data.glob("mni_icbm152_t1_*.nii*")) if data.is_dir() else []
    if found:
        return Check(
            group,
            "MNI152 template",
            OK,
            f"{found[0]}: the cohort, skullstrip, automatic labels",
            True,
        )
    return Check(
        group,
        "MNI152 template",
        MISSING,
        f"not in {data} (reinstall nilearn): the cohort, skullstrip, automatic labels",
        True,
    )


def _demo_check(group: str) -> Check:
    try:
        from realdeal.runtime.checkpoint import DEMO_MODELS, shipped_checkpoint_path
    except Exception as e:  # torch does not load: reported above
        return Check(group, "demo checkpoints", INFO, f"unknown ({_first_line(e)})", False)
    missing = [k for k in DEMO_MODELS if not shipped_checkpoint_path(k).is_file()]
    names = ", ".join(f"demo:{k}" for k in DEMO_MODELS)
    if not missing:
        return Check(
            group,
            "demo checkpoints",
            OK,
            f"{names} (realdeal demo, --checkpoint demo:refiner and the like)",
            False,
        )
    return Check(
        group,
        "demo checkpoints",
        ABSENT,
        f"not in this installation ({', '.join(missing)}): realdeal demo trains its models",
        False,
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
