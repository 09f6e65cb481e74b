"""One validation layer for every command: bad option values, devices, outputs and files.

Every sub-command and every option come from the real ``argparse`` parser, so a new option or
command cannot skip these checks: each number option must parse with a declared range
(:class:`realdeal.config.NumberArg`), and each is fed the bad values of :data:`BAD`. A value an
option legitimately takes is listed in :data:`VALID` with the reason. A refusal must be a
non-zero exit with one line on stderr naming the option, no traceback, and no file created.
Cases run in-process through :func:`realdeal.cli.main` (the parser built once); two run the
real console script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from command_leaves import leaves

import realdeal.cli as cli
from realdeal.config import NumberArg, field_range, from_dict, numeric_fields
from realdeal.errors import ConfigError

# --------------------------------------------------------------------------- the parser


LEAVES = leaves()
COMMANDS = sorted(LEAVES)


def _is_number(action: argparse.Action) -> bool:
    return isinstance(action.type, NumberArg) or action.type in (int, float)


def _flag(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


NUMBER_OPTIONS = [
    (cmd, _flag(a), a)
    for cmd in COMMANDS
    for a in LEAVES[cmd]._actions
    if a.option_strings and _is_number(a)
]


@pytest.fixture
def parser(monkeypatch):
    """:func:`realdeal.cli.main` with the parser built once (the same parser, reused)."""
    built = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: built)
    return built


class WorkStarted(BaseException):
    """Raised by every library entry point a command hands its work to."""


WORK = [
    ("realdeal.data.cohort", "build_cohort"),
    ("realdeal.data.dataset", "prepare_dataset"),
    ("realdeal.data.brain", "skullstrip_files"),
    ("realdeal.training.autoencoder", "train_autoencoder"),
    ("realdeal.training.ldm", "train_ldm"),
    ("realdeal.training.refiner", "train_refiner"),
    ("realdeal.models.loading", "load_autoencoder"),
    ("realdeal.pipelines.refiner", "refine_paths"),
    ("realdeal.metrics.suite", "evaluate_paired"),
    ("realdeal.metrics.suite", "evaluate_unpaired"),
    ("realdeal.metrics.memorization", "evaluate_memorization"),
    ("realdeal.official", "import_official"),
    ("realdeal.demo", "run_demo"),
    ("realdeal.demo", "export_models"),
]


@pytest.fixture
def no_work(monkeypatch):
    """Any command that gets past its checks stops at its work (which must not start)."""
    import importlib

    def started(*a, **k):
        raise WorkStarted

    for module, name in WORK:
        monkeypatch.setattr(importlib.import_module(module), name, started)
    from realdeal.pipelines.ldm import LatentDiffusionPipeline

    monkeypatch.setattr(LatentDiffusionPipeline, "from_checkpoint", started)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(argv: list[str], capsys, names: list[str], cwd: Path) -> str:
    """Run ``argv``; it must exit non-zero with one stderr line naming one of ``names``, no
    traceback, nothing new in ``cwd``. Returns the line."""
    before = _files(cwd)
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO", "WARNING"))]
    assert code not in (0, None), f"{argv}: accepted"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{argv}: {err}"
    assert any(n in lines[0] for n in names), f"{argv}: {lines[0]!r} names none of {names}"
    assert _files(cwd) == before, f"{argv}: left {_files(cwd) - before}"
    return lines[0]


def _base_argv(cmd: str) -> list[str]:
    """The command with a placeholder for every required argument (paths that do not exist)."""
    argv = cmd.split()
    for a in LEAVES[cmd]._actions:
        if a.option_strings and not a.required:
            continue
        if isinstance(a, argparse._HelpAction):
            continue
        value = str(list(a.choices)[0]) if a.choices else f"missing-{a.dest}"
        if a.option_strings:
            argv += [a.option_strings[-1], value]
        else:
            argv.append(value)
    return argv


# --------------------------------------------------------------------------- number options

#: The bad values every number option is fed (``huge``: 1e30, or a 31-digit whole number).
BAD = ["nan", "inf", "-inf", "-1", "0", "huge", "abc", "1.5e"]

#: Values of :data:`BAD` an option legitimately takes: ``{option or "command option": {value:
#: reason}}``.
VALID: dict[str, dict[str, str]] = {
    "--seed": {"0": "seeds start at 0"},
    "--warmup-steps": {"0": "no warm-up"},
    "--weight-decay": {"0": "no weight decay"},
    "--min-lr-ratio": {"0": "the cosine decays to 0"},
    "--grad-clip": {"0": "0 = no clipping"},
    "--ema-decay": {"0": "the EMA is the raw weights"},
    "--betas": {"0": "β = 0 is a valid AdamW moment decay"},
    "--snapshot-every": {"0": "0 = no snapshots"},
    "train autoencoder --workers": {"0": "0 = load data in the training process"},
    "train ldm --workers": {"0": "0 = load data in the training process"},
    "train refiner --workers": {"0": "0 = load data in the training process"},
    "train refiner-student --workers": {"0": "0 = load data in the training process"},
    "--bootstrap": {"0": "0 = no intervals"},
    "--overlap": {"0": "windows may abut"},
    "--noise": {"0": "a noise-free cohort"},
    "--first-subject": {"0": "a cohort starts at subject 0"},
    "--p-full": {"0": "a mask kind may be left out"},
    "--p-half": {"0": "a mask kind may be left out"},
    "--p-slabs": {"0": "a mask kind may be left out"},
    "--test-fraction": {"0": "no held-out subjects"},
    "--low-percentile": {"0": "the foreground minimum"},
    "--eta": {"0": "deterministic DDIM"},
    "--refine-eta": {"0": "deterministic DDIM"},
    "--head-channels": {"0": "0 = no attention at that level"},
    "--attention": {"0": "0/1 per level"},
}


def _valid(cmd: str, flag: str) -> dict[str, str]:
    return VALID.get(f"{cmd} {flag}", VALID.get(flag, {}))


def _text(value: str, action: argparse.Action) -> str:
    if value != "huge":
        return value
    integer = action.type.integer if isinstance(action.type, NumberArg) else action.type is int
    return "1" + "0" * 30 if integer else "1e30"


def test_every_number_option_has_a_declared_range():
    """No raw ``type=int``/``float``: every number option parses with a declared range (an
    option with fixed ``choices`` needs none)."""
    loose = [f"{cmd} {flag}" for cmd, flag, a in NUMBER_OPTIONS
             if not isinstance(a.type, NumberArg) and not a.choices]  # fmt: skip
    assert not loose, f"number options without a declared range: {loose}"
    assert len(NUMBER_OPTIONS) > 100  # the walk found the generated train flags too


def test_the_valid_table_names_real_options_and_values():
    flags = {flag for _, flag, _ in NUMBER_OPTIONS} | {
        f"{cmd} {flag}" for cmd, flag, _ in NUMBER_OPTIONS
    }
    for key, values in VALID.items():
        assert key in flags, f"VALID lists {key!r}, which is no number option"
        assert set(values) <= set(BAD) and all(values.values())
    for cmd, flag, a in NUMBER_OPTIONS:  # a declared-valid value parses
        for value in _valid(cmd, flag):
            if a.choices is None:
                a.type(value)
            else:
                assert a.type(value) in a.choices


@pytest.mark.parametrize(
    "cmd,flag,action", NUMBER_OPTIONS, ids=[f"{c} {f}" for c, f, _ in NUMBER_OPTIONS]
)
def test_bad_number_values_are_refused(cmd, flag, action, parser, no_work, capsys, tmp_path,
                                       monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    nargs = action.nargs if isinstance(action.nargs, int) else 1
    names = [o for o in action.option_strings]
    for value in BAD:
        if value in _valid(cmd, flag):
            continue
        line = _refused([*cmd.split(), flag, *[_text(value, action)] * nargs], capsys, names,
                        tmp_path)  # fmt: skip
        assert line.startswith(f"realdeal {cmd}: error: argument "), line


def test_every_numeric_config_field_has_a_declared_range():
    """The run configs (metadata) and the classes of :data:`FIELD_RANGES` declare a range for
    each numeric field, and their defaults lie inside it."""
    import importlib

    from realdeal.config import FIELD_RANGES, check_ranges
    from realdeal.presets import _PRESETS, AutoencoderRunConfig, LDMRunConfig, RefinerRunConfig
    from realdeal.presets import TrainConfig as Train

    classes = [Train, AutoencoderRunConfig, LDMRunConfig, RefinerRunConfig]
    for key in FIELD_RANGES:
        module, _, name = key.partition(":")
        classes.append(getattr(importlib.import_module(module), name))
    for cls in classes:
        missing = [f for f in numeric_fields(cls) if field_range(cls, f) is None]
        assert not missing, f"{cls.__name__}: no declared range for {missing}"
        assert not set(FIELD_RANGES.get(f"{cls.__module__}:{cls.__qualname__}", {})) - set(
            numeric_fields(cls)
        ), f"{cls.__name__}: ranges for fields it does not have"
        check_ranges(cls())
    for cfg in _PRESETS.values():
        check_ranges(cfg)


def test_a_declared_range_holds_in_config_files_too():
    """The flags and ``from_dict`` (``--config`` files, overrides) read the same declaration."""
    from realdeal.presets import AutoencoderRunConfig, TrainConfig, preset, with_overrides

    assert field_range(TrainConfig, "lr") is not None
    assert set(numeric_fields(TrainConfig)) == {
        f for f in numeric_fields(TrainConfig) if field_range(TrainConfig, f) is not None
    }
    for bad in ({"lr": float("nan")}, {"ema_decay": 2.0}, {"warmup_steps": -1},
                {"grad_clip": -0.5}, {"log_every": 0}, {"seed": 2**63}, {"seed": -1},
                {"num_workers": -2}):  # fmt: skip
        with pytest.raises(ConfigError, match=next(iter(bad))):
            with_overrides(preset("autoencoder", "cpu-small"), {"train": bad})
    with pytest.raises(ConfigError, match="norm_num_groups"):  # was a ZeroDivisionError
        with_overrides(preset("ldm", "cpu-small"), {"unet": {"norm_num_groups": 0}})
    with pytest.raises(ConfigError, match="device"):
        from_dict(AutoencoderRunConfig, {"train": {"device": "banana"}})


# --------------------------------------------------------------------------- devices

DEVICE_COMMANDS = [c for c in COMMANDS if "--device" in LEAVES[c]._option_string_actions]


def test_every_device_option_checks_its_form():
    from realdeal.config import device_arg

    assert len(DEVICE_COMMANDS) >= 8
    for cmd in DEVICE_COMMANDS:
        assert LEAVES[cmd]._option_string_actions["--device"].type is device_arg, cmd


@pytest.mark.parametrize("cmd", DEVICE_COMMANDS)
def test_bad_devices_are_refused_before_any_work(cmd, parser, no_work, capsys, tmp_path,
                                                 monkeypatch):  # fmt: skip
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for device in ("banana", "cuda:x", "cuda:-1", "cpu:0", ""):
        _refused([*cmd.split(), "--device", device], capsys, ["--device"], tmp_path)
    for device in ("cuda", "cuda:3"):  # well formed, but this machine has no GPU
        line = _refused([*_base_argv(cmd), "--device", device], capsys, ["--device"], tmp_path)
        assert "no CUDA GPU" in line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    line = _refused([*_base_argv(cmd), "--device", "cuda:3"], capsys, ["--device"], tmp_path)
    assert "1 CUDA GPU(s)" in line


def test_a_config_files_device_is_checked_too(parser, no_work, capsys, tmp_path, monkeypatch,
                                              prepared):  # fmt: skip
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"device": "cuda:1"}}))
    argv = ["train", "refiner", "--data", str(prepared), "-o", "run", "--config", str(cfg)]
    assert "no CUDA GPU" in _refused(argv, capsys, ["device"], tmp_path)


# --------------------------------------------------------------------------- outputs

#: Commands whose ``dest="out"`` output is a file, not a folder.
FILE_OUTPUTS = {"import-official", "doctor"}


def _with_out(cmd: str, value: str) -> tuple[list[str], str]:
    """The base argv with the output (the argument whose dest is ``out``) set to ``value``,
    and the output's name as errors give it."""
    argv = cmd.split()
    out = next(a for a in LEAVES[cmd]._actions if a.dest == "out")
    for a in LEAVES[cmd]._actions:
        if a is out:
            argv += [a.option_strings[-1], value] if a.option_strings else [value]
        elif (a.required or not a.option_strings) and not isinstance(a, argparse._HelpAction):
            v = str(list(a.choices)[0]) if a.choices else f"missing-{a.dest}"
            argv += [a.option_strings[-1], v] if a.option_strings else [v]
    name = "/".join(out.option_strings) if out.option_strings else out.dest.upper()
    return argv, name


