#!/usr/bin/env bash
# Run HERE before the device call: the carried files (under 64 MiB with the working tree).
#   .device-wheels/  monai, nibabel, dipy wheels + the quality input (benchmarks/gpu_wheels.sh)
#   .device-wheels-train/  monai and nibabel alone (what a training-only call needs)
#   .device-data/    the demo's prepared dataset without reconstructions (made there)
# The working tree travels too (about 25 MB now): keep large untracked files out of it (the
# retired CPU runs' checkpoints, if restored from history, are 42 MB: move them aside).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=training-runs/demo/data
bash training-runs/demo/continue.sh --data-only   # the demo's cohort, data and reconstructions
bash benchmarks/gpu_wheels.sh "$data"
# training needs no dipy (10.6 MB): a call that only trains carries these two wheels instead,
# which keeps tree + data + wheels under the 64 MiB that travel
rm -rf .device-wheels-train && mkdir .device-wheels-train
cp .device-wheels/monai-*.whl .device-wheels/nibabel-*.whl .device-wheels-train/
rm -rf .device-data && mkdir .device-data
cp -r "$data"/{dataset.json,subjects.csv,images,labels,masks,fractions} .device-data/
du -sh .device-wheels .device-wheels-train .device-data
