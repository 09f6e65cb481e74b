"""``realdeal export-demo-checkpoints``: slim demo checkpoints from resumable training runs.

How ``src/realdeal/demo_checkpoints`` is made when its models are trained outside a demo run
(``training-runs/demo/continue.sh``): each of ``--autoencoder``, ``--ldm`` and ``--refiner``
is a ``realdeal train`` run folder (its EMA weights are exported) or an earlier demo-checkpoint
folder (that model is carried over with its record); ``--refiner-student`` adds the
refiner's few-step student (``demo:refiner-student``). ``--data`` is the prepared dataset the
runs trained on; its preparation config and its cohort's config (``--cohort``, default the
``cohort`` folder beside it) go into the manifest, so ``realdeal demo`` uses the checkpoints
only on that very cohort. The manifest records, per model, steps, batch, device, training
time, how it was made and the commit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from realdeal.commands._checks import check_dataset, check_writable_dir, parse_cohort_record


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-demo-checkpoints",
        help="write training runs as the slim demo checkpoints `realdeal demo` ships with",
        description=__doc__,
    )
    for kind in ("autoencoder", "ldm", "refiner"):
        p.add_argument(
            f"--{kind}", required=True, metavar="DIR", help="training run or demo-checkpoint folder"
        )
    p.add_argument(
        "--refiner-student",
        metavar="DIR|FILE",
        help="optional: a student of that refiner (realdeal train refiner-student run folder, "
        "one of its rounds/round-K.pt, or a demo-checkpoint folder), shipped as "
        "demo:refiner-student",
    )
    p.add_argument("--data", required=True, help="the prepared dataset the runs trained on")
    p.add_argument("--cohort", help="its cohort folder (default: DATA/../cohort)")
    p.add_argument("--made-by", required=True, help="how the runs were made (recorded)")
    p.add_argument(
        "--trained-on", help="device, where the training logs do not record it (e.g. 'cpu')"
    )
    p.add_argument("-o", "--out", required=True, help="output folder (replaced atomically)")
    p.set_defaults(func=run, preflight=_preflight)


def _cohort_folder(args: argparse.Namespace) -> Path:
    return Path(args.cohort or Path(args.data).resolve().parent / "cohort")


def _preflight(args: argparse.Namespace) -> None:
    check_writable_dir(args.out, "-o/--out")
    check_dataset(args.data, "--data")
    parse_cohort_record(_cohort_folder(args))


def run(args: argparse.Namespace) -> int:
    from realdeal.data.dataset import PreparedDataset
    from realdeal.demo import export_models

    ds = PreparedDataset(args.data)
    cohort = parse_cohort_record(_cohort_folder(args))
    prepare = ds.meta["config"]  # as written (PreparedDataset checked it)
    models = {k: Path(getattr(args, k)) for k in ("autoencoder", "ldm", "refiner")}
    if args.refiner_student:
        models["refiner-student"] = Path(args.refiner_student)
    dest = export_models(
        models,
        args.out,
        cohort=cohort,
        prepare=prepare,
        made_by=args.made_by,
        trained_on=args.trained_on,
    )
    print(f"demo checkpoints written to {dest}")
    return 0
