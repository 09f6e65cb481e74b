#!/usr/bin/env bash
# The one device call of a session that is lent a GPU (run THERE, from the repository root):
#   1. install the carried wheels (.device-wheels, from benchmarks/gpu_wheels.sh);
#   2. train the demo's LDM and refiner for TRAIN_S seconds (training-runs/demo-gpu/train.sh on
#      the carried dataset .device-data), packed into $OUT/runs.tar.* (15 MB parts);
#   3. benchmarks/gpu_check.py with the rest of TOTAL_S.
# (STAGES picks and orders steps 2 and 3, below.)
# Prepared here with training-runs/demo-gpu/prepare.sh, then:
#   run(command="bash training-runs/demo-gpu/device_call.sh", carry=[".device-wheels", ".device-data"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/../.."
t0=$(date +%s)
TOTAL_S=${TOTAL_S:-585}; TRAIN_S=${TRAIN_S:-290}
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHEELS:-.device-wheels}"/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "[$(( $(date +%s) - t0 )) s] wheels installed"

train() {
    local runs=/tmp/demo-gpu
    bash training-runs/demo-gpu/train.sh .device-data "$TRAIN_S" "$runs" 2>&1 | tee "$OUT/train.log"
    (cd "$runs" && tar cf - ./*/checkpoint.pt ./*/config.json ./*/metrics.jsonl ./*.log) | split -b 15000000 - "$OUT/runs.tar."
    ls -la "$OUT"
}
check() {
    local left=$(( TOTAL_S - ($(date +%s) - t0) ))
    echo "[$(( $(date +%s) - t0 )) s] gpu_check with ${left} s"
    timeout -s KILL "$left" python3 benchmarks/gpu_check.py --budget-s $(( left - 25 )) \
        --out "$OUT/gpu_check.json" ${GPU_CHECK_ARGS:-} > "$OUT/gpu_check.log" 2>&1
    echo "gpu_check exit $?"
    tail -n 60 "$OUT/gpu_check.log"
}
# STAGES (default "train check"): what this call does, in order; a session whose device time
# allows two calls can give each its own (STAGES=check, then STAGES=train on the warm machine).
for stage in ${STAGES:-train check}; do
    case $stage in
        train) train ;;
        check) check ;;
        *) echo "STAGES: unknown stage '$stage' (train, check)" >&2; exit 2 ;;
    esac
done
