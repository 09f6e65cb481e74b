"""``import-official`` against the authors' own networks: the real MONAI Generative 0.2.x.

The authors trained their U-Nets with ``generative.networks.nets.DiffusionModelUNet`` (PyPI
``monai-generative``). Here that class builds small networks with attention where the
authors had it (LDM: 3 levels, attention at the last two; refiner: 3 input channels,
attention at the last level, with the running-statistics GroupNorm variant run in train mode
as the authors ran inference), every parameter random (``proj_attn`` too, so applying it
would show). The autoencoder is the released layout with its functional reference from
``test_import_official``. The files are saved in the layout the importer reads (the
autoencoder's ``tot_loss`` a NumPy scalar made from ``loss.data.cpu().numpy()``, U-Nets
wrapped in ``torch.nn.DataParallel``, optimizer states), imported with the library function
and the CLI, loaded with realdeal's loaders, and compared in fp32.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from realdeal import cli, official
from realdeal.config import from_dict
from realdeal.errors import ConfigError
from realdeal.models.loading import load_autoencoder, load_ldm, load_refiner
from realdeal.models.unet import UNetConfig, build_unet

pytest.importorskip(
    "generative",
    reason="MONAI Generative 0.2.x (pip install monai-generative, in the test extra) is the "
    "authors' U-Net implementation, the reference here",
)
from generative.networks.nets import DiffusionModelUNet as GenerativeUNet
from test_import_official import (
    MINE,
    one_line_error,
    released_ae_forward,
    released_ae_state,
    with_running_groupnorm,
)

TOL = 1e-4  # max abs difference allowed (fp32)
GROUPS = 8
CHANNELS = (8, 16, 24)
#: The authors' U-Nets, small: (in, out, attention levels, num_head_channels as they set it).
AUTHORS = {
    "ldm": (4, 4, (False, True, True), (0, 16, 24)),
    "refiner": (3, 1, (False, False, True), (0, 0, 24)),
}


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [m for m in MINE if m not in cli.COMMANDS])
    return cli.main


def authors_unet(kind: str, num_head_channels=None, seed: int = 0) -> nn.Module:
    """The authors' U-Net class, small, every parameter random (a fresh one outputs zeros)."""
    cin, cout, attention, heads = AUTHORS[kind]
    torch.manual_seed(seed)
    net = GenerativeUNet(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        num_res_blocks=2,
        num_channels=CHANNELS,
        attention_levels=attention,
        num_head_channels=heads if num_head_channels is None else num_head_channels,
        norm_num_groups=GROUPS,
    )
    if kind == "refiner":
        with_running_groupnorm(net)  # the authors' GroupNorm variant (buffers per group)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            scale = 0.1 if p.ndim <= 1 else 1.0 / max(1, p[0].numel()) ** 0.5
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
        for name, b in net.named_buffers():  # buffers that would matter in eval mode
            if name.endswith("running_mean"):
                b.fill_(0.3)
            elif name.endswith("running_var"):
                b.fill_(2.0)
    return net


def save_like_training(path, kind: str, net_or_state, loss) -> str:
    """``torch.save`` of a training script's checkpoint dict, as the importer reads them."""
    if kind == "autoencoder":
        state = net_or_state
        payload = {"epoch": 99, "model": state, "optimizer": {}, "tot_loss": loss}
    else:
        wrapped = nn.DataParallel(net_or_state)  # CPU: wraps only; keys get "module."
        opt = torch.optim.AdamW(wrapped.parameters(), lr=2.5e-5)
        payload = {
            "epoch": 750,
            "diffusion": wrapped.state_dict(),
            "optimizer": opt.state_dict(),
            "best_loss": loss,
        }
    torch.save(payload, path)
    return str(path)


def authors_forward(net: nn.Module, kind: str, x, t):
    """How the authors ran the network: the refiner in train mode (plain GroupNorm)."""
    net.train(kind == "refiner")
    with torch.no_grad():
        return net(x, t)


