import numpy as np
import pytest
import torch

from realdeal.metrics import weights as W
from realdeal.metrics.fid import load_fid_inception
from realdeal.metrics.lpips import load_lpips


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(W.MissingWeightsError) as e:
        load_lpips(tmp_path, allow_download=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert W.ALEXNET.name in msg and str(tmp_path) in msg and W.ALEXNET.url in msg
    with pytest.raises(W.MissingWeightsError, match=W.FID_INCEPTION.name):
        load_fid_inception(tmp_path, allow_download=False)


def test_failed_download_becomes_missing_weights_error(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(W.MissingWeightsError, match="download failed"):
        W.weight_path(W.ALEXNET, tmp_path, allow_download=True)
    assert not (tmp_path / W.ALEXNET.name).exists()


@pytest.mark.slow
def test_default_folder_is_torch_hub_cache(weights_dir, tmp_path, monkeypatch):
    home = tmp_path / "torchhome"
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / W.ALEXNET.name).symlink_to(weights_dir / W.ALEXNET.name)
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert W.checkpoint_dir() == cache
    model = load_lpips(allow_download=False)  # found through $TORCH_HOME/hub/checkpoints
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32)).astype(np.float32)
    assert np.allclose(model(x, x), 0, atol=1e-6)


@pytest.mark.slow
def test_lpips_loads_alexnet_file_into_lpips(weights_dir):
    model = load_lpips(weights_dir, allow_download=False)
    state = torch.load(weights_dir / W.ALEXNET.name, weights_only=True)
    np.testing.assert_array_equal(
        model.model.net.slice2._modules["3"].weight.detach().numpy(),
        state["features.3.weight"].numpy(),
    )
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (6, 32, 32)).astype(np.float32)
    d_small = model(a, np.clip(a + 0.05 * rng.normal(size=a.shape), -1, 1).astype(np.float32))
    d_big = model(a, rng.uniform(-1, 1, a.shape).astype(np.float32))
    assert d_small.shape == (6,) and (d_big > d_small).all()


def test_wrong_file_is_reported(tmp_path):
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / W.ALEXNET.name)
    with pytest.raises(W.MissingWeightsError, match="do not match"):
        load_lpips(tmp_path, allow_download=False)


@pytest.mark.slow
def test_inception_features_from_weight_file(weights_dir):
    net = load_fid_inception(weights_dir, allow_download=False)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16)).astype(np.float32)
    f = net(x, batch_size=1)
    assert f.shape == (2, 2048) and np.isfinite(f).all()
    np.testing.assert_allclose(net(x[:1]), f[:1], rtol=1e-4, atol=1e-5)
