"""Progressive distillation of the refiner: the halving grid, the student's target (against
closed-form algebra and an exact Gaussian denoiser), rounds, exact resumption, the student
checkpoint in the pipeline and `realdeal refine`, and the command's one-line refusals."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from realdeal import cli
from realdeal.commands import train as train_command
from realdeal.diffusion.denoiser import Prediction
from realdeal.diffusion.registry import Sampling, draws_noise, make_sampler
from realdeal.diffusion.samplers import DistilledSampler, halving_timesteps
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.errors import ConfigError, InputError
from realdeal.presets import DistillConfig, preset, with_overrides
from realdeal.runtime.checkpoint import Distillation, load_checkpoint
from realdeal.training import distill
from realdeal.training.distill import DistillTask, distillation_target, round_checkpoint
from realdeal.training.engine import read_metrics
from realdeal.utils.fs import sha256_file
from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

SCHEDULE = ScheduleConfig(schedule="scaled_linear_beta", prediction_type="v_prediction")
TINY = dict(batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, checkpoint_every=2,
            precision="fp32", device="cpu", channels_last=False, ema_decay=0.5)  # fmt: skip


# -- the halving grid and its sampler ----------------------------------------------------------


def test_halving_grid_nests_and_ends_one_step_above_clean():
    assert halving_timesteps(1000, 10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert halving_timesteps(1000, 1) == [999] and halving_timesteps(1000, 4, "quadratic")[0] == 999
    for spacing in ("linear", "quadratic"):
        for n in (1, 2, 4, 8, 16):  # one student step covers exactly two teacher steps
            assert halving_timesteps(1000, 2 * n, spacing)[::2] == halving_timesteps(
                1000, n, spacing
            )
    quad = halving_timesteps(1000, 16, "quadratic")
    gaps = [a - b for a, b in zip(quad, quad[1:], strict=False)]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > gaps[-1]  # denser toward t = 0
    with pytest.raises(ConfigError, match="timesteps would repeat"):
        halving_timesteps(1000, 64, "quadratic")
    s = NoiseSchedule(SCHEDULE)
    smp = make_sampler("distilled", s, 8, spacing="quadratic")
    assert isinstance(smp, DistilledSampler) and smp.eta == 0.0
    assert smp.timesteps() == halving_timesteps(1000, 8, "quadratic")
    assert not draws_noise("distilled") and draws_noise("ddim", 1.0) and not draws_noise("dpm++")


# -- the target -----------------------------------------------------------------------------


def test_one_ddim_step_with_the_target_lands_on_the_teachers_end_point():
    """The algebra: plugging x̃ into one deterministic DDIM step from z_t gives z_{t''}."""
    s = NoiseSchedule(SCHEDULE)
    g = torch.Generator().manual_seed(0)
    z_t, z_end = torch.randn(4, 1, 3, 3, 3, generator=g), torch.randn(4, 1, 3, 3, 3, generator=g)
    t, t_end = torch.tensor([999, 700, 120, 30]), torch.tensor([600, 250, 40, -1])
    x_tilde = distillation_target(s, z_t.double(), z_end.double(), t, t_end)
    step = DistilledSampler(s, 4, clip_x0=False)
    for b in range(4):
        ab = float(s.alpha_bar(t[b]))
        eps = (z_t[b : b + 1].double() - ab**0.5 * x_tilde[b : b + 1]) / (1 - ab) ** 0.5
        out, _ = step.step(z_t[b : b + 1].double(), int(t[b]), int(t_end[b]),
                           Prediction(x_tilde[b : b + 1], eps))  # fmt: skip
        torch.testing.assert_close(out, z_end[b : b + 1].double(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x_tilde[3], z_end[3].double())  # to t = −1: the end point itself


MU, TAU = 0.1, 0.15  # per-voxel Gaussian data: x ~ N(MU, TAU²)


def _coefficients(s: NoiseSchedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ab = s.alpha_bar(t).view(-1, 1, 1, 1, 1)
    return ab.sqrt(), (1 - ab).sqrt()


class GaussianTeacher(torch.nn.Module):
    """The exact denoiser of x ~ N(MU, TAU²): E[x | z_t] = MU + a·TAU²/(a²TAU² + σ²)·(z − a·MU),
    as a v-prediction network (it sees [z_t, x̂, y_prev] and uses only z_t)."""

    def __init__(self, s: NoiseSchedule):
        super().__init__()
        self.s = s

    def x0(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sig = _coefficients(self.s, t)
        return MU + a * TAU**2 / (a**2 * TAU**2 + sig**2) * (z - a * MU)

    def forward(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = inp[:, :1].double()
        a, sig = _coefficients(self.s, t)
        return ((a * z - self.x0(z, t)) / sig).float()


class TwoStepStudent(GaussianTeacher):
    """What the student should become, in closed form: the v whose one DDIM step from z_t
    equals the exact denoiser's two DDIM steps (each linear in z), on a grid of ``n`` steps."""

    def __init__(self, s: NoiseSchedule, n: int, spacing: str):
        super().__init__(s)
        grid = [*halving_timesteps(1000, 2 * n, spacing), -1]
        self.next = {grid[j]: (grid[j + 1], grid[j + 2]) for j in range(0, 2 * n, 2)}

    def ddim(self, z, t, t_next):
        a, sig = _coefficients(self.s, t)
        a_n, sig_n = _coefficients(self.s, t_next)
        x0 = self.x0(z, t)
        return a_n * x0 + sig_n * (z - a * x0) / sig

    def forward(self, inp, t):
        z = inp[:, :1].double()
        mid = torch.tensor([self.next[int(v)][0] for v in t])
        end = torch.tensor([self.next[int(v)][1] for v in t])
        z_end = self.ddim(self.ddim(z, t, mid), mid, end)
        a, sig = _coefficients(self.s, t)
        a_e, sig_e = _coefficients(self.s, end)
        x_tilde = (z_end - sig_e / sig * z) / (a_e - sig_e / sig * a)
        return ((a * z - x_tilde) / sig).float()


