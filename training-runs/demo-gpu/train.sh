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
# The runs train one after the other (side by side on one GPU each ran about 3x slower, session
# 6): the LDM gets LDM_SHARE (0.6) of the time left after a short probe of each, the refiner the
# rest. Step counts come from the probes: steps = 90 % of what fits, so each run finishes its
# whole cosine schedule. A run that would still overrun gets SIGTERM from `timeout`, saves a
# checkpoint at its current step and stops cleanly (continue with --resume).
# FROM_SHIPPED=1 starts each run from the shipped demo checkpoint's weights (--init-from: a new
# schedule that builds on the last session's models instead of starting from scratch).
# RUNS (default "ldm refiner") picks the runs: RUNS=ldm gives the LDM the whole budget and
# neither probes nor trains the refiner.
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

# Probe: PROBE_STEPS (150) steps of each, one after the other (as the real runs go).
probe="$out/probe"
rm -rf "$probe"
rd -q train ldm --config "$here/ldm.json" --data "$data" --autoencoder "$AE" -o "$probe/ldm" \
    --steps "${PROBE_STEPS:-150}" --log-every 50 --checkpoint-every 100000 ${EXTRA_ARGS:-} \
    > "$out/probe-ldm.log" 2>&1
runs=" ${RUNS:-ldm refiner} "
share=${LDM_SHARE:-0.6}
if [[ "$runs" == *" refiner "* ]]; then
    rd -q train refiner --config "$here/refiner.json" --data "$data" -o "$probe/refiner" \
        --steps "${PROBE_STEPS:-150}" --log-every 50 --checkpoint-every 100000 ${EXTRA_ARGS:-} \
        > "$out/probe-refiner.log" 2>&1
else
    share=1
fi
left=$(( budget - $(elapsed) - 10 ))
t_ldm=$(python3 -c "print(int($left * $share))"); t_ref=$(( left - t_ldm ))
steps_for() {  # steps/s of the probe's last 50-step window × 0.9 × (seconds − 20 s start-up)
    python3 - "$probe/$1/metrics.jsonl" "$probe/$1/config.json" "$2" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
batch = json.load(open(sys.argv[2]))["config"]["train"]["batch_size"]
rate = recs[-1]["samples_per_s"] / batch
print(max(100, int(rate * 0.9 * (float(sys.argv[3]) - 20) / 100) * 100))
PY
}
n_ldm=$(steps_for ldm "$t_ldm"); n_ref=0
[[ "$runs" == *" refiner "* ]] && n_ref=$(steps_for refiner "$t_ref")
echo "[$(elapsed) s] probes done; ${left} s left: ldm ${n_ldm} steps in ${t_ldm} s, refiner ${n_ref} steps in ${t_ref} s"
rm -rf "$probe" "$out/ldm" "$out/refiner"

# One after the other: side by side on one GPU each ran ~3x slower (session 6).
init() { [ "${FROM_SHIPPED:-0}" = 1 ] && echo "--init-from $repo/src/realdeal/demo_checkpoints/$1.pt" || true; }
rc=0
timeout -s TERM "$t_ldm" python3 -m realdeal train ldm --config "$here/ldm.json" --data "$data" \
    --autoencoder "$AE" -o "$out/ldm" --steps "$n_ldm" $(init ldm) ${EXTRA_ARGS:-} \
    > "$out/train-ldm.log" 2>&1 || rc=$?
echo "[$(elapsed) s] ldm done (exit $rc)"
if [ "$n_ref" -gt 0 ]; then  # (timeout 0 would mean no limit at all)
    timeout -s TERM "$t_ref" python3 -m realdeal train refiner --config "$here/refiner.json" \
        --data "$data" -o "$out/refiner" --steps "$n_ref" $(init refiner) ${EXTRA_ARGS:-} \
        > "$out/train-refiner.log" 2>&1 || rc=$?
fi
echo "[$(elapsed) s] training done (exit $rc)"
tail -n 2 "$out"/train-*.log
exit $rc
