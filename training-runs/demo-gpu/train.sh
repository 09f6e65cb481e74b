#!/usr/bin/env bash
# Train the demo's LDM and refiner on one GPU inside a fixed wall-clock budget (one device
# call), with the project's own commands. See training-runs/README.md ("demo-gpu").
#
#   training-runs/demo-gpu/train.sh DATA SECONDS OUTDIR
#
# DATA: the demo's prepared dataset (`realdeal prepare` output; reconstructions are made here
# with the shipped autoencoder if missing). SECONDS: the budget for everything this script
# does. OUTDIR: gets ldm/ and refiner/ (resumable run folders: checkpoint.pt, config.json,
# metrics.jsonl) and the logs.
#
# Both runs train at the same time on the one GPU (the networks are small: a step is bound by
# kernel launches and data loading, not by the GPU's arithmetic). Their step counts come from a
# 150-step probe of both (run together, as the real runs are): steps = 90 % of what fits in the
# time left, so each run finishes its whole cosine schedule. A run that would still overrun gets
# SIGTERM, saves a checkpoint at its current step and stops cleanly (continue with --resume).
# PROBE_STEPS (default 150) and EXTRA_ARGS (more `realdeal train` flags for all runs) exist for
# the CPU rehearsal of this script (e.g. PROBE_STEPS=4 EXTRA_ARGS="--batch-size 2").
set -euo pipefail
data=$1; budget=$2; out=$3
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
AE="$repo/src/realdeal/demo_checkpoints/autoencoder.pt"
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
rd() { python3 -m realdeal "$@"; }
export REALDEAL_NO_PROGRESS=1
mkdir -p "$out"

# The shipped autoencoder's reconstructions (on the CPU, like `realdeal demo`).
if [ ! -f "$data/reconstructions/reconstruct_config.json" ]; then
    rd -q reconstruct --autoencoder "$AE" --data "$data" --device cpu
fi
echo "[$(elapsed) s] reconstructions ready"

# Probe: 150 steps of each, together.
probe="$out/probe"
rm -rf "$probe"
rd -q train ldm --config "$here/ldm.json" --data "$data" --autoencoder "$AE" -o "$probe/ldm" \
    --steps "${PROBE_STEPS:-150}" --log-every 50 --checkpoint-every 100000 ${EXTRA_ARGS:-} \
    > "$out/probe-ldm.log" 2>&1 &
rd -q train refiner --config "$here/refiner.json" --data "$data" -o "$probe/refiner" \
    --steps "${PROBE_STEPS:-150}" --log-every 50 --checkpoint-every 100000 ${EXTRA_ARGS:-} \
    > "$out/probe-refiner.log" 2>&1 &
wait
left=$(( budget - $(elapsed) - 30 ))   # 30 s: start-up (caches, latents) and the last save
steps_for() {  # steps/s of the probe's last 50-step window (after warm-up) × 0.9 × left
    python3 - "$probe/$1/metrics.jsonl" "$2" "$left" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate = recs[-1]["samples_per_s"] / int(sys.argv[2])
print(max(100, int(rate * 0.9 * float(sys.argv[3]) / 100) * 100))
PY
}
batch() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['train']['batch_size'])" "$1"; }
n_ldm=$(steps_for ldm "$(batch "$probe/ldm/config.json")")
n_ref=$(steps_for refiner "$(batch "$probe/refiner/config.json")")
echo "[$(elapsed) s] probe done; ${left} s left: ldm ${n_ldm} steps, refiner ${n_ref} steps"
rm -rf "$probe"

rm -rf "$out/ldm" "$out/refiner"
timeout -s TERM "$left" python3 -m realdeal train ldm --config "$here/ldm.json" --data "$data" \
    --autoencoder "$AE" -o "$out/ldm" --steps "$n_ldm" ${EXTRA_ARGS:-} > "$out/train-ldm.log" 2>&1 &
p1=$!
timeout -s TERM "$left" python3 -m realdeal train refiner --config "$here/refiner.json" \
    --data "$data" -o "$out/refiner" --steps "$n_ref" ${EXTRA_ARGS:-} > "$out/train-refiner.log" 2>&1 &
p2=$!
rc=0
wait $p1 || rc=$?
wait $p2 || rc=$?
echo "[$(elapsed) s] training done (exit $rc)"
tail -n 2 "$out"/train-*.log
exit $rc
