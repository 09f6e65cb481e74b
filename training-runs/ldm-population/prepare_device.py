"""Pack what a GPU call needs to train the population LDM: ``.device-pop/`` (about 15 MB).

Run from the repository root, after the population's prepared dataset exists
(``training-runs/ldm-population/data``, see README.md)::

    python training-runs/ldm-population/prepare_device.py

It encodes the training split with the shipped demo autoencoder (``realdeal encode``, cached in
``training-runs/ldm-population/latents``), and writes ``.device-pop/`` with the dataset's
``dataset.json`` and ``subjects.csv`` and ``latents.tar.xz``: each training subject's latent as
float16 (at most 2.4e-4 from the float32 latent, about 1e-3 of the LDM's [-1, 1] range) with
its metadata, so that ``realdeal train ldm --latents`` accepts them as this autoencoder's. The
whole prepared dataset (700 MB) could not travel; these do, with the working tree and the
training wheels, under the 64 MiB a device call carries.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "training-runs" / "ldm-population"
DATA = HERE / "data"
LATENTS = HERE / "latents"
OUT = ROOT / ".device-pop"
AE = ROOT / "src" / "realdeal" / "demo_checkpoints" / "autoencoder.pt"


def main() -> int:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from realdeal.data.dataset import PreparedDataset
    from realdeal.utils.fs import atomic_dir

    subprocess.run([sys.executable, "-m", "realdeal", "-q", "encode", "--autoencoder", str(AE),
                    "--data", str(DATA), "-o", str(LATENTS), "--split", "train",
                    "--device", "cpu"], check=True)  # fmt: skip
    ids = PreparedDataset(DATA).ids("train")
    with atomic_dir(OUT, overwrite=True, marker=("pack.json", "realdeal-device-pop")) as tmp:
        for name in ("dataset.json", "subjects.csv"):
            shutil.copy(DATA / name, tmp / name)
        with tempfile.TemporaryDirectory() as work:
            half = Path(work) / "latents"
            half.mkdir()
            for sid in ids:
                src = LATENTS / f"{sid}.safetensors"
                with safe_open(str(src), framework="pt") as f:
                    z, meta = f.get_tensor("latent"), f.metadata()
                save_file({"latent": z.half()}, str(half / src.name), metadata=meta)
            with tarfile.open(tmp / "latents.tar.xz", "w:xz", preset=9) as tar:
                tar.add(half, arcname="latents")
        (tmp / "pack.json").write_text(
            f'{{"format": "realdeal-device-pop", "subjects": {len(ids)}}}\n'
        )
    size = sum(p.stat().st_size for p in OUT.iterdir()) / 2**20
    print(f"{OUT}: {len(ids)} training latents, {size:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