def test_every_command_declares_an_output_and_its_checks():
    for cmd in COMMANDS:
        p = LEAVES[cmd]
        assert any(a.dest == "out" for a in p._actions), f"{cmd}: no output argument"
        assert callable(p.get_default("preflight")), f"{cmd}: no preflight checks"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_unwritable_outputs_are_refused_before_any_work(cmd, parser, no_work, capsys, tmp_path,
                                                        monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "folder").mkdir()
    suffix = ".pt" if cmd in FILE_OUTPUTS else ""
    cases = [(f"blocker/sub{suffix}", "is a file, not a folder")]
    if cmd in FILE_OUTPUTS:
        cases.append(("folder", "is a folder, expected a file"))
    else:
        cases.append(("blocker", "is a file, expected a folder"))
    for value, problem in cases:
        argv, name = _with_out(cmd, value)
        line = _refused(argv, capsys, [name], tmp_path)
        assert problem in line and value.split("/")[0] in line


def test_read_only_parents_are_refused(tmp_path, monkeypatch):
    """A folder without write permission (simulated: the tests may run as root)."""
    from realdeal.commands._checks import check_writable_dir, check_writable_file
    from realdeal.errors import InputError

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ro else real(p, m))
    with pytest.raises(InputError, match=r"-o/--out: cannot create this folder: .*not writable"):
        check_writable_dir(ro / "new" / "deeper", "-o/--out")
    with pytest.raises(InputError, match="folder is not writable"):
        check_writable_dir(ro, "--out")
    with pytest.raises(InputError, match="not writable"):
        check_writable_file(ro / "model.pt", "-o/--out")
    check_writable_dir(tmp_path / "new" / "deeper", "-o/--out")  # creatable: fine
    assert sorted(os.listdir(tmp_path)) == ["ro"]  # and nothing was made


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_folder_is_refused_by_the_command(parser, no_work, capsys, tmp_path,
                                                           monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _refused(["evaluate", "paired", "--out", "ro/out"], capsys, ["--out"], tmp_path)
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- files


@pytest.fixture
def prepared(tmp_path) -> Path:
    """A prepared dataset's manifest (no subjects: enough for every check before work)."""
    from realdeal.config import to_dict
    from realdeal.data.dataset import FORMAT, PrepareConfig

    root = tmp_path / "inputs" / "prep"
    root.mkdir(parents=True)
    cfg = PrepareConfig(shape=(16, 16, 16), window=8)
    meta = {"format": FORMAT, "version": 1, "config": to_dict(cfg), "shape": [16, 16, 16],
            "spacing": [2.0, 2.0, 2.0], "window": 8, "scaler": {"low": 0.0, "high": 1.0},
            "subjects": []}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize(
    "content",
    [
        "{oops",
        "[]",
        '{"format": "realdeal-prepared", "config": {"bogus": 1}}',
        "NO_SCALER",
        "\udcff",
    ],  # fmt: skip
    ids=["not-json", "a-list", "unknown-config-key", "no-scaler", "not-utf8"],
)
@pytest.mark.parametrize("cmd", ["train autoencoder", "encode", "sample", "import-official"])
def test_a_malformed_dataset_json_is_one_line(cmd, content, prepared, parser, no_work, capsys,
                                              tmp_path, monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    path = prepared / "dataset.json"
    if content == "NO_SCALER":
        meta = json.loads(path.read_text())
        del meta["scaler"]
        path.write_text(json.dumps(meta))
    else:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    argv, _ = _with_out(cmd, "out.pt" if cmd in FILE_OUTPUTS else "out")
    argv += ["--data", str(prepared)]
    line = _refused(argv, capsys, ["dataset.json"], tmp_path)
    assert "--data" in line


@pytest.mark.parametrize(
    "config,problem",
    [
        ({"train": {"bogus": 1}}, "unknown field"),
        ({"train": {"lr": "fast"}}, "expected a number"),
        ('{"train": {"lr": NaN}}', "lr must be a finite number"),
        ({"train": {"steps": -5}}, "steps must be at least 1"),
        ({"train": {"seed": 2**70}}, "seed must be at most"),
        ({"train": {"ema_decay": 2}}, "ema_decay must be a finite number in [0, 1]"),
        ({"train": 5}, "expected a mapping"),
        ("- 1\n- 2\n", "must be a mapping"),
    ],  # fmt: skip
)
def test_bad_config_files_are_one_line_naming_the_file(config, problem, prepared, parser, no_work,
                                                       capsys, tmp_path, monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / ("cfg.yaml" if str(config).startswith("-") else "cfg.json")
    cfg.write_text(config if isinstance(config, str) else json.dumps(config))
    argv = ["train", "autoencoder", "--data", str(prepared), "-o", "run", "--config", str(cfg)]
    line = _refused(argv, capsys, [cfg.name], tmp_path)
    assert problem in line


@pytest.mark.parametrize(
    "config,problem",
    [
        ({"bogus": 1}, "unknown field"),
        ({"n_subjects": "many"}, "expected int"),
        ({"n_subjects": -3}, "n_subjects must be at least 1"),
        ('{"spacing": NaN}', "spacing nan"),
    ],  # fmt: skip
)
def test_bad_cohort_config_files(config, problem, parser, no_work, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(config if isinstance(config, str) else json.dumps(config))
    assert problem in _refused(["cohort", "out", "--config", str(cfg)], capsys, ["cfg.json"],
                               tmp_path)  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["", "subject\ns0\n", "subject,split\ns0,banana\n", "\udcff\udcfe", "subject,split\ns0\n"],
    ids=["empty", "no-split-column", "bad-split", "binary", "ragged"],
)
def test_bad_split_csv_is_refused_before_any_work(text, parser, no_work, capsys, tmp_path,
                                                  monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    csv = tmp_path / "split.csv"
    csv.write_bytes(text.encode("utf-8", "surrogateescape"))
    _refused(["prepare", "raw", "-o", "out", "--split", str(csv)], capsys, ["split.csv"], tmp_path)


@pytest.mark.parametrize(
    "manifest,problem",
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ({"format": "realdeal-demo-checkpoints", "version": 2}, "has no 'steps'"),
        (
            {"version": 2, "steps": {"autoencoder": 1, "ldm": 1, "refiner": 1}, "models": 3},
            "models must be dict",
        ),
        (
            {"version": 1, "steps": {"autoencoder": "many", "ldm": 1, "refiner": 1}},
            "steps.autoencoder must be int",
        ),
        ({"format": "something-else"}, "not a demo checkpoint manifest"),
    ],  # fmt: skip
)
def test_a_malformed_demo_checkpoint_manifest_is_one_line(manifest, problem, parser, no_work,
                                                          capsys, tmp_path, monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "manifest.json").write_text(
        manifest if isinstance(manifest, str) else json.dumps(manifest)
    )
    line = _refused(["demo", "-o", "out", "--checkpoints", str(folder)], capsys,
                    ["manifest.json"], tmp_path)  # fmt: skip
    assert problem in line and "--checkpoints" in line


def test_the_shipped_demo_manifest_parses():
    from realdeal.commands._checks import parse_demo_manifest
    from realdeal.demo import packaged_checkpoints

    folder = packaged_checkpoints()
    if folder is None:
        pytest.skip("no demo checkpoints in this installation")
    assert parse_demo_manifest(folder)["cohort"]


def test_a_malformed_cohort_record_is_one_line(prepared, parser, no_work, capsys, tmp_path,
                                               monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    cohort = tmp_path / "inputs" / "cohort"
    cohort.mkdir()
    (cohort / "cohort.json").write_text("[1]")
    argv = ["export-demo-checkpoints", "--autoencoder", "a", "--ldm", "l", "--refiner", "r",
            "--data", str(prepared), "--cohort", str(cohort), "--made-by", "x", "-o", "out"]  # fmt: skip
    assert "must be a JSON object" in _refused(argv, capsys, ["cohort.json"], tmp_path)


@pytest.mark.parametrize(
    "content,problem",
    [
        ('{"summary": [{"set": "ldm"', "not valid JSON"),
        ({"summary": [{"set": "x"}], "records": []}, "summary[0].volumes"),
        ({"summary": 3, "records": []}, "summary must be list"),
        (
            {"summary": [], "records": [{"set": "x", "subject": "s", "nearest": "t"}]},
            "records[0].similarity",
        ),
    ],  # fmt: skip
)
def test_report_on_a_half_written_memorisation_file(content, problem, capsys, tmp_path):
    """The report's sections with unusable inputs become one-line notes naming the file."""
    run = tmp_path / "run"
    (run / "mem").mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps({"format": "realdeal-run", "version": 1, "memorization": {"eval": "mem"}})
    )
    (run / "mem" / "memorization.json").write_text(
        content if isinstance(content, str) else json.dumps(content)
    )
    assert cli.main(["report", str(run)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    sections = json.loads((run / "report" / "report.json").read_text())["sections"]
    notes = [s["note"] for s in sections if s["status"] == "skipped" and s["note"]]
    hit = [n for n in notes if "memorization.json" in n]
    assert hit and problem in hit[0] and "\n" not in hit[0], notes


@pytest.mark.parametrize(
    "name,content,problem",
    [
        ("cfg.yaml", b"train:\n  lr: [1,\n", "not valid YAML (expected the node content"),
        ("cfg.json", b'{"train": ', "not valid JSON"),
        ("cfg.yaml", b"\xff\xfe", "not UTF-8"),
        ("cfg.json", b"[1, 2]", "must be a mapping"),
    ],
)
def test_unreadable_config_files_are_one_line(
    name, content, problem, prepared, parser, no_work, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(content)
    for argv in (
        ["cohort", "out"],
        ["prepare", "raw", "-o", "out"],
        ["train", "ldm", "--data", str(prepared), "-o", "run", "--autoencoder", "a"],
    ):
        assert problem in _refused([*argv, "--config", name], capsys, [name], tmp_path)


def test_report_on_an_unreadable_evaluation_summary(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "ev").mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps({"format": "realdeal-run", "version": 1, "paired": {"eval": "ev"}})
    )
    (run / "ev" / "summary.csv").write_bytes(b"set,metric\n\xff\xfe,\x00\n")
    assert cli.main(["report", str(run)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    sections = json.loads((run / "report" / "report.json").read_text())["sections"]
    assert any("summary.csv unreadable" in (s["note"] or "") for s in sections)


# --------------------------------------------------------------------------- the console


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv,names",
    [
        (["train", "autoencoder", "--data", "d", "-o", "o", "--lr", "nan"], ["--lr"]),
        (["sample", "--ldm", "l.pt", "-o", "o", "--device", "banana"], ["--device"]),
    ],  # fmt: skip
)
def test_the_console_script_refuses_in_one_line(argv, names, tmp_path):
    res = subprocess.run([sys.executable, "-m", "realdeal", *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and any(n in lines[0] for n in names), res.stderr
    assert "Traceback" not in res.stderr and not list(tmp_path.iterdir())
