#!/usr/bin/env bash
# Run HERE before the device call: the carried files (under 64 MiB with the working tree).
#   .device-wheels/  monai, nibabel, dipy wheels + the quality input (benchmarks/gpu_wheels.sh)
#   .device-data/    the demo's prepared dataset without reconstructions (made there)
# The resumable CPU runs' checkpoints (training-runs/demo/*/checkpoint.pt, 42 MB) are tracked
# files and would travel too: move them aside for the call (this script prints how).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=training-runs/demo/data
bash benchmarks/gpu_wheels.sh "$data"
rm -rf .device-data && mkdir .device-data
cp -r "$data"/{dataset.json,subjects.csv,images,labels,masks,fractions} .device-data/
du -sh .device-wheels .device-data