def epoch_loss() -> np.float32:
    """A NumPy scalar as a training loop makes it: ``tot_loss += loss.data.cpu().numpy()``."""
    tot_loss = 0
    for v in (0.004, 0.003):
        tot_loss += torch.tensor(v).data.cpu().numpy()
    assert isinstance(tot_loss, np.generic)
    return tot_loss


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def test_imports_reproduce_the_authors_networks(tmp_path, main, capsys):
    g = torch.Generator().manual_seed(1)
    ae_sd = released_ae_state(base=8, seed=3)
    ae_src = save_like_training(tmp_path / "autoencoder_checkpoint.pth", "autoencoder",
                                ae_sd, epoch_loss())  # fmt: skip
    nets = {kind: authors_unet(kind, seed=i) for i, kind in enumerate(AUTHORS)}
    ldm_src = save_like_training(tmp_path / "checkpoint750.pth", "ldm", nets["ldm"],
                                 np.float32(0.02))  # fmt: skip
    ref_src = save_like_training(tmp_path / "checkpoint2690.pth", "refiner", nets["refiner"], 0.03)

    # the library function for the autoencoder and the refiner, the CLI for the LDM
    assert official.import_official(ae_src, tmp_path / "ae.pt")[0] == "autoencoder"
    assert official.import_official(ref_src, tmp_path / "refiner.pt", window=16)[0] == "refiner"
    args = ["-q", "import-official", ldm_src, "--autoencoder", ae_src, "-o",
            str(tmp_path / "ldm.pt"), "--norm-groups", str(GROUPS)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err

    ae, ae_ckpt = load_autoencoder(tmp_path / "ae.pt")
    assert ae_ckpt.imported_from["tot_loss"] == pytest.approx(0.007)
    assert type(ae_ckpt.imported_from["tot_loss"]) is float
    ldm = load_ldm(tmp_path / "ldm.pt")
    refiner = load_refiner(tmp_path / "refiner.pt")
    assert type(ldm.checkpoint.imported_from["best_loss"]) is float
    for ckpt in (ldm.checkpoint, refiner.checkpoint):
        assert ckpt.model_config["include_fc"] is False

    diffs = {}
    x = torch.rand(2, 1, 16, 16, 16, generator=g) * 2 - 1
    z_ref, y_ref = released_ae_forward(ae_sd, x)
    with torch.no_grad():
        z, y = ae.encode(x), ae(x)
        y_embedded = ldm.autoencoder.decode(z_ref)
    diffs["AE"] = max(max_diff(z, z_ref), max_diff(y, y_ref), max_diff(y_embedded, y_ref))
    assert y_ref.std() > 1e-2

    t = torch.tensor([10, 900])
    for kind, loaded in (("ldm", ldm), ("refiner", refiner)):
        unet, cfg = loaded.unet, from_dict(UNetConfig, loaded.checkpoint.model_config)
        cin = AUTHORS[kind][0]
        xu = torch.randn(2, cin, 16, 16, 16, generator=g)
        ref = authors_forward(nets[kind], kind, xu, t)
        with torch.no_grad():
            got = unet(xu, t)
        assert ref.std() > 1e-2  # not a degenerate comparison
        diffs[f"{kind} U-Net"] = max_diff(got, ref)
        # what MONAI's own old-layout loader gives on a default network: far off
        default = build_unet(dataclasses.replace(cfg, include_fc=True))
        old = {k.removeprefix("module."): v for k, v in nn.DataParallel(nets[kind])
               .state_dict().items() if not k.endswith(official.GROUPNORM_BUFFERS)}  # fmt: skip
        default.load_old_state_dict(old)
        with torch.no_grad():
            diffs[f"{kind} U-Net, include_fc=True"] = max_diff(default.eval()(xu, t), ref)

    print("\nmax abs diff vs the authors' networks (fp32):")
    for name, d in diffs.items():
        print(f"  {name:28s} {d:.3g}")
    for name in ("AE", "ldm U-Net", "refiner U-Net"):
        assert diffs[name] <= TOL, (name, diffs[name])
    for kind in AUTHORS:
        assert diffs[f"{kind} U-Net, include_fc=True"] > 100 * TOL


@pytest.mark.slow
@pytest.mark.parametrize("heads", [(0, 8, 8), 10])
def test_several_heads_convert_exactly(tmp_path, heads):
    """MONAI Generative splits C channels into C // h heads, as MONAI 1.x does: exact, once
    the head channels the network was built with are given (the weights do not show them)."""
    net = authors_unet("ldm", num_head_channels=heads, seed=5)
    n_heads = [m.num_heads for n, m in net.named_modules() if n.endswith("attentions.0")]
    assert max(n_heads) > 1
    src = save_like_training(tmp_path / "ldm.pth", "ldm", net, 0.1)
    state = official.read_official(src)["diffusion"]
    cfg = official.infer_unet_config(state, GROUPS, src, num_head_channels=heads)
    assert cfg.include_fc is False
    if heads == 10:  # 16 channels: 1 head of 16; 24 channels: 2 heads of 12
        assert cfg.num_head_channels == (0, 16, 12)
    monai_net = build_unet(cfg)
    monai_net.load_state_dict(official.convert_unet_state(state, cfg, src))
    one_head = official.infer_unet_config(state, GROUPS, src)
    one_head_net = build_unet(one_head)
    one_head_net.load_state_dict(official.convert_unet_state(state, one_head, src))
    g = torch.Generator().manual_seed(6)
    x, t = torch.randn(1, 4, 16, 16, 16, generator=g), torch.tensor([500])
    ref = authors_forward(net, "ldm", x, t)
    with torch.no_grad():
        assert max_diff(monai_net.eval()(x, t), ref) <= TOL
        assert max_diff(one_head_net.eval()(x, t), ref) > 100 * TOL  # the head count matters


def test_head_channels_generative_cannot_run_are_refused(tmp_path, main, capsys):
    heads = (0, 5, 24)  # 16 channels → 3 heads of 5.33 channels
    net = authors_unet("ldm", seed=0)
    bad = authors_unet("ldm", num_head_channels=heads, seed=0)
    with pytest.raises(RuntimeError), torch.no_grad():  # the authors could not have run it
        bad(torch.zeros(1, 4, 8, 8, 8), torch.tensor([1]))
    state = nn.DataParallel(net).state_dict()
    with pytest.raises(ConfigError, match="not divisible into 3 heads"):
        official.infer_unet_config(state, GROUPS, "ldm.pth", num_head_channels=heads)
    with pytest.raises(ConfigError, match="no head"):
        official.infer_unet_config(state, GROUPS, "ldm.pth", num_head_channels=32)
    src = save_like_training(tmp_path / "ldm.pth", "ldm", net, 0.1)
    ae = save_like_training(tmp_path / "ae.pth", "autoencoder", released_ae_state(8), 0.1)
    out = tmp_path / "ldm.pt"
    args = ["import-official", src, "--autoencoder", ae, "-o", str(out), "--norm-groups",
            str(GROUPS), "--head-channels", *map(str, heads)]  # fmt: skip
    assert main(args) == 2
    assert "not divisible into 3 heads" in one_line_error(capsys)
    assert not out.exists()
