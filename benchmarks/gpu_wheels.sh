#!/usr/bin/env bash
# Run HERE (with network to the package index): fill .device-wheels/ with what
# benchmarks/gpu_check.py needs on the GPU machine, which has PyTorch, numpy, scipy,
# scikit-image, einops, safetensors, tqdm and PyYAML but no package index:
#   - wheels for Python 3.12 / x86-64 of the packages it lacks: monai (the U-Nets), nibabel
#     (imported by realdeal.data.io) and dipy (the noise-KL metric's non-local means);
#   - quality_input.npz: the held-out demo reconstruction, its original and labels, for part (c).
# Usage: bash benchmarks/gpu_wheels.sh [DATA]   (DATA: a prepared demo dataset with
#        reconstructions, default demo-output/data as `realdeal demo` writes it; subject
#        $SUBJECT, default sub-002, held out)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.device-wheels
data=${1:-demo-output/data}
subject=${SUBJECT:-sub-002}
mkdir -p "$dest"
rm -f "$dest"/*.whl
# the versions this project is tested with (MONAI 1.6.1, nibabel 5.4.2, dipy 1.12.1)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dest" monai==1.6.1 nibabel==5.4.2 dipy==1.12.1
python3 - "$data" "$subject" "$dest/quality_input.npz" <<'PY'
import sys

import nibabel as nib
import numpy as np

data, subject, out = sys.argv[1:]
arrays = {
    key: np.asanyarray(nib.load(f"{data}/{folder}/{subject}.nii.gz").dataobj)
    for key, folder in (("coarse", "reconstructions"), ("original", "images"), ("labels", "labels"))
}
arrays = {k: v.astype(np.int16 if k == "labels" else np.float32) for k, v in arrays.items()}
np.savez_compressed(out, **arrays)
print(out, {k: v.shape for k, v in arrays.items()})
PY
du -ch "$dest"/* | sort -h