def _batch(n: int = 6, w: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = MU + TAU * torch.randn(n, 1, w, w, w, generator=g)
    mask = torch.zeros(n, 1, w, w, w, dtype=torch.bool)
    mask[:, :, : w // 2 + 1] = True  # generate one part, know the rest
    return {"x": x, "xhat": torch.zeros_like(x), "mask": mask, "seed": torch.arange(10, 10 + n)}


@pytest.mark.parametrize("n,spacing", [(1, "linear"), (2, "quadratic"), (4, "linear")])
def test_an_exact_teachers_two_steps_are_what_the_student_is_taught(n, spacing):
    """With the exact Gaussian denoiser as teacher, the task's loss vanishes for the closed-form
    two-step student (the masked windows, grids and target agree with the algebra), and not for
    the teacher itself (one of its steps is not two)."""
    s = NoiseSchedule(SCHEDULE)
    task = DistillTask(s, GaussianTeacher(s), n, spacing, target="image")
    batch = _batch()
    i = task.draws(dict(batch, seed=batch["seed"][0]))["i"]
    assert 0 <= int(i) < n
    assert float(task.loss(TwoStepStudent(s, n, spacing), batch)) < 1e-10
    assert float(task.loss(GaussianTeacher(s), batch)) > 1e-5  # ≥ 5.6e-5 measured


def test_the_teacher_runs_in_fp32_under_the_engines_autocast():
    """The target amplifies the teacher's errors (15× at t = 999): its steps must not follow
    the training step into bf16."""
    from realdeal.models.unet import UNetConfig, build_unet

    s = NoiseSchedule(SCHEDULE)
    torch.manual_seed(0)
    net = build_unet(UNetConfig(in_channels=3, out_channels=1, channels=(8, 8),
                                attention_levels=(False, False), num_head_channels=(0, 8),
                                num_res_blocks=1, norm_num_groups=4))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-initialises the output layer
            p.add_(0.05 * torch.randn_like(p))
    task = DistillTask(s, net, 2, target="residual", residual_scale=0.2)
    b = _batch(2)
    m = b["mask"].float()
    args = (b["x"], torch.cat([b["xhat"], b["x"]], 1), b["x"], b["xhat"], m, torch.tensor([0, 1]))
    plain = task.teacher_steps(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = task.teacher_steps(*args)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def test_weights_are_the_papers():
    s = NoiseSchedule(SCHEDULE)
    t = torch.tensor([999, 500, 10])
    ab = s.alpha_bar(t)
    snr_plus_one = DistillTask(s, GaussianTeacher(s), 2, weighting="snr+1").weight(t)
    truncated = DistillTask(s, GaussianTeacher(s), 2, weighting="truncated-snr").weight(t)
    torch.testing.assert_close(snr_plus_one, (1 / (1 - ab)).float())  # = ‖v − v̂‖² / ‖x − x̂‖²
    torch.testing.assert_close(truncated, torch.clamp(ab / (1 - ab), min=1).float())
    with pytest.raises(ConfigError, match="weighting"):
        DistillTask(s, GaussianTeacher(s), 2, weighting="snr")


def test_learning_rate_schedule_restarts_every_round():
    from realdeal.presets import TrainConfig

    cfg = distill._RoundTrain(**{**TINY, "steps": 6}, lr_decay="cosine", round_steps=3)
    one = TrainConfig(**{**TINY, "steps": 3}, lr_decay="cosine")
    assert [cfg.lr_at(k) for k in range(1, 7)] == [one.lr_at(k) for k in (1, 2, 3)] * 2


# -- runs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Four phantoms on a 16³ grid (8³ windows) with blurred 'reconstructions'."""
    from scipy import ndimage

    from realdeal.data.dataset import PrepareConfig, PreparedDataset, prepare_dataset

    from synthetic import phantom, save_nifti

    raw = tmp_path_factory.mktemp("raw")
    for i in range(4):
        save_nifti(raw / f"s{i}_T1w.nii.gz", phantom(shape=(20, 22, 20), seed=i)[0])
    root = tmp_path_factory.mktemp("ds") / "prepared"
    prepare_dataset(str(raw / "*_T1w.nii.gz"), root,
                    PrepareConfig(shape=(16, 16, 16), window=8, test_fraction=0.25))  # fmt: skip
    ds = PreparedDataset(root)
    for sid in ds.ids():
        x = ds.load_image(sid).data
        ds.save_derived("reconstructions", sid, ndimage.gaussian_filter(x, 1.0).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return tiny_refiner_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt")


def _cfg(**distill_kw):
    base = preset("refiner-student", "cpu-small")
    kw = dict(start_steps=4, rounds=2, steps_per_round=3, spacing="linear") | distill_kw
    return with_overrides(base, {"distill": kw, "train": TINY})


def _run(teacher, prepared, out, cfg=None, resume=False):
    return distill.train_student(cfg or _cfg(), teacher, prepared, out, resume=resume)


@pytest.fixture(scope="module")
def student_run(teacher, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "student"
    _run(teacher, prepared, out)
    return out


@pytest.mark.slow
def test_rounds_halve_the_grid_and_record_it(student_run, teacher):
    ckpt = load_checkpoint(student_run / "checkpoint.pt", kind="refiner")
    assert ckpt.step == 6 and ckpt.resumable
    assert ckpt.init_steps == load_checkpoint(teacher).total_steps  # started from the teacher
    steps = []
    for k in (1, 2):
        rec = load_checkpoint(round_checkpoint(student_run, k), kind="refiner").distilled
        assert isinstance(rec, Distillation) and rec.rounds == k
        assert rec.teacher_sha256 == sha256_file(teacher) and rec.teacher_steps == 4
        assert list(rec.timesteps) == halving_timesteps(1000, rec.steps, "linear")
        steps.append(rec.steps)
    assert steps == [2, 1] and ckpt.distilled.steps == 1  # 4 → 2 → 1
    # the run's last checkpoint holds the last round's student
    last = load_checkpoint(round_checkpoint(student_run, 2), kind="refiner")
    assert all(torch.equal(last.ema[k], ckpt.ema[k]) for k in ckpt.ema)
    assert [r["step"] for r in read_metrics(student_run / "metrics.jsonl")] == list(range(1, 7))


class Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("at", [3, 5])  # at the end of round 1, inside round 2
def test_a_killed_run_resumes_to_the_same_weights(student_run, teacher, prepared, tmp_path,
                                                  monkeypatch, at):  # fmt: skip
    from realdeal.training import engine

    def kill(step, loss):
        if step == at:
            raise Killed

    monkeypatch.setattr(distill, "train", functools.partial(engine.train, on_step=kill))
    with pytest.raises(Killed):
        _run(teacher, prepared, tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt").step == at - 1
    monkeypatch.setattr(distill, "train", engine.train)
    _run(teacher, prepared, tmp_path / "cut", resume=True)
    full = load_checkpoint(student_run / "checkpoint.pt")
    cut = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    for name in full.model:
        assert torch.equal(full.model[name], cut.model[name]), name
        assert torch.equal(full.ema[name], cut.ema[name]), name
    loss = [(r["step"], r["loss"]) for r in read_metrics(student_run / "metrics.jsonl")]
    assert [
        (r["step"], r["loss"]) for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")
    ] == loss
    assert cut.distilled == full.distilled


def test_student_loads_as_a_refiner_and_samples_with_its_own_sampler(student_run, teacher):
    from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings

    pipe = RefinerPipeline.from_checkpoint(student_run / "checkpoint.pt")
    assert pipe.sampling() == Sampling("distilled", 1, 0.0, "linear")
    assert pipe.sampling(RefineSettings(sampler="distilled")).steps == 1  # its native steps
    assert pipe.sampling(RefineSettings(steps=2)) == Sampling("distilled", 2, 0.0, "linear")
    assert pipe.sampling(RefineSettings(sampler="ddim")) == Sampling("ddim", None)  # ddim default
    round1 = RefinerPipeline.from_checkpoint(round_checkpoint(student_run, 1))
    assert round1.sampling().steps == 2
    assert RefinerPipeline.from_checkpoint(teacher).sampling().sampler == "ddim"
    coarse = np.full((12, 12, 12), -1.0, np.float32)
    coarse[2:10, 2:10, 2:10] = 0.3
    res = pipe.refine_array(coarse, RefineSettings())
    assert res.unet_evaluations == res.plan.stats.windows_run * 1
    assert np.isfinite(res.refined).all()


def test_a_student_record_whose_grid_its_sampler_does_not_visit_is_refused(student_run, tmp_path):
    import dataclasses

    from realdeal.models.loading import load_refiner
    from realdeal.runtime.checkpoint import save_checkpoint, save_checkpoint_safetensors

    ckpt = load_checkpoint(round_checkpoint(student_run, 1))
    st = save_checkpoint_safetensors(tmp_path / "s.safetensors", ckpt)
    assert load_checkpoint(st).distilled == ckpt.distilled  # the record survives safetensors
    bad = dataclasses.replace(ckpt.distilled, timesteps=(999, 0))
    save_checkpoint(tmp_path / "bad.pt", dataclasses.replace(ckpt, distilled=bad))
    with pytest.raises(InputError, match="records the time grid"):
        load_refiner(tmp_path / "bad.pt")
    assert load_checkpoint("demo:refiner").distilled is None  # older checkpoints: no record


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def main():
    """``realdeal``, whose ``train`` lists ``refiner-student``."""
    assert "realdeal.commands.train_student" in train_command.TRAINER_MODULES
    return cli.main


def _student_argv(teacher, prepared, out, *more):
    return ["-q", "train", "refiner-student", "--teacher", str(teacher), "--data", str(prepared),
            "-o", str(out), "--preset", "cpu-small", "--start-steps", "4", "--rounds", "2",
            "--steps-per-round", "2", "--spacing", "linear", "--batch-size", "2",
            "--checkpoint-every", "2", "--precision", "fp32", "--device", "cpu",
            "--no-channels-last", *more]  # fmt: skip


@pytest.mark.slow
def test_refine_command_runs_a_student_with_its_sampler(main, teacher, prepared, tmp_path):
    out = tmp_path / "run"
    assert main(_student_argv(teacher, prepared, out)) == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt.step == 4 and ckpt.distilled.steps == 1
    assert json.loads((out / "config.json").read_text())["config"]["distill"]["rounds"] == 2
    assert main(_student_argv(teacher, prepared, out, "--resume")) == 0  # done: nothing to do
    vols = coarse_volumes(tmp_path / "in", n=1)
    assert main(["-q", "refine", str(vols[0]), "-o", str(tmp_path / "ref"), "--checkpoint",
                 str(out / "checkpoint.pt"), "--device", "cpu"]) == 0  # fmt: skip
    record = json.loads((tmp_path / "ref" / "refine.json").read_text())["volumes"][0]
    assert record["sampler"] == {"name": "distilled", "steps": 1, "eta": 0.0}
    assert record["unet_evaluations"] == record["plan"]["windows_run"]
    assert main(["-q", "refine", str(vols[0]), "-o", str(tmp_path / "teach"), "--checkpoint",
                 str(out / "checkpoint.pt"), "--sampler", "ddim", "--steps", "3",
                 "--device", "cpu"]) == 0  # fmt: skip
    record = json.loads((tmp_path / "teach" / "refine.json").read_text())["volumes"][0]
    assert record["sampler"]["name"] == "ddim" and record["sampler"]["steps"] == 3


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_bad_input_is_refused_in_one_line(main, teacher, prepared, tmp_path, capsys):
    from realdeal.runtime.checkpoint import AutoencoderCheckpoint, save_checkpoint

    out = tmp_path / "run"
    argv = _student_argv(tmp_path / "missing.pt", prepared, out)
    assert main(argv) == 2
    assert "--teacher" in (err := _one_line_error(capsys)) and "no such checkpoint" in err
    ae = save_checkpoint(tmp_path / "ae.pt", AutoencoderCheckpoint(
        config={}, model_config={}, model={"w": torch.zeros(1)}))  # fmt: skip
    assert main(_student_argv(ae, prepared, out)) == 2
    assert "kind 'autoencoder'" in _one_line_error(capsys)
    assert main(_student_argv(teacher, prepared, out, "--start-steps", "6")) == 2
    err = _one_line_error(capsys)
    assert "does not halve 2 times (6 → 3 → 1.5)" in err
    assert main(_student_argv(teacher, prepared, out, "--steps", "9")) == 2
    assert "--steps is not for refiner-student runs" in _one_line_error(capsys)
    assert not out.exists()  # nothing was written


def test_a_refiner_run_folder_is_not_resumed_as_a_student(
    main, teacher, prepared, tmp_path, capsys
):
    from realdeal.training.refiner import train_refiner

    cfg = with_overrides(preset("refiner", "cpu-small"),
                         {"window": 8, "unet": {"channels": [8, 8], "attention_levels": [False, False],
                          "num_head_channels": [0, 8], "norm_num_groups": 4},
                          "train": {**TINY, "steps": 2}})  # fmt: skip
    train_refiner(cfg, prepared, tmp_path / "refiner")
    assert main(_student_argv(teacher, prepared, tmp_path / "refiner", "--resume")) == 2
    assert "not a refiner-student run" in _one_line_error(capsys)


def test_a_student_teacher_must_be_distilled_on_from_its_own_grid(student_run, prepared, tmp_path):
    with pytest.raises(ConfigError, match="--start-steps 1 --spacing linear"):
        _run(student_run / "checkpoint.pt", prepared, tmp_path / "again")
    with pytest.raises(ConfigError, match="does not halve 2 times"):
        DistillConfig(start_steps=6, rounds=2)
