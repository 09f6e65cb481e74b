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
# The runs train one after the other (side by side on one H100 each ran about 3x slower): the
# LDM gets LDM_SHARE (0.6) of the time left after a short probe of each, the refiner the
# rest. Step counts come from the probes: steps = 90 % of what fits, so each run finishes its
# whole cosine schedule. A run that would still overrun gets SIGTERM from `timeout`, saves a
# checkpoint at its current step and stops cleanly (continue with --resume).
# FROM_SHIPPED=1 starts each run from the shipped demo checkpoint's weights (--init-from: a new
# schedule that builds on the shipped models instead of starting from scratch).
# RUNS (default "ldm refiner") picks the runs: RUNS=ldm or RUNS=refiner gives that one the
# whole budget and neither probes nor trains the other.
# LDM_CONFIG (default ldm.json beside this script) is the LDM's recipe; LATENTS=DIR trains the
# LDM on the latents in DIR (`realdeal train ldm --latents`: DATA then needs only its
# dataset.json, e.g. the population's float16 latents, training-runs/ldm-population). The
# reconstructions are made only when the refiner trains.
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

# The runs in RUNS (default "ldm refiner"), each with its own flags.
runs=${RUNS:-ldm refiner}
for kind in $runs; do
    case $kind in ldm | refiner) ;; *) echo "RUNS: unknown run '$kind' (ldm, refiner)" >&2; exit 2 ;; esac
done
flags() {  # the run's own flags: its config, and the LDM's autoencoder (and latents)
    if [ "$1" = ldm ]; then
        echo "--config ${LDM_CONFIG:-$here/ldm.json} --autoencoder $AE${LATENTS:+ --latents $LATENTS}"
    else echo "--config $here/refiner.json"; fi
}

# The shipped autoencoder's reconstructions, the refiner's inputs (on the CPU, like
# `realdeal demo`).
if [[ " $runs " == *" refiner "* ]] && [ ! -f "$data/reconstructions/reconstruct_config.json" ]; then
    rd -q reconstruct --autoencoder "$AE" --data "$data" --device cpu
    echo "[$(elapsed) s] reconstructions ready"
fi

# Probe: PROBE_STEPS (150) steps of each, one after the other (as the real runs go).
probe="$out/probe"
rm -rf "$probe"
for kind in $runs; do
    rd -q train "$kind" $(flags "$kind") --data "$data" -o "$probe/$kind" \
        --steps "${PROBE_STEPS:-150}" --log-every 50 --checkpoint-every 100000 ${EXTRA_ARGS:-} \
        > "$out/probe-$kind.log" 2>&1
done
left=$(( budget - $(elapsed) - 10 ))
if [ "$left" -lt $(( 10 * $(wc -w <<< "$runs") )) ]; then
    echo "[$(elapsed) s] the probes left ${left} s of the ${budget} s budget: too little to" \
        "train (10 s a run at least); give a larger budget" >&2
    exit 3
fi
share() {  # the seconds of run $1: LDM_SHARE (0.6) for the LDM when both run, else all
    if [ "$(wc -w <<< "$runs")" -lt 2 ]; then echo "$left"
    elif [ "$1" = ldm ]; then python3 -c "print(int($left * ${LDM_SHARE:-0.6}))"
    else python3 -c "print($left - int($left * ${LDM_SHARE:-0.6}))"; fi
}
steps_for() {  # steps/s of the probe's last 50-step window × 0.9 × (seconds − 20 s start-up)
    python3 - "$probe/$1/metrics.jsonl" "$probe/$1/config.json" "$2" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
batch = json.load(open(sys.argv[2]))["config"]["train"]["batch_size"]
rate = recs[-1]["samples_per_s"] / batch
print(max(100, int(rate * 0.9 * (float(sys.argv[3]) - 20) / 100) * 100))
PY
}
declare -A secs steps
plan=""
for kind in $runs; do
    secs[$kind]=$(share "$kind"); steps[$kind]=$(steps_for "$kind" "${secs[$kind]}")
    plan+=" $kind ${steps[$kind]} steps in ${secs[$kind]} s;"
done
echo "[$(elapsed) s] probes done; ${left} s left:${plan}"
rm -rf "$probe" "$out/ldm" "$out/refiner"

# One after the other: side by side on one H100 each ran ~3x slower.
init() { [ "${FROM_SHIPPED:-0}" = 1 ] && echo "--init-from $repo/src/realdeal/demo_checkpoints/$1.pt" || true; }
rc=0
for kind in $runs; do
    timeout -s TERM "${secs[$kind]}" python3 -m realdeal train "$kind" $(flags "$kind") \
        --data "$data" -o "$out/$kind" --steps "${steps[$kind]}" $(init "$kind") ${EXTRA_ARGS:-} \
        > "$out/train-$kind.log" 2>&1 || rc=$?
    echo "[$(elapsed) s] $kind done (exit $rc)"
done
echo "[$(elapsed) s] training done (exit $rc)"
tail -n 2 "$out"/train-*.log
exit $rc
