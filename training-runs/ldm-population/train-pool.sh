#!/usr/bin/env bash
# Start or continue the LDM's CPU run on the grown training pool (one thread, in the
# background): fine-tuning the 12,800-step weights on 2,304 training subjects; see README.md.
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 REALDEAL_NO_PROGRESS=1
start=(--init-from ldm/snapshots/step-0012800.pt)
[ -f ldm-pool/checkpoint.pt ] && start=(--resume)
exec realdeal train ldm --config ldm-pool.json --data pool/data --latents pool/latents \
    --autoencoder ../../src/realdeal/demo_checkpoints/autoencoder.pt -o ldm-pool "${start[@]}"
