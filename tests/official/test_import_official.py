"""``realdeal import-official``: the released checkpoint layouts → realdeal checkpoints.

State dicts are built here in the released layouts with random weights: the autoencoder from
its module names (docs/method.md#spec-3), the U-Nets in MONAI Generative 0.2.x's key layout with
DataParallel's ``module.`` prefix (and, for the refiner, the buffers of the authors'
running-statistics GroupNorm). References are independent of the converter: a functional
forward written from the released autoencoder's description, and for the U-Nets what MONAI
Generative 0.2.x computes, which applies no projection after self-attention (its
``proj_attn`` is created, never applied): the source network with identity projections, and
MONAI's own ``DiffusionModelUNet.load_old_state_dict`` into an ``include_fc=False`` network.
``test_generative_reference`` compares with the real MONAI Generative package. Networks are
small, except for shape-only checks of the released sizes (meta tensors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from realdeal import cli, official
from realdeal.config import to_dict
from realdeal.errors import ConfigError, InputError
from realdeal.models.latent_scaling import OFFICIAL_RANGES
from realdeal.models.loading import unet_from_checkpoint
from realdeal.models.unet import UNetConfig, build_unet
from realdeal.runtime.checkpoint import load_checkpoint

MINE = ["realdeal.commands.import_official"]
SLOPE = 0.01

# --------------------------------------------------------------------------- released layouts


def released_ae_state(base: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the released autoencoder's module names (1 → base → … → 4)."""
    g = torch.Generator().manual_seed(seed)
    b, b2, bott = base, 2 * base, base // 2
    convs = {  # name: (cin, cout, kernel)
        "in_conv": (1, b, 3),
        "down1.conv": (b, b2, 3),
        "down2.conv": (b2, b, 3),
        "echan_conv1": (b, bott, 1),
        "echan_conv2": (bott, 4, 1),
        "dchan_conv1": (4, bott, 1),
        "dchan_conv2": (bott, b, 1),
        "up1.conv": (b, b2, 3),
        "up2.conv": (b2, b, 3),
        "out_conv": (b, 1, 3),
    }
    for name, ch in [("eresblock1", b), ("eresblock2", b2), ("eresblock3", b),
                     ("dresblock1", b), ("dresblock2", b2), ("dresblock3", b)]:  # fmt: skip
        convs[f"{name}.conv1"] = convs[f"{name}.conv2"] = (ch, ch, 3)
    bns = {"ebn1": b, "ebn2": b2, "ebn3": b, "ebn4": bott,
           "dbn1": b, "dbn2": b2, "dbn3": b, "dbn4": 1}  # fmt: skip
    sd: dict[str, torch.Tensor] = {}
    for name, (cin, cout, k) in convs.items():
        fan_in = cin * k**3
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, k, generator=g) / fan_in**0.5
        sd[f"{name}.bias"] = 0.1 * torch.randn(cout, generator=g)
    for name, ch in bns.items():
        sd[f"{name}.weight"] = 1 + 0.2 * torch.randn(ch, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(ch, generator=g)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(ch, generator=g)
        sd[f"{name}.running_var"] = 0.5 + torch.rand(ch, generator=g)
        sd[f"{name}.num_batches_tracked"] = torch.tensor(100)
    return sd


def released_ae_forward(sd: dict[str, torch.Tensor], x: torch.Tensor):
    """(latent, reconstruction) as the released autoencoder computes them (BatchNorm in eval).

    Written from the description: residual block ``lrelu(conv2(x) + x)`` (``conv1`` unused),
    ``down`` = trilinear ×0.5 (``align_corners=False``) → conv → lrelu, ``up`` = nearest ×2 →
    conv → lrelu, BatchNorm after those, ``dbn4`` unused.
    """

    def conv(name, h):
        w = sd[f"{name}.weight"]
        return F.conv3d(h, w, sd[f"{name}.bias"], padding=w.shape[-1] // 2)

    def bn(name, h):
        return F.batch_norm(h, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                            sd[f"{name}.weight"], sd[f"{name}.bias"], training=False, eps=1e-5)  # fmt: skip

    def act(h):
        return F.leaky_relu(h, SLOPE)

    def res(name, h):
        _ = conv(f"{name}.conv1", h)  # computed and discarded, as released
        return act(conv(f"{name}.conv2", h) + h)

    def down(name, h):
        return act(conv(f"{name}.conv", F.interpolate(h, scale_factor=0.5, mode="trilinear")))

    def up(name, h):
        return act(conv(f"{name}.conv", F.interpolate(h, scale_factor=2, mode="nearest")))

    h = res("eresblock1", act(bn("ebn1", conv("in_conv", x))))
    h = res("eresblock2", bn("ebn2", down("down1", h)))
    h = res("eresblock3", bn("ebn3", down("down2", h)))
    z = torch.sigmoid(conv("echan_conv2", act(bn("ebn4", conv("echan_conv1", h)))))
    h = act(bn("dbn1", conv("dchan_conv2", act(conv("dchan_conv1", z)))))
    h = res("dresblock1", h)
    h = res("dresblock2", bn("dbn2", up("up1", h)))
    h = res("dresblock3", bn("dbn3", up("up2", h)))
    return z, torch.sigmoid(conv("out_conv", h)) * 2 - 1


def random_unet(cfg: UNetConfig, seed: int = 0) -> nn.Module:
    """A MONAI U-Net with every parameter random (a fresh one outputs zeros, docs/method.md#spec-8)."""
    torch.manual_seed(seed)
    net = build_unet(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            scale = 0.1 if p.ndim <= 1 else 1.0 / max(1, p[0].numel()) ** 0.5
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return net.eval()


def to_old_layout(net: nn.Module, groupnorm_buffers: bool) -> dict[str, torch.Tensor]:
    """MONAI Generative 0.2.x layout of ``net``'s weights, as a DataParallel state dict.

    Inverts ``DiffusionModelUNet.load_old_state_dict``: ``X.attn.to_q`` → ``X.to_q`` (k, v),
    ``X.attn.out_proj`` → ``X.proj_attn``, ``postconv`` → ``conv``; with ``groupnorm_buffers``
    every GroupNorm gets ``running_mean``/``running_var``/``num_batches_tracked`` (one per group).
    """
    old = {}
    for key, v in net.state_dict().items():
        for n in ("to_q", "to_k", "to_v"):
            key = key.replace(f".attn.{n}.", f".{n}.")
        key = key.replace(".attn.out_proj.", ".proj_attn.").replace("postconv", "conv")
        old[f"module.{key}"] = v.clone() if v.device.type != "meta" else v
    if groupnorm_buffers:
        for name, m in net.named_modules():
            if isinstance(m, nn.GroupNorm):
                g = m.num_groups
                dev = m.weight.device
                old[f"module.{name}.running_mean"] = torch.zeros(g, device=dev) + 0.3
                old[f"module.{name}.running_var"] = torch.ones(g, device=dev) * 2.0
                old[f"module.{name}.num_batches_tracked"] = torch.full((g,), 7, device=dev)
    return old


class RunningGroupNorm(nn.GroupNorm):
    """A stand-in for the authors' GroupNorm variant: running-statistics buffers per group,
    used only in eval mode; in train mode (how the authors ran inference) plain GroupNorm."""

    def __init__(self, num_groups: int, num_channels: int, eps: float, affine: bool):
        super().__init__(num_groups, num_channels, eps, affine)
        self.register_buffer("running_mean", torch.zeros(num_groups))
        self.register_buffer("running_var", torch.ones(num_groups))
        self.register_buffer("num_batches_tracked", torch.zeros(num_groups, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        b, c = x.shape[:2]
        xs = x.reshape(b, self.num_groups, -1)
        mean, var = self.running_mean.view(1, -1, 1), self.running_var.view(1, -1, 1)
        y = ((xs - mean) / (var + self.eps).sqrt()).reshape(x.shape)
        return y * self.weight.view(1, c, *[1] * (x.ndim - 2)) + self.bias.view(
            1, c, *[1] * (x.ndim - 2)
        )


def with_running_groupnorm(net: nn.Module) -> nn.Module:
    for m in list(net.modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is nn.GroupNorm:
                setattr(m, child_name, RunningGroupNorm(child.num_groups, child.num_channels,
                                                        child.eps, child.affine))  # fmt: skip
    return net


SMALL = {
    "ldm": UNetConfig(in_channels=4, out_channels=4, channels=(8, 16, 16), num_res_blocks=1,
                      attention_levels=(False, True, True), num_head_channels=(0, 16, 16),
                      norm_num_groups=8),
    "refiner": UNetConfig(in_channels=3, out_channels=1, channels=(8, 16, 16), num_res_blocks=1,
                          attention_levels=(False, False, True), num_head_channels=(0, 0, 16),
                          norm_num_groups=8),
}  # fmt: skip


def save_released(path, kind: str, state: dict) -> str:
    if kind == "autoencoder":
        payload = {"epoch": 3, "model": state, "optimizer": {}, "tot_loss": 0.01}
    else:
        payload = {"epoch": 750, "diffusion": state, "optimizer": {}, "best_loss": 0.02}
    torch.save(payload, path)
    return str(path)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny networks gain nothing from more, and the CI box is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [m for m in MINE if m not in cli.COMMANDS])
    return cli.main


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


# --------------------------------------------------------------------------- autoencoder


def test_autoencoder_reproduces_released_forward(tmp_path):
    sd = released_ae_state(base=8)
    src = save_released(tmp_path / "autoencoder_checkpoint.pth", "autoencoder", sd)
    kind, out = official.import_official(src, tmp_path / "ae.pt")
    assert kind == "autoencoder"
    ckpt = load_checkpoint(out, kind="autoencoder")
    cfg = ckpt.model_config
    assert cfg["layout"] == "official" and cfg["resblock_defect"] is True
    ae = official.official_autoencoder_from_state(cfg, ckpt.ema, out)
    x = torch.rand(2, 1, 16, 20, 12, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z_ref, y_ref = released_ae_forward(sd, x)
    with torch.no_grad():
        z, y = ae.encode(x), ae(x)
    assert z.shape == (2, 4, 4, 5, 3) and y.shape == x.shape
    torch.testing.assert_close(z, z_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
    assert y.std() > 1e-3  # not a degenerate comparison
    # the legacy switch matters: a correct residual block computes something else
    fixed = official.OfficialAutoencoder(
        official.OfficialAutoencoderConfig(base_channels=8, bottleneck=4, resblock_defect=False)
    )
    fixed.load_state_dict(ckpt.ema)
    with torch.no_grad():
        assert (fixed.eval()(x) - y_ref).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="divisible by 4"):
        ae.encode(x[..., :10])


def test_full_size_autoencoder_converts():
    cfg, state = official.convert_autoencoder_state(released_ae_state(base=64), "ae.pth")
    assert cfg == official.OfficialAutoencoderConfig()
    model = official.OfficialAutoencoder(cfg)
    assert sum(p.numel() for p in model.parameters()) == 3_549_447
    model.load_state_dict(state)
    bad = dict(state)
    bad["eresblock2.conv1.weight"] = bad["eresblock2.conv1.weight"][:, :8]
    with pytest.raises(InputError, match="eresblock2.conv1.weight"):
        official.convert_autoencoder_state(bad, "ae.pth")


# --------------------------------------------------------------------------- U-Nets


def without_projection(net: nn.Module) -> nn.Module:
    """``net`` with every self-attention output projection set to the identity: what MONAI
    Generative 0.2.x computes from the same weights (it never applies ``proj_attn``)."""
    with torch.no_grad():
        for name, m in net.named_modules():
            if name.endswith("attn.out_proj"):
                m.weight.copy_(torch.eye(m.weight.shape[0]))
                m.bias.zero_()
    return net


@pytest.mark.parametrize("kind", ["ldm", "refiner"])
def test_unet_import_computes_what_the_released_network_computes(tmp_path, kind):
    cfg = SMALL[kind]
    net = random_unet(cfg)  # its random attn.out_proj becomes the released (unused) proj_attn
    old = to_old_layout(net, groupnorm_buffers=kind == "refiner")
    src = save_released(tmp_path / f"{kind}.pth", kind, old)
    ae = save_released(tmp_path / "ae.pth", "autoencoder", released_ae_state(base=8))
    opts = {"autoencoder": ae, "norm_num_groups": 8} if kind == "ldm" else {"window": 16}
    got_kind, out = official.import_official(src, tmp_path / f"{kind}.pt", **opts)
    assert got_kind == kind
    ckpt = load_checkpoint(out, kind=kind)
    imported_cfg = dataclasses.replace(cfg, include_fc=False)
    assert ckpt.model_config == json.loads(json.dumps(to_dict(imported_cfg)))
    converted = unet_from_checkpoint(ckpt, out)
    assert not any(k.endswith("out_proj.weight") for k in ckpt.ema)

    plain_old = {k[len("module.") :]: v for k, v in old.items()}
    plain_old = {k: v for k, v in plain_old.items() if k.rpartition(".")[2] not in
                 official.GROUPNORM_BUFFERS}  # fmt: skip
    monai_old = build_unet(imported_cfg)  # MONAI's own old-layout loader, right architecture
    monai_old.load_old_state_dict(dict(plain_old))
    released = without_projection(random_unet(cfg))

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, cfg.in_channels, 16, 16, 16, generator=g)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        y = converted(x, t)
        assert y.abs().max() > 1e-3
        assert torch.equal(y, monai_old.eval()(x, t))  # same weights, same modules
        torch.testing.assert_close(y, released(x, t), atol=1e-5, rtol=1e-5)
        # applying the trained-but-unused projection (include_fc=True) is far off
        assert (net(x, t) - y).abs().max() > 1e-2

    run = ckpt.config
    assert run["schedule"]["schedule"] == "scaled_linear_beta"
    assert (run["schedule"]["beta_start"], run["schedule"]["beta_end"]) == (0.0015, 0.0205)
    if kind == "ldm":
        assert run["schedule"]["prediction_type"] == "v_prediction"
        assert ckpt.latent_scaling == {
            "lo": [r[0] for r in OFFICIAL_RANGES],
            "hi": [r[1] for r in OFFICIAL_RANGES],
        }
        assert ckpt.latent_shape == (4, 56, 72, 56)
        assert ckpt.image_shape == (224, 288, 224)
        assert ckpt.autoencoder.model_config["layout"] == "official"
    else:
        assert run["schedule"]["prediction_type"] == "epsilon"
        assert ckpt.window == 16 and ckpt.spacing == (0.7, 0.7, 0.7)
        # the authors' inference: their GroupNorm variant in train mode = plain GroupNorm
        variant = with_running_groupnorm(build_unet(imported_cfg))
        variant.load_old_state_dict({k[len("module.") :]: v for k, v in old.items()})
        assert float(variant.out[0].running_var[0]) == 2.0  # buffers were loaded
        with torch.no_grad():
            torch.testing.assert_close(variant.train()(x, t), y, atol=1e-5, rtol=1e-5)


def test_released_unet_sizes_are_inferred():
    """Shapes only (meta tensors): the released LDM and refiner layouts give the paper configs."""
    from realdeal.presets import LDMRunConfig, RefinerRunConfig

    for paper, buffers, n_params, n_imported in [
        (LDMRunConfig().unet, False, 441_435_652, 436_578_820),
        (RefinerRunConfig().unet, True, 68_017_921, 67_623_169),
    ]:
        with torch.device("meta"):
            net = build_unet(paper)  # the released layout has proj_attn: include_fc=True
            imported = build_unet(dataclasses.replace(paper, include_fc=False))
        old = to_old_layout(net, groupnorm_buffers=buffers)
        cfg = official.infer_unet_config(old)
        assert cfg == dataclasses.replace(paper, include_fc=False)
        new = official.convert_unet_state(old, cfg)
        assert {k: tuple(v.shape) for k, v in new.items()} == {
            k: tuple(v.shape) for k, v in imported.state_dict().items()
        }
        assert sum(p.numel() for p in net.parameters()) == n_params
        assert sum(p.numel() for p in imported.parameters()) == n_imported
        assert official.detect_kind({"diffusion": old}) == ("refiner" if buffers else "ldm")


def test_unet_conversion_is_strict():
    net = random_unet(SMALL["refiner"])
    old = to_old_layout(net, groupnorm_buffers=True)
    cfg = official.infer_unet_config(old)
    extra = dict(old, **{"module.conv_in.conv.running_mean": torch.zeros(8)})
    with pytest.raises(InputError, match="unexpected U-Net weight"):
        official.convert_unet_state(extra, cfg)
    # the unused projection must still be there, with its shape
    missing = {k: v for k, v in old.items() if not k.endswith("proj_attn.bias")}
    with pytest.raises(InputError, match="proj_attn.bias"):
        official.convert_unet_state(missing, cfg)
    key = next(k for k in old if k.endswith("proj_attn.weight"))
    wrong = dict(old, **{key: old[key][:, :8]})
    with pytest.raises(InputError, match=r"proj_attn.weight' has shape \(16, 8\)"):
        official.convert_unet_state(wrong, cfg)
    with pytest.raises(ConfigError, match="include_fc=False"):
        official.convert_unet_state(old, dataclasses.replace(cfg, include_fc=True))


def test_realdeal_unets_keep_their_attention_projection():
    """``include_fc`` defaults to True, also for configs and checkpoints written without it."""
    from importlib import resources

    from realdeal.config import from_dict
    from realdeal.models.loading import load_ldm, load_refiner

    old = {k: v for k, v in to_dict(SMALL["ldm"]).items() if k != "include_fc"}
    assert from_dict(UNetConfig, old).include_fc is True
    assert any(k.endswith("attn.out_proj.weight") for k in build_unet(SMALL["ldm"]).state_dict())
    shipped = resources.files("realdeal") / "demo_checkpoints"
    for load, name in ((load_ldm, "ldm.pt"), (load_refiner, "refiner.pt")):
        loaded = load(str(shipped / name))
        assert "include_fc" not in loaded.checkpoint.model_config  # written before the field
        assert any(k.endswith("attn.out_proj.weight") for k in loaded.unet.state_dict())


def test_head_channels_follow_monai_generative():
    """MONAI Generative makes C // h heads (h need not divide C); one head by default."""
    ch, att = (8, 16, 24), (False, True, True)
    assert official.head_channels(ch, att) == (0, 16, 24)
    assert official.head_channels(ch, att, 8) == (0, 8, 8)
    assert official.head_channels(ch, att, (0, 10, 10)) == (0, 16, 12)
    assert official.head_channels(ch, (False, False, False), 24) == (0, 0, 24)  # middle block
    with pytest.raises(ConfigError, match="one per level"):
        official.head_channels(ch, att, (8, 8))
    with pytest.raises(ConfigError, match="no head"):
        official.head_channels(ch, att, 0)


# --------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def released_files(tmp_path_factory):
    """Small random-weight released files and a 32³ prepared dataset."""
    from realdeal.data.dataset import PrepareConfig, prepare_dataset

    from synthetic import phantom, save_nifti

    d = tmp_path_factory.mktemp("released")
    raw = d / "raw"
    raw.mkdir()
    for i in range(2):
        save_nifti(raw / f"s{i:02d}_T1w.nii.gz", phantom(seed=i)[0])
    prepared = d / "prepared"
    prepare_dataset(str(raw / "*_T1w.nii.gz"), prepared,
                    PrepareConfig(shape=(32, 32, 32), window=16, test_fraction=0.5))  # fmt: skip
    ae_sd = released_ae_state(base=8)
    return {
        "ae_state": ae_sd,
        "ae": save_released(d / "autoencoder_checkpoint.pth", "autoencoder", ae_sd),
        "ldm": save_released(d / "checkpoint750.pth", "ldm",
                             to_old_layout(random_unet(SMALL["ldm"]), False)),
        "refiner": save_released(d / "checkpoint2690.pth", "refiner",
                                 to_old_layout(random_unet(SMALL["refiner"]), True)),
        "prepared": prepared,
    }  # fmt: skip


def test_reconstruct_with_imported_autoencoder(main, released_files, tmp_path):
    from realdeal.data.dataset import PreparedDataset

    ae = tmp_path / "ae.pt"
    assert main(["-q", "import-official", released_files["ae"], "-o", str(ae)]) == 0
    data = released_files["prepared"]
    assert main(["-q", "reconstruct", "--autoencoder", str(ae), "--data", str(data),
                 "--device", "cpu"]) == 0  # fmt: skip
    ds = PreparedDataset(data)
    sid = ds.ids()[0]
    x = torch.from_numpy(ds.load_image(sid).data.astype(np.float32))[None, None]
    _, ref = released_ae_forward(released_files["ae_state"], x)
    got = ds.load_derived("reconstructions", sid).data
    np.testing.assert_allclose(got, ref[0, 0].numpy(), atol=1e-5)


def test_sample_with_imported_ldm(main, released_files, tmp_path):
    import nibabel as nib

    ae, ldm = tmp_path / "ae.pt", tmp_path / "ldm.pt"  # the LDM takes the AE's realdeal import too
    assert main(["-q", "import-official", released_files["ae"], "-o", str(ae)]) == 0
    args = ["-q", "import-official", released_files["ldm"], "--autoencoder", str(ae),
            "-o", str(ldm), "--norm-groups", "8", "--image-shape", "32", "32", "32",
            "--data", str(released_files["prepared"])]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "samples"
    assert main(["-q", "sample", "--ldm", str(ldm), "-o", str(out), "--steps", "2",
                 "--device", "cpu"]) == 0  # fmt: skip
    vol = np.asarray(nib.load(out / "sample_000.nii.gz").dataobj)
    assert vol.shape == (32, 32, 32) and np.isfinite(vol).all()


def test_refine_with_imported_refiner(main, released_files, tmp_path):
    import nibabel as nib

    from synthetic import save_nifti

    ref = tmp_path / "refiner.pt"
    assert main(["-q", "import-official", released_files["refiner"], "-o", str(ref),
                 "--window", "16"]) == 0  # fmt: skip
    coarse = np.full((24, 24, 24), -1.0, np.float32)
    coarse[4:20, 4:20, 4:20] = 0.3
    src = save_nifti(tmp_path / "coarse.nii.gz", coarse, np.diag([0.7, 0.7, 0.7, 1.0]))
    dst = tmp_path / "refined.nii.gz"
    assert main(["-q", "refine", str(src), "-o", str(dst), "--checkpoint", str(ref),
                 "--steps", "2", "--device", "cpu"]) == 0  # fmt: skip
    out = np.asarray(nib.load(dst).dataobj)
    assert out.shape == coarse.shape and np.isfinite(out).all()
    # an image-target (paper) refiner defaults to DPM-Solver++; --steps still applies
    rec = json.loads((tmp_path / "refine.json").read_text())["volumes"][0]
    assert rec["sampler"] == {"name": "dpm++", "steps": 2, "eta": 0.0}


def test_errors_are_one_line(main, released_files, tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, junk)
    assert main(["import-official", str(junk), "-o", str(tmp_path / "x.pt")]) == 2
    assert "not one of the authors' released checkpoints" in one_line_error(capsys)

    assert main(["import-official", released_files["ldm"], "-o", str(tmp_path / "x.pt")]) == 2
    assert "--autoencoder" in one_line_error(capsys)

    code = tmp_path / "code.pth"
    torch.save({"model": nn.Identity()}, code)
    assert main(["import-official", str(code), "-o", str(tmp_path / "x.pt")]) == 2
    assert "weights_only=True" in one_line_error(capsys)

    ae = tmp_path / "ae.pt"
    assert main(["-q", "import-official", released_files["ae"], "-o", str(ae)]) == 0
    assert main(["import-official", str(ae), "-o", str(tmp_path / "x.pt")]) == 2
    assert "already a realdeal autoencoder checkpoint" in one_line_error(capsys)
    assert (
        main(["import-official", str(ae), "--kind", "autoencoder", "-o", str(tmp_path / "x.pt")])
        == 2
    )
    assert "already a realdeal autoencoder checkpoint" in one_line_error(capsys)

    args = ["import-official", released_files["ae"], "-o", str(tmp_path / "x.pt")]
    assert main([*args, "--window", "32"]) == 2
    assert "do not apply to the released autoencoder" in one_line_error(capsys)
    assert main([*args, "--kind", "refiner"]) == 2
    assert "no 'diffusion' state dict" in one_line_error(capsys)
    assert not (tmp_path / "x.pt").exists()


# --------------------------------------------------------------------------- NumPy values


class NumPy1Pickler(pickle._Pickler):
    """Pickles NumPy's reconstructors under NumPy 1.x's module name, ``numpy.core.multiarray``
    (NumPy ≥ 2 writes ``numpy._core.multiarray``), as an older training run's file has them."""

    def save_global(self, obj, name=None):
        core = np._core if hasattr(np, "_core") else np.core
        if obj in (core.multiarray.scalar, core.multiarray._reconstruct):
            self.write(pickle.GLOBAL + f"numpy.core.multiarray\n{obj.__name__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.SimpleNamespace(Pickler=NumPy1Pickler, __name__="numpy1_pickle")


@pytest.mark.parametrize("names", ["numpy-now", "numpy-1.x"])
def test_numpy_losses_are_read_and_stored_as_python_numbers(tmp_path, names):
    """The released autoencoder's ``tot_loss`` is a NumPy number; the file is still read with
    ``weights_only=True``, and the import stores plain floats (readable with weights_only)."""
    loss = torch.tensor(0.0125)
    tot_loss = 0 + loss.data.cpu().numpy()  # a NumPy scalar, as a training loop sums it
    assert isinstance(tot_loss, np.float32)
    payload = {"epoch": np.int64(3), "model": released_ae_state(base=8), "optimizer": {},
               "tot_loss": tot_loss, "arrays": [loss.numpy(), np.arange(3, dtype=np.int16),
                                                np.float64(2.5), np.bool_(True)]}  # fmt: skip
    src = tmp_path / "autoencoder_checkpoint.pth"
    kw = {"pickle_module": NUMPY1_PICKLE} if names == "numpy-1.x" else {}
    torch.save(payload, src, **kw)
    if names == "numpy-1.x":
        data = torch.serialization.get_unsafe_globals_in_checkpoint(src)
        assert "numpy.core.multiarray.scalar" in data
    got = official.read_official(src)
    assert got["tot_loss"] == tot_loss and type(got["tot_loss"]) is np.float32
    assert np.array_equal(got["arrays"][1], np.arange(3))
    with pytest.raises(Exception, match="numpy"):  # only for that read
        torch.load(src, weights_only=True)
    kind, out = official.import_official(src, tmp_path / "ae.pt")
    ckpt = torch.load(out, weights_only=True)  # plain values only
    assert ckpt["extra"]["imported_from"] == {
        "file": src.name,
        "epoch": 3,
        "tot_loss": pytest.approx(0.0125),
    }
    assert type(ckpt["extra"]["imported_from"]["tot_loss"]) is float


def test_other_numpy_objects_are_still_refused(main, tmp_path, capsys):
    out = tmp_path / "ae.pt"
    for i, extra in enumerate([np.array([1, "code"], dtype=object), np.random.default_rng(0),
                               np.dtype([("a", "f4"), ("b", "i4")])]):  # fmt: skip
        src = tmp_path / f"ae{i}.pth"
        torch.save({"model": released_ae_state(base=8), "tot_loss": extra}, src)
        with pytest.raises(InputError, match="weights_only=True"):
            official.read_official(src)
        assert main(["import-official", str(src), "-o", str(out)]) == 2
        assert "weights_only=True" in one_line_error(capsys)
    assert not out.exists()


# --------------------------------------------------------------------------- overwriting


def snapshot(folder) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_output_that_is_an_input_is_refused(main, released_files, tmp_path, capsys):
    import shutil

    folder = tmp_path / "release"
    folder.mkdir()
    for kind in ("ae", "ldm", "refiner"):
        shutil.copy(released_files[kind], folder / f"{kind}.pth")
    (folder / "link.pth").symlink_to(folder / "refiner.pth")
    os.link(folder / "refiner.pth", folder / "hard.pth")
    before = snapshot(folder)
    ae, ldm, ref = (str(folder / f"{k}.pth") for k in ("ae", "ldm", "refiner"))
    sub = folder / "sub"
    for args in (
        [ae, "-o", ae],
        [ref, "-o", str(folder / "." / "refiner.pth"), "--window", "16"],
        [ref, "-o", str(sub / ".." / "refiner.pth")],  # sub does not exist
        [ref, "-o", str(folder / "link.pth")],
        [str(folder / "link.pth"), "-o", ref],
        [ref, "-o", str(folder / "hard.pth")],
        [ldm, "--autoencoder", ae, "-o", ldm, "--norm-groups", "8"],
        [ldm, "--autoencoder", ae, "-o", ae, "--norm-groups", "8"],
        [ae, "--kind", "refiner", "-o", ae],  # refused before the file is read
    ):
        assert main(["import-official", *args]) == 2, args
        err = one_line_error(capsys)
        assert "is the input file" in err and "write the realdeal checkpoint elsewhere" in err
    assert snapshot(folder) == before  # nothing written, renamed or created
    for fn, kw in ((official.import_autoencoder, {}), (official.import_refiner, {})):
        with pytest.raises(InputError, match="is the input file"):
            fn(ae if fn is official.import_autoencoder else ref,
               ae if fn is official.import_autoencoder else ref, **kw)  # fmt: skip
    with pytest.raises(InputError, match="is the input file"):
        official.import_ldm(ldm, ae, ae)
    assert snapshot(folder) == before

    # a real import goes through a temporary file renamed into place, and may overwrite
    # an earlier output
    out = folder / "refiner.pt"
    assert main(["-q", "import-official", ref, "-o", str(out), "--window", "16"]) == 0
    first = out.read_bytes()
    assert main(["-q", "import-official", ref, "-o", str(out), "--window", "16"]) == 0
    assert out.read_bytes() == first
    assert sorted(p.name for p in folder.iterdir()) == sorted([*before, "refiner.pt"])


def test_output_goes_through_a_temporary_file(monkeypatch, released_files, tmp_path):
    """A failure while writing leaves no partial output and keeps an earlier one."""
    from realdeal.runtime import checkpoint as ckpt_module

    out = tmp_path / "ae.pt"
    out.write_bytes(b"earlier")
    official.numpy_loss_globals()  # its one-time check saves with the real torch.save

    def broken_save(obj, fh, *a, **kw):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        official.import_official(released_files["ae"], out)
    assert out.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["ae.pt"]
