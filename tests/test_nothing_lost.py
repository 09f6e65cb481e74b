"""Nothing lost: a user's files are never deleted or replaced, a refused command changes nothing
on disk, one process writes into a folder at a time, caches follow their inputs, and a torn
log line or a leftover temporary file does not break the next command."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from realdeal.cli import main
from realdeal.errors import ConfigError, InputError
from realdeal.utils.fs import atomic_dir, folder_lock, sha256_file

from synthetic import phantom, save_nifti

AE = ["--preset", "cpu-small", "--channels", "4", "8", "8", "--bottleneck", "4",
      "--crop", "16", "16", "16"]  # fmt: skip
ENGINE = ["--steps", "4", "--batch-size", "2", "--log-every", "1", "--checkpoint-every", "2",
          "--precision", "fp32", "--device", "cpu"]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (hidden ones too): its sha256 and modification time."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


@contextlib.contextmanager
def _held_by_another_process(folder: Path):
    """``folder``'s realdeal lock held by another process; yields that process's pid."""
    code = (
        "import sys, time\n"
        "from realdeal.utils.fs import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from synthetic import prepared_phantoms

    return prepared_phantoms(tmp_path_factory.mktemp("ds"), 4, 0.25)


@pytest.fixture
def dataset(prepared, tmp_path):
    """A copy of the prepared dataset the test may change."""
    from realdeal.data.dataset import PreparedDataset

    shutil.copytree(prepared, tmp_path / "ds")
    return PreparedDataset(tmp_path / "ds")


@pytest.fixture(scope="module")
def ae_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae") / "run"
    assert main(["-q", "train", "autoencoder", "--data", str(prepared), "-o", str(out),
                 *AE, *ENGINE]) == 0  # fmt: skip
    return out


@pytest.fixture
def run(ae_run, tmp_path):
    """A copy of a finished 4-step autoencoder run (checkpoint, config, metrics)."""
    return Path(shutil.copytree(ae_run, tmp_path / "run"))


def _ckpt(run: Path) -> tuple[int, dict]:
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    return ck["step"], json.loads(ck["config"])


# --------------------------------------------------------------------------- 1. replacing folders


def test_cohort_overwrite_refuses_a_folder_that_is_not_a_cohort(tmp_path, capsys):
    from realdeal.data.cohort import CohortConfig, build_cohort

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = _snapshot(mine)
    with pytest.raises(InputError, match="not a realdeal cohort"):
        build_cohort(mine, CohortConfig(n_subjects=1, spacing=4.0), overwrite=True)
    assert _snapshot(mine) == before
    assert main(["cohort", str(mine), "--overwrite", "-n", "1", "--spacing", "4"]) == 2
    assert str(mine) in _one_line_error(capsys)
    assert _snapshot(mine) == before


def test_cohort_overwrite_refuses_a_cohort_holding_other_files(tmp_path):
    """A cohort folder the user added files to is not replaced (they would be deleted)."""
    from realdeal.data.cohort import CohortConfig, build_cohort

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "cohort.json").write_text(json.dumps({"format": "realdeal-cohort"}))
    (cohort / "notes.txt").write_text("mine")
    before = _snapshot(cohort)
    with pytest.raises(InputError, match="'notes.txt'.*did not write"):
        build_cohort(cohort, CohortConfig(n_subjects=1, spacing=4.0), overwrite=True)
    assert _snapshot(cohort) == before


def test_prepare_overwrite_refuses_a_dataset_holding_other_files(prepared, tmp_path, capsys):
    """A prepared dataset the user added files to is not replaced (they would be deleted); its
    own outputs and the reconstructions realdeal adds do not stop --overwrite."""
    ds = tmp_path / "prepared"
    shutil.copytree(prepared, ds)
    (ds / "reconstructions").mkdir(exist_ok=True)
    (ds / "my-segmentations").mkdir()
    (ds / "my-segmentations" / "sub.nii.gz").write_bytes(b"mine")
    before = _snapshot(ds)
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        save_nifti(raw / f"s{i}_T1w.nii.gz", phantom(seed=i)[0])
    argv = ["-q", "prepare", str(raw / "*_T1w.nii.gz"), "-o", str(ds), "--shape", "24", "32",
            "24", "--window", "8", "--overwrite"]  # fmt: skip
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert str(ds) in err and "'my-segmentations'" in err and "did not write" in err, err
    assert _snapshot(ds) == before
    shutil.rmtree(ds / "my-segmentations")
    assert main(argv) == 0
    assert sorted(p.name for p in ds.iterdir()) == [
        "dataset.json", "fractions", "images", "masks", "subjects.csv"
    ]  # fmt: skip


def test_overwrite_without_a_marker_replaces_no_folder_and_no_file(tmp_path):
    """``export_models`` (demo.py) calls ``atomic_dir(dest, overwrite=True)`` without saying
    what it may replace: that now refuses instead of deleting whatever ``dest`` is."""
    from realdeal.demo import export_models

    folder, file = tmp_path / "folder", tmp_path / "file"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2\n")
    file.write_text("keep")
    for dest in (folder, file):
        with pytest.raises(InputError, match="refusing to replace"):
            with atomic_dir(dest, overwrite=True) as tmp:
                (tmp / "new").write_text("x")
        with pytest.raises(InputError, match="refusing to replace"):
            export_models({}, dest, cohort={}, prepare={}, made_by="test")
    assert (folder / "data.csv").read_text() == "1,2\n" and file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]  # no temporaries


def test_overwrite_replaces_an_output_of_its_kind_atomically(tmp_path, monkeypatch):
    marker = ("out.json", "realdeal-test")
    dest = tmp_path / "dest"
    with atomic_dir(dest, marker=marker) as tmp:
        (tmp / "out.json").write_text(json.dumps({"format": "realdeal-test"}))
        (tmp / "v1").write_text("1")
    with pytest.raises(InputError, match="not a realdeal output of this kind"):
        with atomic_dir(dest, overwrite=True, marker=("out.json", "realdeal-other")):
            pass
    # the second rename fails: the old folder is put back, nothing else is left
    real_replace = os.replace

    def failing(src, dst):
        if Path(src).name.endswith(".tmp") and Path(dst) == dest:
            raise OSError("disk trouble")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk trouble"):
        with atomic_dir(dest, overwrite=True, marker=marker) as tmp:
            (tmp / "out.json").write_text(json.dumps({"format": "realdeal-test"}))
    monkeypatch.setattr(os, "replace", real_replace)
    assert (dest / "v1").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    with atomic_dir(dest, overwrite=True, marker=marker) as tmp:
        (tmp / "out.json").write_text(json.dumps({"format": "realdeal-test"}))
        (tmp / "v2").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["out.json", "v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


# --------------------------------------------------------------------------- 2. train: decide first


def test_a_refused_train_run_writes_nothing(prepared, run, capsys):
    lr = _ckpt(run)[1]["train"]["lr"]
    before = _snapshot(run)
    argv = ["-q", "train", "autoencoder", "--data", str(prepared), "-o", str(run)]
    assert main([*argv, *AE, *ENGINE, "--lr", "0.5"]) == 2
    assert "already holds a checkpoint" in _one_line_error(capsys)
    assert _snapshot(run) == before  # config.json not rewritten with the refused flags
    # the plain --resume afterwards continues with the run's own configuration
    assert main([*argv, "--resume", "--steps", "6"]) == 0
    step, cfg = _ckpt(run)
    assert step == 6 and cfg["train"]["lr"] == lr and cfg["train"]["steps"] == 6
    assert json.loads((run / "config.json").read_text())["config"]["train"]["lr"] == lr


@pytest.mark.slow
def test_resume_refuses_flags_that_change_the_network_or_the_training(prepared, run, capsys):
    argv = ["-q", "train", "autoencoder", "--data", str(prepared), "-o", str(run), "--resume"]
    before = _snapshot(run)
    for flags, field in ((["--lr", "0.5"], "train.lr 0.01 → 0.5"),
                         (["--crop", "8", "8", "8"], "crop [16, 16, 16] → [8, 8, 8]"),
                         (["--bottleneck", "8"], "model.bottleneck 4 → 8"),
                         (["--seed", "3"], "train.seed 0 → 3")):  # fmt: skip
        assert main([*argv, "--steps", "6", *flags]) == 2, flags
        err = _one_line_error(capsys)
        assert "--resume cannot change" in err and field in err, err
        assert "steps, log_every, checkpoint_every" in err  # says what may change
        assert _snapshot(run) == before
    # what may change on resume does
    assert main([*argv, "--steps", "5", "--log-every", "5", "--checkpoint-every", "5"]) == 0
    step, cfg = _ckpt(run)
    assert step == 5 and cfg["train"]["log_every"] == 5


def test_resume_takes_the_checkpoints_config_over_a_damaged_config_json(prepared, run, capsys):
    """An earlier realdeal wrote a refused run's flags into config.json; the plain --resume
    must not train with them (lr 0.5 → NaN)."""
    lr = _ckpt(run)[1]["train"]["lr"]
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["train"]["lr"] = 0.5
    saved["config"]["train"]["steps"] = 6
    (run / "config.json").write_text(json.dumps(saved))
    argv = ["-q", "train", "autoencoder", "--data", str(prepared), "-o", str(run), "--resume"]
    assert main(argv) == 0
    step, cfg = _ckpt(run)
    assert step == 6 and cfg["train"]["lr"] == lr  # steps from config.json, lr from the run
    assert "differs from the checkpoint's config in train.lr" in capsys.readouterr().err


def test_train_refuses_a_folder_that_is_not_a_run_and_resume_with_other_data(
    prepared, run, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "inputs.json").write_text("my own file")
    before = _snapshot(mine)
    argv = ["-q", "train", "autoencoder", "--data", str(prepared)]
    assert main([*argv, "-o", str(mine), *AE, *ENGINE]) == 2
    assert "not a realdeal run folder" in _one_line_error(capsys)
    assert _snapshot(mine) == before
    # the same run resumed on another dataset (same grid) is refused
    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    meta = json.loads((other / "dataset.json").read_text())
    meta["subjects"] = meta["subjects"][1:]
    (other / "dataset.json").write_text(json.dumps(meta))
    before = _snapshot(run)
    assert main(["-q", "train", "autoencoder", "--data", str(other), "-o", str(run),
                 "--resume", "--steps", "6"]) == 2  # fmt: skip
    assert "--resume with other data" in _one_line_error(capsys)
    assert _snapshot(run) == before


# --------------------------------------------------------------------------- 3. one writer


def test_a_second_process_cannot_write_into_a_run_folder(prepared, run, capsys):
    before = _snapshot(run)
    argv = ["-q", "train", "autoencoder", "--data", str(prepared), "-o", str(run), "--resume",
            "--steps", "6"]  # fmt: skip
    with _held_by_another_process(run) as pid:
        before = _snapshot(run)
        assert main(argv) == 2
        assert _one_line_error(capsys).endswith(
            f"{run} is in use by another realdeal process (pid {pid})"
        )
        assert _snapshot(run) == before
    assert main(argv) == 0  # the lock died with its process (SIGKILL)
    assert _ckpt(run)[0] == 6
    assert not (run / ".realdeal.lock").exists()  # released and removed


def test_folder_lock_is_reentrant_and_a_refused_new_folder_leaves_nothing(tmp_path):
    new = tmp_path / "new"
    with folder_lock(new):
        with folder_lock(new):  # the same process: shared
            assert (new / ".realdeal.lock").read_text().strip() == str(os.getpid())
    assert not new.exists()  # made for the lock only, so removed with it
    with _held_by_another_process(tmp_path / "held") as pid:
        with pytest.raises(InputError, match=f"in use by another realdeal process \\(pid {pid}\\)"):
            with folder_lock(tmp_path / "held"):
                pass


@pytest.fixture(scope="module")
def ldm_checkpoint(tmp_path_factory):
    from tiny_ldm import tiny_ldm_checkpoint

    return tiny_ldm_checkpoint(tmp_path_factory.mktemp("ldm"))


def test_sample_and_refine_into_a_busy_folder_are_refused(ldm_checkpoint, tmp_path, capsys):
    from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

    out = tmp_path / "samples"
    out.mkdir()
    sample = ["-q", "sample", "--ldm", str(ldm_checkpoint), "-o", str(out), "-n", "1",
              "--steps", "2", "--device", "cpu"]  # fmt: skip
    with _held_by_another_process(out) as pid:
        assert main(sample) == 2
        assert f"{out} is in use by another realdeal process (pid {pid})" in _one_line_error(capsys)
        assert [p.name for p in out.iterdir()] == [".realdeal.lock"]  # the holder's
    refiner = tiny_refiner_checkpoint(tmp_path / "refiner.pt")
    inputs = coarse_volumes(tmp_path / "in", n=2)
    refined = tmp_path / "refined"
    with _held_by_another_process(refined) as pid:
        assert main(["-q", "refine", *map(str, inputs), "-o", str(refined), "--checkpoint",
                     str(refiner), "--steps", "1", "--device", "cpu"]) == 2  # fmt: skip
        assert f"in use by another realdeal process (pid {pid})" in _one_line_error(capsys)
    # free again: the sample run records the checkpoint's sha256
    assert main(sample) == 0
    record = json.loads((out / "sample_config.json").read_text())
    assert record["ldm_sha256"] == sha256_file(ldm_checkpoint)
    assert sorted(p.name for p in out.iterdir()) == ["sample_000.nii.gz", "sample_config.json"]


def test_encode_into_a_busy_folder_is_refused(prepared, tiny_ae, tmp_path, capsys):
    from realdeal.config import to_dict
    from realdeal.runtime.checkpoint import AutoencoderCheckpoint, save_checkpoint

    ae = save_checkpoint(tmp_path / "ae.pt", AutoencoderCheckpoint(
        config={}, model_config=to_dict(tiny_ae.config), model=tiny_ae.state_dict(),
        ema=tiny_ae.state_dict()))  # fmt: skip
    out = tmp_path / "latents"
    argv = ["-q", "encode", "--autoencoder", str(ae), "--data", str(prepared), "-o", str(out),
            "--device", "cpu"]  # fmt: skip
    with _held_by_another_process(out) as pid:
        assert main(argv) == 2
        assert f"{out} is in use by another realdeal process (pid {pid})" in _one_line_error(capsys)
        assert [p.name for p in out.iterdir()] == [".realdeal.lock"]  # the holder's
    assert main(argv) == 0  # free again
    assert (out / "latent_scaling.json").is_file() and not (out / ".realdeal.lock").exists()


# --------------------------------------------------------------------------- 4. caches


def _change_image(ds, sid: str, factor: float = 0.5) -> None:
    from realdeal.data.io import load_volume

    vol = load_volume(ds.image_path(sid))
    vol.with_data(vol.data * factor).save(ds.image_path(sid))


@pytest.fixture(scope="module")
def tiny_ae():
    from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(channels=(4, 8, 8), bottleneck=4)).eval()


def test_latents_follow_their_image_and_autoencoder(dataset, tiny_ae, tmp_path):
    from realdeal.pipelines.autoencoder import encode_dataset, load_latent

    ids, out = dataset.ids(), tmp_path / "latents"
    first = encode_dataset(tiny_ae, dataset, ids, out, autoencoder_id="ae-1")
    sid = ids[0]
    stamp = (out / f"{sid}.safetensors").stat().st_mtime_ns
    again = encode_dataset(tiny_ae, dataset, ids, out, autoencoder_id="ae-1")
    assert (out / f"{sid}.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert all(torch.equal(first[s], again[s]) for s in ids)
    _change_image(dataset, sid)  # re-prepared input: the entry is stale
    third = encode_dataset(tiny_ae, dataset, ids, out, autoencoder_id="ae-1")
    assert not torch.equal(third[sid], first[sid])
    assert all(torch.equal(third[s], first[s]) for s in ids[1:])
    _, meta = load_latent(out / f"{sid}.safetensors")
    assert meta["input_sha256"] == sha256_file(dataset.image_path(sid))
    assert meta["autoencoder"] == "ae-1" and meta["precision"] == "fp32"


def test_latents_written_by_the_earlier_version_are_upgraded_not_recomputed(
    dataset, tiny_ae, tmp_path
):
    """The format of ``training-runs/*/ldm/latents`` before this change: metadata with the
    autoencoder and the subject only. An entry written after its image last changed is kept
    (and gets its image's fingerprint); one older than its image is made anew."""
    from realdeal.pipelines.autoencoder import encode_dataset, load_latent, save_latent

    out, (a, b) = tmp_path / "latents", dataset.ids()[:2]
    marker = torch.full((4, 6, 8, 6), 0.25)  # not what the encoder gives
    for sid in (a, b):
        save_latent(out / f"{sid}.safetensors", marker, {"autoencoder": "ae-1", "subject": sid})
    image_time = dataset.image_path(b).stat().st_mtime_ns
    os.utime(out / f"{b}.safetensors", ns=(image_time - 10**9, image_time - 10**9))
    got = encode_dataset(tiny_ae, dataset, [a, b], out, autoencoder_id="ae-1")
    assert torch.equal(got[a], marker)  # kept: written after its image
    assert not torch.equal(got[b], marker)  # older than its image: stale, made anew
    _, meta = load_latent(out / f"{a}.safetensors")
    assert meta["input_sha256"] == sha256_file(dataset.image_path(a)) and meta["cache"] == "2"
    assert stat.S_IMODE((out / f"{a}.safetensors").stat().st_mode) == 0o666 & ~_umask()
    # another autoencoder: made anew
    other = encode_dataset(tiny_ae, dataset, [a], out, autoencoder_id="ae-2")
    assert not torch.equal(other[a], marker)
    # a file of the name that realdeal did not write is refused, not replaced
    (out / "x.safetensors").write_bytes(b"not a latent")
    with pytest.raises(InputError, match="x.safetensors"):
        encode_dataset(tiny_ae, _OneId(dataset, "x"), ["x"], out, autoencoder_id="ae-1")
    assert (out / "x.safetensors").read_bytes() == b"not a latent"


class _OneId:
    def __init__(self, ds, sid):
        self.ds, self.sid = ds, sid

    def image_path(self, sid):
        return self.ds.image_path(self.ds.ids()[0])

    def ids(self, split=None):
        return [self.sid]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_refiner_patch_cache_follows_its_inputs(dataset, tmp_path):
    from realdeal.training.refiner import _cached_arrays

    ids, cache = dataset.ids()[:2], tmp_path / "patch-cache"
    first = [np.array(a) for a in _cached_arrays(dataset, ids, "images", cache)]
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{s}_images.{ext}" for s in ids for ext in ("npy", "json")
    )
    _change_image(dataset, ids[0])
    second = _cached_arrays(dataset, ids, "images", cache)
    np.testing.assert_allclose(second[0], first[0] * 0.5, atol=1e-6)
    np.testing.assert_array_equal(second[1], first[1])
    del second  # memory maps of files about to change
    # an entry of the earlier version (no record): kept if newer than its image, else redone
    for p in cache.glob("*.json"):
        p.unlink()
    np.save(cache / f"{ids[1]}_images.npy", np.zeros_like(first[1]))
    image_time = dataset.image_path(ids[0]).stat().st_mtime_ns
    np.save(cache / f"{ids[0]}_images.npy", np.zeros_like(first[0]))
    os.utime(cache / f"{ids[0]}_images.npy", ns=(image_time - 10**9, image_time - 10**9))
    third = _cached_arrays(dataset, ids, "images", cache)
    np.testing.assert_allclose(third[0], first[0] * 0.5, atol=1e-6)  # older than its image
    assert not third[1].any()  # newer: kept (and recorded)
    assert (cache / f"{ids[1]}_images.json").is_file()


# --------------------------------------------------------------------------- 5. sample folders


@pytest.fixture(scope="module")
def pipe(ldm_checkpoint):
    from realdeal.pipelines.ldm import LatentDiffusionPipeline

    return LatentDiffusionPipeline.from_checkpoint(ldm_checkpoint)


@pytest.fixture(scope="module")
def reference(pipe):
    from realdeal.data.dataset import PreparedDataset

    ds = PreparedDataset(pipe.checkpoint.dataset)
    return ds.load_image(ds.ids()[0])


def test_samples_of_another_run_are_not_mixed_into_a_folder(pipe, reference, tmp_path):
    from realdeal.pipelines.ldm import save_samples

    out = tmp_path / "samples"
    settings = {"ldm_sha256": "abc", "ldm": "here/ldm.pt", "n": 2}
    kw = dict(sampler="ddim", steps=2, eta=0.0)
    save_samples(pipe, 2, out, reference, settings, seed=1, **kw)
    before = _snapshot(out)
    for other_settings, other_kw in (
        (settings, {**kw, "seed": 2}),
        (settings, {**kw, "seed": 1, "steps": 3}),
        ({**settings, "ldm_sha256": "def"}, {**kw, "seed": 1}),
    ):
        with pytest.raises(InputError, match="holds samples of another run"):
            save_samples(pipe, 2, out, reference, other_settings, **other_kw)
        assert _snapshot(out) == before
    # a record written when the step count was called num_steps names the same run
    record = json.loads((out / "sample_config.json").read_text())
    record["identity"]["run"]["num_steps"] = record["identity"]["run"].pop("steps")
    (out / "sample_config.json").write_text(json.dumps(record))
    # the same run (the checkpoint given by another path) continues: the first two are kept
    more = {**settings, "ldm": "/elsewhere/ldm.pt", "n": 3}
    paths = save_samples(pipe, 3, out, reference, more, seed=1, **kw)
    after = _snapshot(out)
    assert all(after[f"sample_00{i}.nii.gz"] == before[f"sample_00{i}.nii.gz"] for i in (0, 1))
    assert [Path(p).name for p in paths] == [f"sample_00{i}.nii.gz" for i in range(3)]
    assert json.loads((out / "sample_config.json").read_text())["files"] == [
        f"sample_00{i}.nii.gz" for i in range(3)
    ]
    # sample files without a record: an unknown run
    (out / "sample_config.json").unlink()
    with pytest.raises(InputError, match="no sample_config.json"):
        save_samples(pipe, 3, out, reference, more, seed=1, **kw)


# --------------------------------------------------------------------------- 6. metrics logs


class _Toy(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, key):
        i, seed = key
        return {"x": torch.full((1, 4, 4, 4), float(i)), "seed": torch.tensor(seed)}


class _ToyTask:
    kind = "autoencoder"

    def loss(self, model, batch):
        return ((model(batch["x"]) - batch["x"]) ** 2).mean()


def _toy_train(out: Path, steps: int, resume: bool = False):
    from realdeal.training.engine import TrainConfig, train

    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 1, 3, padding=1)
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-2, precision="fp32", log_every=1,
                      checkpoint_every=2, device="cpu")  # fmt: skip
    return train(_ToyTask(), model, _Toy(), cfg, out, run_config={"toy": 1},
                 model_config={"toy": 1}, resume=resume)  # fmt: skip


def test_a_torn_last_metrics_line_is_skipped_and_dropped_on_resume(tmp_path, caplog):
    from realdeal.report.run import read_metrics_jsonl
    from realdeal.training.engine import read_metrics

    out = tmp_path / "run"
    _toy_train(out, 4)
    with open(out / "metrics.jsonl", "a") as fh:  # killed in the middle of a record
        fh.write('{"step": 5, "loss": 0.1, "l')
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert "torn last line 5" in caplog.text
    recs, bad = read_metrics_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4] and bad == 0
    _toy_train(out, 6, resume=True)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4, 5, 6]
    # a broken line in the middle is an error naming the line, not a traceback
    (out / "metrics.jsonl").write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(InputError, match="line 2 is not a JSON record"):
        read_metrics(out / "metrics.jsonl")


def test_each_metrics_record_is_one_write_of_a_whole_line(tmp_path, monkeypatch):
    import types

    from realdeal.training import engine

    writes: list[bytes] = []

    def write(fd, data):
        writes.append(bytes(data))
        return os.write(fd, data)

    monkeypatch.setattr(engine, "os", types.SimpleNamespace(**{**vars(os), "write": write}))
    _toy_train(tmp_path / "run", 3)
    assert len(writes) == 3 and all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    assert [json.loads(w)["step"] for w in writes] == [1, 2, 3]


# --------------------------------------------------------------------------- 7. temporary files


def test_inputs_skip_temporary_files_a_killed_writer_left(tmp_path):
    from realdeal.metrics.subjects import find_set

    from synthetic import phantom, save_nifti

    folder = tmp_path / "set"
    folder.mkdir()
    save_nifti(folder / "sub-1.nii.gz", phantom(seed=1)[0])
    (folder / ".sub-2.x1y2z3.tmp.nii.gz").write_bytes(b"")  # atomic_path's, after SIGKILL
    (folder / ".sub-3.nii.gz.part").write_bytes(b"")
    assert find_set("real", folder).ids == ["sub-1"]


# --------------------------------------------------------------------------- 9. prepare


def test_prepare_refuses_non_positive_spacings(tmp_path, capsys):
    from realdeal.data.dataset import PrepareConfig

    for spacing in ((-2.0, -2.0, -2.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(ConfigError, match="spacing must be three positive"):
            PrepareConfig(spacing=spacing)
    out = tmp_path / "out"
    with contextlib.suppress(SystemExit):
        assert main(["prepare", str(tmp_path / "*.nii.gz"), "-o", str(out), "--spacing", "-2"]) == 2
    _one_line_error(capsys)
    assert not out.exists()


def test_malformed_dataset_manifests_and_split_files_are_one_line_errors(prepared, tmp_path):
    from realdeal.data.dataset import PreparedDataset, read_split_csv

    ds = tmp_path / "ds"
    shutil.copytree(prepared, ds)
    meta = json.loads((ds / "dataset.json").read_text())
    for broken in (
        {"format": "realdeal-prepared", "version": 1},
        {**meta, "config": {**meta["config"], "colour": "red"}},
        {**meta, "config": {**meta["config"], "spacing": [-2, -2, -2]}},
        {**meta, "subjects": [{"id": "s00"}]},
        {**meta, "shape": [24, 32]},
    ):
        (ds / "dataset.json").write_text(json.dumps(broken))
        with pytest.raises(InputError, match="dataset.json: malformed dataset manifest"):
            PreparedDataset(ds)
    (ds / "dataset.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a mapping"):
        PreparedDataset(ds)
    split = tmp_path / "split.csv"
    for text, problem in (
        ("subject,split\ns00\n", "line 2: needs a subject id and a split value"),
        ("subject,split\ns00,train\ns00,test\n", "line 3: subject 's00' is listed twice"),
    ):
        split.write_text(text)
        with pytest.raises(InputError, match=problem):
            read_split_csv(split, ["s00"])
    split.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not a readable CSV file"):
        read_split_csv(split, ["s00"])
