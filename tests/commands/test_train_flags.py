"""``realdeal train`` flags generated from the config dataclasses, and what they resolve to."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest

from realdeal.cli import build_parser
from realdeal.commands._flags import config_overrides
from realdeal.commands.train import AUTOENCODER_FLAGS, ENGINE_FLAGS, LDM_FLAGS
from realdeal.commands.train_refiner import REFINER_FLAGS
from realdeal.config import to_dict
from realdeal.presets import TrainConfig, preset, with_overrides

SETS = {
    "autoencoder": (ENGINE_FLAGS, *AUTOENCODER_FLAGS),
    "ldm": (ENGINE_FLAGS, *LDM_FLAGS),
    "refiner": (ENGINE_FLAGS, *REFINER_FLAGS),
}
# Every spelling that README, the scripts and earlier releases use.
LEGACY = {
    "autoencoder": "--channels --bottleneck --norm --loss --crop --whole-volumes",
    "ldm": "--autoencoder --channels --num-res-blocks --attention --head-channels --norm-groups "
    "--schedule --beta-start --beta-end --prediction-type",
    "refiner": "--window --positions --coarse --target --residual-scale --channels "
    "--num-res-blocks --p-full --p-half --p-slabs",
}
ENGINE = (
    "--data --out -o --preset --config --resume --steps --batch-size --grad-accum --lr "
    "--weight-decay --warmup-steps --lr-decay --grad-clip --ema-decay --precision --log-every "
    "--checkpoint-every --seed --workers --device --channels-last --no-channels-last"
)


def _kind_parser(kind: str):
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    kinds = train._subparsers._group_actions[0].choices
    kinds[kind].format_help()  # adds the deferred flags
    return kinds[kind]


@pytest.mark.parametrize("kind", SETS)
def test_every_listed_field_has_a_flag_and_old_spellings_work(kind):
    options = set(_kind_parser(kind)._option_string_actions)
    assert set((ENGINE + " " + LEGACY[kind]).split()) <= options
    for s in SETS[kind]:
        fields = {f.name for f in dataclasses.fields(s.config_class())}
        assert set(s.fields) <= fields, s.cls
    # the engine's settings are all on the command line
    assert set(ENGINE_FLAGS.fields) == {f.name for f in dataclasses.fields(TrainConfig)}


# Values that must satisfy a config's checks (probabilities sum to 1, sizes divide).
SPECIAL = {
    "p_full": 0.2,
    "p_half": 0.3,
    "p_slabs": 0.5,
    "window": 16,
    "crop": [16, 16, 16],
    "grad_clip": 0.5,
    ("ldm", "channels"): [8, 16, 16],
    ("refiner", "channels"): [8, 16, 32],  # the last level attends with 32 head channels
    "attention_levels": [False, True, True],
    "num_head_channels": [0, 8, 16],
    "norm_num_groups": 4,
    "device": "cpu",  # a device name has a form (auto, cpu, cuda, cuda:N)
}


def _value(tp, current):
    """A command-line value for a field of type ``tp`` that differs from ``current``."""
    tp = typing.get_args(tp)[0] if type(None) in typing.get_args(tp) else tp
    if typing.get_origin(tp) is typing.Literal:
        return next(c for c in typing.get_args(tp) if c != current)
    if tp is bool:
        return not current
    if tp is str:
        return f"{current}x"
    if typing.get_origin(tp) is tuple:
        return [_value(typing.get_args(tp)[0], v) for v in current]
    return current + 1 if tp is int else round((current or 0.5) * 0.5, 6)


@pytest.mark.parametrize("kind", SETS)
def test_a_command_line_sets_every_field_it_names(kind):
    """Parse a line that changes every generated flag; the resolved config has those values."""
    base = preset(kind, "cpu-small")
    argv, expected = ["--data", "D", "-o", "O"], to_dict(base)
    for s in SETS[kind]:
        hints = typing.get_type_hints(s.config_class())
        sub = base
        for key in s.path:
            sub = getattr(sub, key)
        for field, flag in s.flags().items():
            if (kind, field) in SPECIAL:
                value = SPECIAL[(kind, field)]
            elif field in SPECIAL:
                value = SPECIAL[field]
            else:
                value = _value(hints[field], getattr(sub, field))
            name = flag.name or "--" + field.replace("_", "-")
            if isinstance(value, bool) and not isinstance(getattr(sub, field), tuple):
                argv.append(name if value else "--no-" + name[2:])
            else:
                items = value if isinstance(value, list) else [value]
                argv += [name, *(str(int(v) if isinstance(v, bool) else v) for v in items)]
            node = expected
            for key in s.path:
                node = node[key]
            node[field] = value
    if kind == "ldm":
        argv += ["--autoencoder", "A.pt"]
    args = _kind_parser(kind).parse_args(argv)
    assert to_dict(with_overrides(base, config_overrides(args))) == expected


def test_zero_grad_clip_and_whole_volumes_clear_their_fields():
    args = _kind_parser("autoencoder").parse_args(
        ["--data", "D", "-o", "O", "--grad-clip", "0", "--whole-volumes"]
    )
    from realdeal.commands.train import run_autoencoder  # noqa: F401 (the flags' consumer)
    from realdeal.presets import CLEAR

    over = config_overrides(args)
    assert over["train"]["grad_clip"] is CLEAR and args.whole_volumes
    cfg = with_overrides(preset("autoencoder", "cpu-small"), {**over, "crop": CLEAR})
    assert cfg.train.grad_clip is None and cfg.crop is None


def test_building_the_parser_does_not_import_torch():
    code = "import sys; from realdeal.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
