"""Does an LDM learn the population or its training set? Curves against training compute.

For each LDM checkpoint (snapshots of one run, in training order), ``--samples`` volumes
(the demo's sampler) are measured two ways:

* **memorisation** (:mod:`realdeal.metrics.memorization`): each sample's Pearson correlation
  with its nearest training subject, against the held-out subjects' reconstructions (new heads
  that passed through the same autoencoder). Reported against the training *originals* (what
  ``realdeal demo`` uses: no training reconstructions needed) and, when the dataset has them,
  against the training *reconstructions* too, so the two references can be compared;
* **realism against unseen subjects**: coverage, density and FD (the demo's weight-free
  patch-statistics features, k = 10) of the samples against ``--real`` held-out originals,
  beside the **ceiling**: the autoencoder's reconstructions of ``--real`` *other* held-out
  subjects against the same real set (same counts). Raw samples are decoded by that
  autoencoder, so its reconstructions of unseen heads are the best they can do.

Writes JSON (``--out``), a Markdown table (same name, ``.md``) and a PNG of the curves (``.png``)::

    python benchmarks/ldm_generalization.py --data training-runs/ldm-population/data \\
        --ldm training-runs/ldm-population/ldm/snapshots/step-*.pt \\
        --out benchmarks/results/ldm_generalization.json

The held-out subjects' reconstructions must exist (``realdeal reconstruct --data DATA --split
test``); the training reconstructions are optional.

An LDM trained on more subjects than ``--data`` holds images of (``realdeal train ldm --latents``
on a grown training split) is measured for memorisation against **all** its training subjects
with ``--train-latents DIR``: each ``DIR/<id>.safetensors`` is decoded once by the autoencoder
the LDM carries into ``--decoded`` (cached; reconstructions of the training subjects), and those
are the only memorisation reference (``reconstructions``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _axis_means(result, set_name: str, metric: str) -> list[float]:
    rows = [r for r in result.summary if r["set"] == set_name and r["metric"] == metric]
    rows.sort(key=lambda r: str(r.get("axis")))
    return [round(float(r["mean"]), 4) for r in rows]


def _sets(data: Path, n_real: int):
    """(prepared dataset, real held-out ids, ceiling ids): two disjoint groups of test subjects."""
    from realdeal.data.dataset import PreparedDataset

    ds = PreparedDataset(data)
    test = ds.ids("test")
    if len(test) < 2 * n_real:
        sys.exit(f"{data}: {len(test)} held-out subjects, {2 * n_real} needed (--real {n_real})")
    missing = [s for s in test[: 2 * n_real] if not ds.has_derived("reconstructions", s)]
    if missing:
        sys.exit(f"{data}: no reconstructions of {missing[0]} (realdeal reconstruct --split test)")
    return ds, test[:n_real], test[n_real : 2 * n_real]


def decode_latents(latents: Path, out: Path, reference, ldm: Path) -> list[Path]:
    """``out/<id>.nii``: every ``latents/<id>.safetensors`` decoded by the autoencoder that
    ``ldm`` carries (the training subjects' reconstructions), written once and reused
    (uncompressed: every checkpoint's memorisation reads them all again)."""
    import torch

    from realdeal.models.loading import load_ldm
    from realdeal.pipelines.autoencoder import load_latent

    files = sorted(latents.glob("*.safetensors"))
    if not files:
        sys.exit(f"{latents}: no <id>.safetensors latents")
    out.mkdir(parents=True, exist_ok=True)
    todo = [f for f in files if not (out / f"{f.stem}.nii").is_file()]
    if todo:
        ae = load_ldm(ldm, "cpu", True).autoencoder
        t0 = time.perf_counter()
        with torch.no_grad():
            for i, f in enumerate(todo):
                img = ae.decode(load_latent(f)[0].float()[None])[0, 0].numpy()
                reference.with_data(img).save(out / f"{f.stem}.nii")
                if (i + 1) % 256 == 0:
                    print(f"decoded {i + 1}/{len(todo)} ({time.perf_counter() - t0:.0f} s)")
    return [out / f"{f.stem}.nii" for f in files]


def memorisation(ds, sample_dir: Path, held_out: list[str], train_refs=None) -> dict:
    """Copies and nearest-training similarity against training originals (and reconstructions),
    or against ``train_refs`` alone (reconstructions of every training subject)."""
    from realdeal.metrics.memorization import evaluate_memorization
    from realdeal.metrics.subjects import find_set

    root = ds.root
    recon = root / "reconstructions"
    train = ds.ids("train")
    if train_refs is not None:
        refs = {"reconstructions": train_refs}
    else:
        refs = {"originals": [root / "images" / f"{s}.nii.gz" for s in train]}
        if all(ds.has_derived("reconstructions", s) for s in train):
            refs["reconstructions"] = [recon / f"{s}.nii.gz" for s in train]
    out = {}
    for name, files in refs.items():
        res = evaluate_memorization(
            find_set("train", files),
            [find_set("sample", sample_dir)],
            find_set("held-out", [recon / f"{s}.nii.gz" for s in held_out]),
        )
        by = {s["set"]: s for s in res.summary}
        out[name] = {
            "copies": by["sample"]["copies"],
            "sample_median": round(by["sample"]["median"], 4),
            "sample_max": round(by["sample"]["max"], 4),
            "held_out_median": round(by["held-out"]["median"], 4),
            "threshold": round(res.threshold, 4),
            "distinct_nearest": len({r["nearest"] for r in res.records if r["set"] == "sample"}),
        }
    return out


def realism(ds, sample_dir: Path, real: list[str], ceiling: list[str], seed: int) -> dict:
    """Coverage/density/FD (k = 10, patch statistics) of samples and ceiling vs held-out reals."""
    from realdeal.metrics import suite
    from realdeal.metrics.subjects import find_set

    root = ds.root
    cfg = suite.UnpairedConfig(features="patchstats", seed=seed, n_bootstrap=0, n_patches_2d=250)
    sets = [find_set("sample", sample_dir)]
    if ceiling:
        recon = root / "reconstructions"
        sets.append(find_set("ceiling", [recon / f"{s}.nii.gz" for s in ceiling]))
    res = suite.evaluate_unpaired(
        find_set("real", [root / "images" / f"{s}.nii.gz" for s in real]), sets, cfg
    )
    out = {}
    for s in [x.name for x in sets]:
        out[s] = {
            m: _axis_means(res, s, f"{m}_k10_patchstats") for m in ("coverage", "density")
        } | {"fd": _axis_means(res, s, "fd_patchstats")}
    return out


def _step(ckpt: Path) -> int:
    """The training step of an LDM checkpoint."""
    from realdeal.runtime.checkpoint import load_checkpoint

    return load_checkpoint(ckpt, kind="ldm").step


def row(
    ckpt: Path, ds, real, ceiling, n: int, seed: int, with_ceiling: bool, train_refs=None
) -> dict:
    from realdeal.diffusion.registry import DEFAULT_SAMPLING
    from realdeal.pipelines.ldm import LatentDiffusionPipeline, save_samples

    pipe = LatentDiffusionPipeline.from_checkpoint(ckpt)
    sampling = DEFAULT_SAMPLING["ldm"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        save_samples(
            pipe, n, Path(tmp), ds.load_image(ds.ids()[0]), {"checkpoint": str(ckpt)},
            sampler=sampling.sampler, steps=sampling.steps, seed=seed, batch_size=8,
        )  # fmt: skip
        sample_s = time.perf_counter() - t0
        r = {
            "checkpoint": str(ckpt),
            "step": pipe.checkpoint.step,
            "batch": pipe.checkpoint.config.get("train", {}).get("batch_size"),
            "sample_seconds": round(sample_s, 1),
            "memorisation": memorisation(ds, Path(tmp), real + ceiling, train_refs),
            "realism": realism(ds, Path(tmp), real, ceiling if with_ceiling else [], seed),
        }
    r["samples_seen"] = r["step"] * (r["batch"] or 1)
    return r


def _reference(rows: list[dict]) -> str:
    """The memorisation reference of the table and curves: the training originals when every
    row has them, else the training reconstructions (``--train-latents``)."""
    return "originals" if all("originals" in r["memorisation"] for r in rows) else "reconstructions"


def markdown(rows: list[dict], ceiling: dict | None) -> str:
    ref = _reference(rows)
    lines = [
        f"| step | samples seen | copies (vs training {ref}) | sample median sim. "
        "| held-out median sim. | copies (vs recons) | coverage k=10 d0/d1/d2 "
        "| ÷ ceiling (worst axis) | density | FD |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mo = r["memorisation"][ref]
        mr = r["memorisation"].get("reconstructions")
        cov = r["realism"]["sample"]["coverage"]
        ratio = (
            f"{min(c / m for c, m in zip(cov, ceiling['coverage'], strict=True)):.2f}"
            if ceiling
            else "–"
        )
        lines.append(
            f"| {r['step']} | {r['samples_seen']:,} | {mo['copies']} | {mo['sample_median']:.3f} "
            f"| {mo['held_out_median']:.3f} | {mr['copies'] if mr else '–'} "
            f"| {'/'.join(f'{c:.2f}' for c in cov)} | {ratio} "
            f"| {'/'.join(f'{c:.2f}' for c in r['realism']['sample']['density'])} "
            f"| {'/'.join(f'{c:.2f}' for c in r['realism']['sample']['fd'])} |"
        )
    if ceiling:
        lines.append(
            f"| ceiling | reconstructions of unseen subjects | – | – | – | – "
            f"| {'/'.join(f'{c:.2f}' for c in ceiling['coverage'])} | 1.00 "
            f"| {'/'.join(f'{c:.2f}' for c in ceiling['density'])} "
            f"| {'/'.join(f'{c:.2f}' for c in ceiling['fd'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], ceiling: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["samples_seen"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    mo = [r["memorisation"][_reference(rows)] for r in rows]
    ax[0].plot(x, [m["sample_median"] for m in mo], "o-", label="samples: median")
    ax[0].plot(x, [m["sample_max"] for m in mo], "v:", label="samples: max")
    ax[0].plot(x, [m["held_out_median"] for m in mo], "s--", label="held-out subjects: median")
    ax[0].plot(x, [m["threshold"] for m in mo], "k-", lw=0.8, label="copy threshold")
    ax[0].set(xlabel="training samples seen", ylabel="nearest-training correlation",
              title="memorisation (lower = newer brains)")  # fmt: skip
    ax[0].legend(fontsize=8)
    for i, name in enumerate(("d0", "d1", "d2")):
        ax[1].plot(x, [r["realism"]["sample"]["coverage"][i] for r in rows], "o-", label=name)
        if ceiling:
            ax[1].axhline(ceiling["coverage"][i], color=f"C{i}", ls="--", lw=0.8)
            ax[1].axhline(0.8 * ceiling["coverage"][i], color=f"C{i}", ls=":", lw=0.8)
    ax[1].set(xlabel="training samples seen", ylabel="coverage k = 10 vs held-out",
              title="realism (dashed: ceiling, dotted: 0.8 × ceiling)")  # fmt: skip
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the LDM's prepared dataset")
    p.add_argument("--ldm", type=Path, nargs="+", required=True, help="LDM checkpoints")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--real", type=int, default=16, help="held-out subjects in the real set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-latents",
        type=Path,
        help="memorisation against these decoded "
        "training latents (all the LDM's training subjects) instead of --data's",
    )
    p.add_argument(
        "--decoded",
        type=Path,
        help="cache of the decoded --train-latents (default: beside them, <DIR>-decoded)",
    )
    p.add_argument("--out", type=Path, required=True, help="JSON file (table: .md, curves: .png)")
    a = p.parse_args(argv)
    ds, real, ceiling = _sets(a.data, a.real)
    train_refs = None
    if a.train_latents is not None:
        decoded = a.decoded or a.train_latents.with_name(a.train_latents.name + "-decoded")
        ref = ds.load_image(ds.ids()[0])
        train_refs = decode_latents(a.train_latents, decoded, ref, a.ldm[0])
    old = json.loads(a.out.read_text()) if a.out.is_file() else {}
    key = (str(a.data), a.samples, real, str(a.train_latents) if a.train_latents else None)
    if (old.get("data"), old.get("samples"), old.get("real"), old.get("train_latents")) != key:
        old = {}  # other data or counts: nothing of the earlier file is comparable
    done = {r["checkpoint"]: r for r in old.get("rows", [])}
    ceiling_row = old.get("ceiling")
    # rows of earlier checkpoints not given again stay (their snapshot files may be gone);
    # a checkpoint of the same step replaces its row
    steps = {ckpt: _step(ckpt) for ckpt in a.ldm}
    rows = [r for r in old.get("rows", []) if r["step"] not in steps.values()]
    for ckpt in a.ldm:
        if str(ckpt) in done and done[str(ckpt)]["step"] == steps[ckpt]:
            rows.append(done[str(ckpt)])
            continue
        r = row(ckpt, ds, real, ceiling, a.samples, a.seed, ceiling_row is None, train_refs)
        if ceiling_row is None:
            ceiling_row = r["realism"].pop("ceiling")
        else:
            r["realism"].pop("ceiling", None)
        rows.append(r)
        print(json.dumps(r), flush=True)
        result = {"data": str(a.data), "samples": a.samples, "real": real,
                  "train_latents": str(a.train_latents) if a.train_latents else None,
                  "ceiling_subjects": ceiling, "ceiling": ceiling_row, "rows": rows}  # fmt: skip
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))
    rows.sort(key=lambda r: r["samples_seen"])
    table = markdown(rows, ceiling_row)
    a.out.with_suffix(".md").write_text(table)
    plot(rows, ceiling_row, a.out.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
