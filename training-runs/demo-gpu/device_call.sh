#!/usr/bin/env bash
# One call on a GPU machine (run THERE, from the repository root):
#   1. install the carried wheels (WHEELS, default .device-wheels, from benchmarks/gpu_wheels.sh);
#   2. the stages in STAGES (default "train check"), in that order:
#      train: the demo's LDM and/or refiner for TRAIN_S seconds (training-runs/demo-gpu/train.sh
#             on the carried dataset .device-data), packed into $OUT/runs.tar.* (15 MB parts);
#      check: benchmarks/gpu_check.py with what is left of TOTAL_S (less TRAIN_S if a train
#             stage comes after it).
# Prepared here with training-runs/demo-gpu/prepare.sh. The working tree and the carried paths
# must stay under 64 MiB together; wheels + data + tree do not, so give each call one stage
# and carry what it needs:
#   run(command="STAGES=check bash training-runs/demo-gpu/device_call.sh", carry=[".device-wheels"], timeout_s=600)
#   run(command="STAGES=train WHEELS=.device-wheels-train bash training-runs/demo-gpu/device_call.sh",
#       carry=[".device-wheels-train", ".device-data"], timeout_s=600)
# DATA (default .device-data) is the carried dataset; a DATA/latents.tar.xz there (the
# population's float16 latents, training-runs/ldm-population/prepare_device.sh) is unpacked
# into DATA/latents and the LDM trains on it (LATENTS; RUNS=ldm). Other train.sh settings
# (RUNS, LDM_CONFIG, FROM_SHIPPED, EXTRA_ARGS, LDM_SHARE) pass through the environment.
set -uo pipefail
cd "$(dirname "$0")/../.."
t0=$(date +%s)
TOTAL_S=${TOTAL_S:-585}; TRAIN_S=${TRAIN_S:-290}
STAGES=${STAGES:-train check}
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
for stage in $STAGES; do  # a typo must not cost the minutes of the stages before it
    case $stage in train | check) ;; *) echo "STAGES: unknown stage '$stage' (train, check)" >&2; exit 2 ;; esac
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHEELS:-.device-wheels}"/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "[$(( $(date +%s) - t0 )) s] wheels installed"

train() {
    local runs=/tmp/demo-gpu data=${DATA:-.device-data}
    if [ -f "$data/latents.tar.xz" ]; then
        python3 -m tarfile -e "$data/latents.tar.xz" "$data" || exit 1
        export LATENTS="$data/latents"
        echo "[$(( $(date +%s) - t0 )) s] latents unpacked: $(ls "$LATENTS" | wc -l) files"
    fi
    bash training-runs/demo-gpu/train.sh "$data" "$TRAIN_S" "$runs" 2>&1 | tee "$OUT/train.log"
    if [ -n "${LATENTS:-}" ]; then
        # the population LDM: its resumable checkpoint (weights, EMA, optimizer) is too large
        # to come back; its slim EMA weights at the last step and at the last snapshot before
        # it do (training-runs/ldm-population/README.md)
        python3 training-runs/ldm-population/pack_run.py "$runs" | split -b 15000000 - "$OUT/runs.tar."
    else
        (cd "$runs" && tar cf - ./*/checkpoint.pt ./*/config.json ./*/metrics.jsonl ./*.log) | split -b 15000000 - "$OUT/runs.tar."
    fi
    ls -la "$OUT"
}
check() {  # $1: seconds to leave for the stages after it
    local left=$(( TOTAL_S - ($(date +%s) - t0) - $1 ))
    if [ "$left" -le 60 ]; then
        echo "gpu_check skipped: ${left} s left of TOTAL_S=${TOTAL_S}" | tee "$OUT/gpu_check.log"
        return
    fi
    echo "[$(( $(date +%s) - t0 )) s] gpu_check with ${left} s"
    timeout -s KILL "$left" python3 benchmarks/gpu_check.py --budget-s $(( left - 25 )) \
        --out "$OUT/gpu_check.json" ${GPU_CHECK_ARGS:-} > "$OUT/gpu_check.log" 2>&1
    echo "gpu_check exit $?"
    tail -n 60 "$OUT/gpu_check.log"
}
rest=$STAGES
for stage in $STAGES; do
    rest=${rest#*"$stage"}
    case $stage in
        train) train ;;
        check) if [[ " $rest " == *" train "* ]]; then check "$TRAIN_S"; else check 0; fi ;;
    esac
done
