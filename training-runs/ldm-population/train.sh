#!/usr/bin/env bash
# Start or continue the demo LDM's CPU run on the population cohort (one thread, in the
# background); see README.md beside this file.
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 REALDEAL_NO_PROGRESS=1
resume=()
[ -f ldm/checkpoint.pt ] && resume=(--resume)
exec realdeal train ldm --config ldm.json --data data \
    --autoencoder ../../src/realdeal/demo_checkpoints/autoencoder.pt -o ldm "${resume[@]}"
