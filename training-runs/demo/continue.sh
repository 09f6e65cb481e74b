#!/usr/bin/env bash
# Start or continue the resumable CPU training runs of the demo's LDM and refiner, then (with
# --export) write them as the shipped demo checkpoints. See training-runs/README.md.
#
#   training-runs/demo/continue.sh              # train both runs (in parallel, one thread each)
#   training-runs/demo/continue.sh --export     # export the runs into src/realdeal/demo_checkpoints
#   training-runs/demo/continue.sh --data-only  # only the cohort, prepared data, reconstructions
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
export REALDEAL_NO_PROGRESS=1
AE="$repo/src/realdeal/demo_checkpoints/autoencoder.pt"

if [ "${1:-}" = "--export" ]; then
    exec realdeal export-demo-checkpoints --data data \
        --autoencoder "$repo/src/realdeal/demo_checkpoints" --ldm ldm --refiner refiner \
        --trained-on "${TRAINED_ON:-cpu (1 thread)}" \
        --made-by "training-runs/demo/continue.sh (realdeal train ldm/refiner --config RUN/config.json --resume until done)" \
        -o "$repo/src/realdeal/demo_checkpoints"
fi

# The demo's cohort and preparation (the same configs `realdeal demo` uses; the shipped
# manifest records them and `realdeal demo` only uses checkpoints trained on them).
if [ ! -f data/dataset.json ]; then
    realdeal -q cohort cohort -n 16 --spacing 2 --seed 0
    realdeal -q prepare 'cohort/*_T1w.nii.gz' -o data --labels '{dir}/{id}_dseg.nii.gz' \
        --shape 96 112 96 --window 32
fi
# The refiner learns from the shipped autoencoder's reconstructions.
if [ ! -f data/reconstructions/reconstruct_config.json ]; then
    realdeal -q reconstruct --autoencoder "$AE" --data data
fi

[ "${1:-}" = "--data-only" ] && exit 0

# One thread per run: two runs fill two cores and training is deterministic per thread count.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
resume() { [ -f "$1/checkpoint.pt" ] && echo "--resume" || true; }
realdeal train ldm --config ldm/config.json --data data --autoencoder "$AE" -o ldm \
    $(resume ldm) > ldm/train.log 2>&1 &
realdeal train refiner --config refiner/config.json --data data -o refiner \
    $(resume refiner) > refiner/train.log 2>&1 &
echo "training in the background; logs: $here/{ldm,refiner}/train.log and metrics.jsonl"
wait
