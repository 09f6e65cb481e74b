"""Grow the population's training split with new subjects, as latents only: ``pool/``.

Run from the repository root after the population exists (``cohort/``, ``data/`` and the
training latents in ``latents/``, see README.md)::

    python training-runs/ldm-population/grow_pool.py --new 2048

Subjects 320, 321, … of the population's own cohort config and seed (``CohortConfig.
first_subject``: the same distribution as the 320, none of them a held-out subject) are built
``--chunk`` at a time, prepared in the population's intensity mapping (``--intensity-from``),
encoded with the shipped demo autoencoder, and only their latents are kept
(``pool/latents/<id>.safetensors``, 258 KB each; the images are deleted chunk by chunk). A chunk
whose latents are all there is skipped, so an interrupted run continues where it stopped.
A subject whose brain that mapping would clip by more than 10 % at either end (what ``prepare
--intensity-from`` refuses; the brightest draws of the cohort's gain and contrast, 3 of the
2,048) is left out and listed in ``pool/records.jsonl`` with ``"excluded"``.

At the end ``pool/data/`` is a recorded dataset without images: the population's
``dataset.json`` with the new subjects added to the training split (the held-out split is
unchanged), which ``realdeal train ldm --data pool/data --latents pool/latents`` trains on.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "training-runs" / "ldm-population"
COHORT, DATA, LATENTS = HERE / "cohort", HERE / "data", HERE / "latents"
AE = ROOT / "src" / "realdeal" / "demo_checkpoints" / "autoencoder.pt"


def _realdeal(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "realdeal", "-q", *args], check=True)


def _excluded(cohort: Path, sids: list[str]) -> list[str]:
    """The subjects whose brain the population's intensity mapping does not fit (removed from
    ``cohort``): what ``prepare --intensity-from`` would refuse, checked the same way."""
    from realdeal.data.dataset import PrepareConfig, foreground_mask
    from realdeal.data.intensity import load_intensity_mapping, stored_mapping_fits
    from realdeal.data.io import load_volume

    mapping, _ = load_intensity_mapping(DATA)
    threshold = PrepareConfig().foreground_threshold
    out = []
    for sid in sids:
        img, lab = cohort / f"{sid}_T1w.nii.gz", cohort / f"{sid}_dseg.nii.gz"
        x = load_volume(img).data
        mask = foreground_mask(x, load_volume(lab, kind="label").data, threshold)
        if not stored_mapping_fits(mapping, x, mask):
            img.unlink()
            lab.unlink()
            out.append(sid)
    return out


def _chunk(pool: Path, first: int, n: int, workers: int) -> list[dict]:
    """Build, prepare and encode subjects ``first … first + n − 1``; their dataset records
    (those left out: ``{"id": …, "excluded": why}``)."""
    from realdeal.config import from_dict, to_dict
    from realdeal.data.cohort import CohortConfig, build_cohort

    work = pool / "work"
    base = from_dict(CohortConfig, json.loads((COHORT / "cohort.json").read_text())["config"])
    cfg = dataclasses.replace(base, n_subjects=n, first_subject=first, workers=workers)
    built = work / "cohort" / "cohort.json"
    same = {**to_dict(cfg), "workers": None}
    if built.is_file() and {**json.loads(built.read_text())["config"], "workers": None} == same:
        subjects = json.loads(built.read_text())["subjects"]  # built before an interruption
        for d in ("data", "latents"):
            shutil.rmtree(work / d, ignore_errors=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
        subjects = build_cohort(work / "cohort", cfg).subjects
    excluded = _excluded(work / "cohort", [r["id"] for r in subjects])
    split = work / "split.csv"
    with split.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "split"])
        w.writerows([r["id"], "train"] for r in subjects if r["id"] not in excluded)
    _realdeal("prepare", str(work / "cohort" / "*_T1w.nii.gz"), "-o", str(work / "data"),
              "--labels", "{dir}/{id}_dseg.nii.gz", "--shape", "96", "112", "96",
              "--window", "32", "--intensity-from", str(DATA), "--split", str(split))  # fmt: skip
    _realdeal("encode", "--autoencoder", str(AE), "--data", str(work / "data"),
              "-o", str(work / "latents"), "--split", "train", "--device", "cpu")  # fmt: skip
    records = json.loads((work / "data" / "dataset.json").read_text())["subjects"]
    for r in records:
        shutil.move(work / "latents" / f"{r['id']}.safetensors", pool / "latents")
    shutil.rmtree(work)
    why = "the population's intensity mapping clips more than 10 % of its brain"
    return records + [{"id": sid, "excluded": why} for sid in excluded]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new", type=int, default=2048, help="new training subjects")
    p.add_argument("--chunk", type=int, default=256, help="subjects built at a time")
    p.add_argument("--workers", type=int, default=1, help="processes building the cohort")
    p.add_argument("--pool", type=Path, default=HERE / "pool")
    a = p.parse_args()

    from realdeal.data.dataset import PreparedDataset, _subjects_csv

    meta = json.loads((DATA / "dataset.json").read_text())
    start = len(meta["subjects"])
    pool = a.pool
    (pool / "latents").mkdir(parents=True, exist_ok=True)
    records_file = pool / "records.jsonl"
    done = {}
    if records_file.is_file():
        for line in records_file.read_text().splitlines():
            r = json.loads(line)
            done[r["id"]] = r
    # the population's own training latents (realdeal encode, see prepare_device.py)
    for sid in PreparedDataset(DATA).ids("train"):
        if not (pool / "latents" / f"{sid}.safetensors").is_file():
            shutil.copy(LATENTS / f"{sid}.safetensors", pool / "latents")
    t0 = time.perf_counter()
    for first in range(start, start + a.new, a.chunk):
        n = min(a.chunk, start + a.new - first)
        ids = [f"sub-{i:03d}" for i in range(first, first + n)]
        if all(
            i in done
            and ("excluded" in done[i] or (pool / "latents" / f"{i}.safetensors").is_file())
            for i in ids
        ):
            continue
        records = _chunk(pool, first, n, a.workers)
        with records_file.open("a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
                done[r["id"]] = r
        print(f"subjects {ids[0]}–{ids[-1]} encoded ({time.perf_counter() - t0:.0f} s)",
              flush=True)  # fmt: skip

    every = [done[f"sub-{i:03d}"] for i in range(start, start + a.new)]
    new = [r for r in every if "excluded" not in r]
    if len(new) < len(every):
        print(f"{len(every) - len(new)} of {len(every)} new subjects left out (records.jsonl)")
    out = pool / "data"
    out.mkdir(exist_ok=True)
    meta["subjects"] = meta["subjects"] + new
    meta["split_source"] += f"; {len(new)} training subjects added (grow_pool.py)"
    tmp = out / "dataset.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out / "dataset.json")
    ds = PreparedDataset(out)
    # the subject table for people, in prepare's own format
    (out / "subjects.csv.tmp").write_text(_subjects_csv(ds.subjects))
    (out / "subjects.csv.tmp").replace(out / "subjects.csv")
    print(f"{out}: {len(ds.ids('train'))} training, {len(ds.ids('test'))} held-out subjects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
