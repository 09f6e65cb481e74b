"""``realdeal demo --quick`` end to end, its reuse of earlier work, and demo checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from realdeal.cli import main
from realdeal.data.dataset import PreparedDataset
from realdeal.data.io import load_volume
from realdeal.demo import (
    MODEL_KINDS,
    DemoConfig,
    _install_checkpoint,
    _usable_checkpoints,
    export_checkpoints,
    export_models,
    model_records,
)
from realdeal.errors import InputError


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["-q", "demo", "--quick", "--device", "cpu", "-o", str(out)]) == 0
    return out


@pytest.mark.slow
def test_quick_demo_trains_refines_evaluates_and_reports(demo_run):
    run = json.loads((demo_run / "run.json").read_text())
    assert run["format"] == "realdeal-run" and run["command"].startswith("realdeal demo")
    assert "--device cpu" in run["command"]  # --device reaches the recorded command and models
    assert {m["train"]["device"] for m in run["config"]["models"].values()} == {"cpu"}
    assert run["model_sources"] == {k: "trained" for k in MODEL_KINDS}
    for kind, rec in run["model_provenance"].items():
        assert rec["source"] == "trained in this run"
        assert rec["steps"] == run["config"]["models"][kind]["train"]["steps"]
        assert rec["device"].startswith("cpu (") and rec["train_seconds"] > 0
    assert run["created"] <= run["finished"]
    for kind in MODEL_KINDS:
        assert (demo_run / "models" / kind / "checkpoint.pt").is_file()
        assert (demo_run / "models" / kind / "metrics.jsonl").stat().st_size > 0
    ds = PreparedDataset(demo_run / "data")
    test = ds.ids("test")
    assert run["paired"]["subjects"] == test
    for sid in test:  # refined held-out volumes on the prepared grid, not the coarse input
        ref = load_volume(demo_run / "refined" / "test" / f"{sid}.nii.gz")
        coarse = ds.load_derived("reconstructions", sid)
        assert ref.shape == coarse.shape
        assert (ref.affine == coarse.affine).all()
        assert (ref.data != coarse.data).any()
    quick = DemoConfig(quick=True).effective()
    n, n_refined = quick.n_samples, quick.n_refined_samples
    assert n_refined < n  # the quick demo exercises refining a subset of the samples
    raw = sorted(p.name for p in (demo_run / "samples" / "raw").glob("sample_*.nii.gz"))
    assert len(raw) == n
    for sub in ("refined", "raw-subset"):  # the same first samples, refined and raw
        got = sorted(p.name for p in (demo_run / "samples" / sub).glob("sample_*.nii.gz"))
        assert got == raw[:n_refined]
    paired = json.loads((demo_run / "eval" / "paired" / "results.json").read_text())
    assert set(paired["sets"]) >= {"reconstruction", "refined"}
    unpaired = json.loads((demo_run / "eval" / "unpaired" / "results.json").read_text())
    assert set(unpaired["sets"]) >= {"sample", "sample subset", "refined sample"}
    mem = json.loads((demo_run / "eval" / "memorization" / "memorization.json").read_text())
    assert [s["set"] for s in mem["summary"]] == ["training (nearest other)", "held-out", "sample"]
    assert [s["volumes"] for s in mem["summary"]] == [len(ds.ids("train")), len(test), n]
    assert run["memorization"]["eval"] == "eval/memorization"
    assert run["memorization"]["train"] == "data/images"  # what the LDM was trained on
    assert run["held_out"]["real"] == test[:1] and run["unpaired"]["real"] == "eval/sets/real"
    assert sorted(p.name for p in (demo_run / "eval" / "sets" / "real").iterdir()) == [
        f"{s}.nii.gz" for s in run["held_out"]["real"]
    ]
    assert (demo_run / "report" / "figures" / "samples_gallery.png").is_file()
    html = (demo_run / "report" / "report.html").read_text()
    assert "<img" in html and (demo_run / "report" / "report.md").is_file()
    stages = set(run["timings"])
    assert {"cohort", "obtain autoencoder", "refine samples", "evaluate", "report"} <= stages


@pytest.mark.slow
def test_rerun_reuses_everything(demo_run):
    refined = sorted((demo_run / "refined" / "test").glob("*.nii.gz"))
    before = {p: p.stat().st_mtime_ns for p in refined}
    assert main(["-q", "demo", "--quick", "-o", str(demo_run)]) == 0
    run = json.loads((demo_run / "run.json").read_text())
    assert run["model_sources"] == {k: "reused" for k in MODEL_KINDS}
    # Provenance survives reuse: still "trained in this run", not "reused".
    assert {r["source"] for r in run["model_provenance"].values()} == {"trained in this run"}
    md = (demo_run / "report" / "report.md").read_text()
    assert "Where the models came from" in md and "trained in this run" in md
    assert {p: p.stat().st_mtime_ns for p in refined} == before
    assert run["timings"]["obtain refiner"] < 5


@pytest.mark.slow
def test_exported_checkpoints_are_slim_verified_and_matched_to_the_cohort(demo_run, tmp_path):
    dest = export_checkpoints(demo_run, tmp_path / "ckpts")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert set(manifest["sha256"]) == set(MODEL_KINDS)
    from safetensors.torch import load_file

    from realdeal.demo import _sha256

    for kind in MODEL_KINDS:
        slim = torch.load(dest / f"{kind}.pt", weights_only=True)
        full = torch.load(demo_run / "models" / kind / "checkpoint.pt", weights_only=True)
        assert slim["slim"] and slim["optimizer"] == {}
        for k, v in full["ema"].items():
            assert torch.equal(slim["model"][k], v)
        assert (dest / f"{kind}.metrics.jsonl").is_file()
        # the same weights as .safetensors, its sha256 recorded beside the .pt file's
        st = dest / f"{kind}.safetensors"
        assert manifest["sha256_safetensors"][kind] == _sha256(st)
        assert manifest["models"][kind]["sha256_safetensors"] == _sha256(st)
        assert manifest["sha256"][kind] == _sha256(dest / f"{kind}.pt")
        tensors = load_file(st)
        for k, v in full["ema"].items():
            assert torch.equal(tensors[k], v)
        assert json.loads((dest / f"{kind}.model.json").read_text())["kind"] == kind
    files = _usable_checkpoints(DemoConfig(quick=True).effective(), dest)
    assert files == {k: dest / f"{k}.pt" for k in MODEL_KINDS}
    # Another cohort (seed) → not usable: the demo trains instead.
    assert _usable_checkpoints(DemoConfig(quick=True, seed=1).effective(), dest) is None
    # Installed into a run folder they load like trained ones (refiner pipeline).
    from realdeal.pipelines.refiner import RefinerPipeline

    _install_checkpoint(files["refiner"], tmp_path / "run" / "refiner", dest)
    RefinerPipeline.from_checkpoint(tmp_path / "run" / "refiner" / "checkpoint.pt")
    assert (tmp_path / "run" / "refiner" / "metrics.jsonl").is_file()
    # A corrupted file is refused by its checksum.
    with open(dest / "ldm.pt", "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(InputError, match="sha256"):
        _usable_checkpoints(DemoConfig(quick=True).effective(), dest)


@pytest.mark.slow
def test_slim_checkpoint_cannot_resume_training(demo_run, tmp_path):
    dest = export_checkpoints(demo_run, tmp_path / "ckpts")
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copyfile(dest / "autoencoder.pt", ref / "checkpoint.pt")
    shutil.copyfile(demo_run / "models" / "autoencoder" / "config.json", ref / "config.json")
    rc = main(
        ["-q", "train", "autoencoder", "--config", str(ref / "config.json"),
         "--data", str(demo_run / "data"), "-o", str(ref), "--resume"]
    )  # fmt: skip
    assert rc == 2


@pytest.mark.slow
def test_export_from_training_runs_records_how_each_model_was_made(demo_run, tmp_path):
    """Models trained outside a demo run (resumable runs) are exported with their provenance;
    a kind taken from earlier demo checkpoints keeps its file and its record."""
    first = export_checkpoints(demo_run, tmp_path / "first")
    first_records = model_records(json.loads((first / "manifest.json").read_text()))
    run = json.loads((demo_run / "run.json").read_text())
    dest = export_models(
        {
            "autoencoder": first,
            "ldm": demo_run / "models" / "ldm",
            "refiner": demo_run / "models" / "refiner",
        },
        tmp_path / "second",
        cohort=run["config"]["cohort"],
        prepare=run["config"]["prepare"],
        made_by="realdeal train … (test)",
    )
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["version"] == 2
    recs = manifest["models"]
    assert recs["autoencoder"] == first_records["autoencoder"]
    for name in ("autoencoder.pt", "autoencoder.safetensors", "autoencoder.model.json"):
        assert (dest / name).read_bytes() == (first / name).read_bytes()
    for kind in ("ldm", "refiner"):
        train = run["config"]["models"][kind]["train"]
        assert recs[kind]["steps"] == train["steps"]
        assert recs[kind]["batch_size"] == train["batch_size"]
        assert recs[kind]["made_by"] == "realdeal train … (test)"
        assert recs[kind]["device"].startswith("cpu (") and recs[kind]["train_seconds"] > 0
    assert manifest["steps"] == {k: r["steps"] for k, r in recs.items()}
    assert _usable_checkpoints(DemoConfig(quick=True).effective(), dest) is not None
    # A version-1 manifest (the format before per-model records) still reads.
    v1 = {"steps": {k: 5 for k in MODEL_KINDS}, "train_seconds": {"train ldm": 3.0}}
    assert model_records(v1)["ldm"]["train_seconds"] == 3.0


def test_init_record_path_is_relative_below_the_working_directory(tmp_path, monkeypatch):
    """A manifest ships in the package: a starting point below the working directory (the
    repository's shipped folder, say) is recorded relative to it, one elsewhere as given."""
    from realdeal.demo import _init_record

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "src" / "ckpts" / "refiner.pt"
    assert _init_record("refiner", inside, "0" * 64) == {"path": "src/ckpts/refiner.pt"}
    assert _init_record("refiner", Path("src/x.pt"), "0" * 64) == {"path": "src/x.pt"}
    outside = Path("/nonexistent-folder/refiner.pt")
    assert _init_record("refiner", outside, "0" * 64) == {"path": str(outside)}


@pytest.mark.slow
def test_export_of_a_fine_tuned_run_keeps_the_lineage(demo_run, tmp_path):
    """A run started from shipped weights (--init-from) records the model it started from, so
    the manifest and the report tell its whole training, not only the last schedule."""
    from realdeal.report.sections.training import _provenance_table
    from realdeal.runtime.checkpoint import load_checkpoint, save_checkpoint

    first = export_checkpoints(demo_run, tmp_path / "first")
    before = model_records(json.loads((first / "manifest.json").read_text()))["ldm"]
    tuned = tmp_path / "tuned"
    shutil.copytree(demo_run / "models" / "ldm", tuned)
    ckpt = load_checkpoint(tuned / "checkpoint.pt", kind="ldm")
    ckpt.config["train"]["init_from"] = str(first / "ldm.pt")
    save_checkpoint(tuned / "checkpoint.pt", ckpt)
    run = json.loads((demo_run / "run.json").read_text())
    kw = dict(cohort=run["config"]["cohort"], prepare=run["config"]["prepare"], made_by="test")
    dest = export_models({"autoencoder": first, "ldm": tuned, "refiner": first},
                         tmp_path / "second", **kw)  # fmt: skip
    rec = json.loads((dest / "manifest.json").read_text())["models"]["ldm"]
    assert rec["init_from"] == {"path": str(first / "ldm.pt"), **before}
    # the report's provenance table shows both schedules
    ctx = SimpleNamespace(run=SimpleNamespace(section=lambda name: {"ldm": rec} if name == "model_provenance" else None))  # fmt: skip
    table = _provenance_table(ctx, ["ldm"])
    assert f"after {before['steps']} at batch" in table.rows[0][2]
    # exported into the folder it started from, twice: the second export finds the run's own
    # weights there and must not record the run as its own ancestor
    again = tmp_path / "again"
    shutil.copytree(first, again)
    ckpt.config["train"]["init_from"] = str(again / "ldm.pt")
    save_checkpoint(tuned / "checkpoint.pt", ckpt)
    for expected in ({"path": str(again / "ldm.pt"), **before}, {"path": str(again / "ldm.pt")}):
        export_models({"autoencoder": first, "ldm": tuned, "refiner": first}, again, **kw)
        rec = json.loads((again / "manifest.json").read_text())["models"]["ldm"]
        assert rec["init_from"] == expected
    ckpt.config["train"]["init_from"] = str(first / "ldm.pt")
    save_checkpoint(tuned / "checkpoint.pt", ckpt)
    # weights that no longer match their manifest keep only the path
    with open(first / "ldm.pt", "ab") as fh:
        fh.write(b"junk")
    dest = export_models({"autoencoder": first, "ldm": tuned, "refiner": demo_run / "models" / "refiner"},
                         tmp_path / "third", **kw)  # fmt: skip
    rec = json.loads((dest / "manifest.json").read_text())["models"]["ldm"]
    assert rec["init_from"] == {"path": str(first / "ldm.pt")}


def test_held_out_roles_are_disjoint_and_sized():
    """The demo's held-out subjects: 3 paired, 16 real, 16 other ones as the ceiling; a small
    split still gets a real set (the ceiling may then be empty)."""
    from realdeal.demo import HELD_OUT_ROLES, held_out_roles

    ids = [f"sub-{i:03d}" for i in range(64)]
    r = held_out_roles(ids)
    assert [len(r[k]) for k in ("paired", "real", "ceiling")] == [
        HELD_OUT_ROLES[k] for k in ("paired", "real", "ceiling")
    ]
    assert not set(r["real"]) & set(r["ceiling"]) and set(r["paired"]) <= set(r["real"])
    assert held_out_roles(ids[:2]) == {"paired": ids[:2], "real": ids[:1], "ceiling": ids[1:2]}
    assert held_out_roles(ids[:1]) == {"paired": ids[:1], "real": ids[:1], "ceiling": []}
    assert held_out_roles(ids[:3]) == {"paired": ids[:3], "real": ids[:2], "ceiling": ids[2:3]}


@pytest.mark.slow
def test_export_of_a_snapshot_takes_its_step_and_its_part_of_the_log(demo_run, tmp_path):
    """A snapshot (``RUN/snapshots/step-N.pt``) exports with its own step, the run's config and
    the training log up to that step; a model carried over from a manifest of another cohort
    keeps the data it was trained on (``trained_on``)."""
    import dataclasses

    from realdeal.runtime.checkpoint import load_checkpoint, save_checkpoint

    run = json.loads((demo_run / "run.json").read_text())
    ldm_run = tmp_path / "ldm-run"
    shutil.copytree(demo_run / "models" / "ldm", ldm_run)
    snap = ldm_run / "snapshots" / "step-0000004.pt"
    snap.parent.mkdir()
    early = dataclasses.replace(load_checkpoint(ldm_run / "checkpoint.pt").slimmed(), step=4)
    save_checkpoint(snap, early)
    first = export_checkpoints(demo_run, tmp_path / "first")
    other = dict(run["config"]["cohort"], n_subjects=99)
    dest = export_models(
        {"autoencoder": first, "ldm": snap, "refiner": first},
        tmp_path / "out",
        cohort=other,
        prepare=run["config"]["prepare"],
        made_by="snapshot (test)",
    )
    recs = json.loads((dest / "manifest.json").read_text())["models"]
    assert recs["ldm"]["steps"] == 4 and "trained_on" not in recs["ldm"]
    steps = [json.loads(x)["step"] for x in (dest / "ldm.metrics.jsonl").read_text().splitlines()]
    assert steps and max(steps) <= 4
    assert (dest / "ldm.config.json").read_text() == (ldm_run / "config.json").read_text()
    assert recs["autoencoder"]["trained_on"]["cohort"] == run["config"]["cohort"]


def _distil(demo_run: Path, out: Path) -> Path:
    """A one-round student (4 → 2 steps) of the quick demo's refiner; its round file."""
    argv = ["-q", "train", "refiner-student", "--teacher",
            str(demo_run / "models" / "refiner" / "checkpoint.pt"), "--data",
            str(demo_run / "data"), "-o", str(out), "--preset", "cpu-small", "--start-steps", "4",
            "--rounds", "1", "--steps-per-round", "2", "--spacing", "linear", "--batch-size", "2",
            "--precision", "fp32", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return out / "rounds" / "round-1.pt"


@pytest.mark.slow
def test_a_student_ships_beside_its_refiner_and_the_demo_refines_with_it(demo_run, tmp_path,
                                                                         capsys):  # fmt: skip
    """``export_models`` ships a student of the exported refiner (and refuses one of another
    refiner); ``demo --refiner-student`` refines with it at its own steps, and a rerun without
    the flag refines again with the refiner instead of reusing the student's volumes."""
    import dataclasses

    from realdeal.demo import STUDENT
    from realdeal.runtime.checkpoint import load_checkpoint, save_checkpoint

    student = _distil(demo_run, tmp_path / "student")
    run = json.loads((demo_run / "run.json").read_text())
    models = {k: demo_run / "models" / k for k in MODEL_KINDS}
    kw = {"cohort": run["config"]["cohort"], "prepare": run["config"]["prepare"]}
    # a student of another refiner is refused, and nothing is written
    ckpt = load_checkpoint(student, kind="refiner")
    other = dataclasses.replace(ckpt.distilled, teacher_sha256="0" * 64)
    stranger = save_checkpoint(tmp_path / "stranger.pt", dataclasses.replace(ckpt, distilled=other))
    with pytest.raises(InputError, match="distilled from another refiner"):
        export_models(models | {STUDENT: stranger}, tmp_path / "refused", made_by="t", **kw)
    assert not (tmp_path / "refused").exists()

    dest = export_models(models | {STUDENT: student}, tmp_path / "ckpts", made_by="t", **kw)
    manifest = json.loads((dest / "manifest.json").read_text())
    rec = manifest["models"][STUDENT]
    assert rec["distilled"]["steps"] == 2 and rec["distilled"]["sampler"] == "distilled"
    assert rec["steps"] == 2 and manifest["sha256"][STUDENT] == rec["sha256"]
    assert (dest / f"{STUDENT}.safetensors").is_file()
    assert load_checkpoint(dest / f"{STUDENT}.safetensors", kind="refiner").distilled.steps == 2

    without = export_models(models, tmp_path / "without", made_by="t", **kw)
    argv = ["-q", "demo", "--quick", "--device", "cpu", "--checkpoints", str(without), "-o",
            str(tmp_path / "refused-run"), "--refiner-student"]  # fmt: skip
    assert main(argv) != 0  # a folder without a student: one line, no refinement
    assert "holds no refiner-student.pt" in capsys.readouterr().err
    assert not (tmp_path / "refused-run" / "refined").exists()

    out = tmp_path / "run"
    base = ["-q", "demo", "--quick", "--device", "cpu", "--checkpoints", str(dest), "-o", str(out)]
    assert main([*base, "--refiner-student"]) == 0
    used = json.loads((out / "run.json").read_text())
    assert used["refiner"] == f"models/{STUDENT}" and STUDENT in used["models"]
    assert used["model_sources"][STUDENT] == "demo checkpoint (2-step student)"
    assert used["model_provenance"][STUDENT]["distilled"]["steps"] == 2
    sampling = used["config"]["refine_sampling"]
    assert (sampling["sampler"], sampling["steps"]) == ("distilled", 2)
    refine_json = json.loads((out / "refined" / "test" / "refine.json").read_text())
    assert refine_json["checkpoint"].endswith(f"{STUDENT}/checkpoint.pt")
    sid = used["paired"]["subjects"][0]
    by_student = load_volume(out / "refined" / "test" / f"{sid}.nii.gz").data

    assert main(base) == 0  # the same folder, the refiner: refined again, not reused
    again = json.loads((out / "run.json").read_text())
    assert again["refiner"] == "models/refiner" and again["config"]["refine_sampling"]["steps"] != 2
    by_teacher = load_volume(out / "refined" / "test" / f"{sid}.nii.gz").data
    assert not (by_teacher == by_student).all()


def test_refiner_student_needs_shipped_checkpoints():
    from realdeal.errors import ConfigError

    for kw, flag in (({"retrain": True}, "--retrain"), ({"checkpoints": None}, "none"),
                     ({"quick": True}, "--quick")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"--refiner-student.*{flag}"):
            DemoConfig(refiner_student=True, **kw)
    DemoConfig(refiner_student=True, quick=True, checkpoints="some/folder")  # a folder may hold one


def test_a_data_record_from_before_new_cohort_fields_is_the_same_cohort():
    """A manifest written before a cohort field existed names the same cohort (carried-over
    models get no ``trained_on`` for it, and the demo still uses them)."""
    from realdeal.config import to_dict
    from realdeal.data.cohort import CohortConfig
    from realdeal.data.dataset import PrepareConfig
    from realdeal.demo import _data_record

    now = {"cohort": to_dict(CohortConfig(n_subjects=16)), "prepare": to_dict(PrepareConfig())}
    old = json.loads(json.dumps(now))
    del old["cohort"]["ventricle_scale"], old["cohort"]["coarse_elastic_spacing_mm"]
    assert _data_record(old) == _data_record(now)
    old["cohort"]["n_subjects"] = 15
    assert _data_record(old) != _data_record(now)
