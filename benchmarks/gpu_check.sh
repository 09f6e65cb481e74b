#!/usr/bin/env bash
# Run THERE, on the GPU machine, from the repository root, with .device-wheels carried
# (fill it here first with benchmarks/gpu_wheels.sh):
#   run(command="bash benchmarks/gpu_check.sh", carry=[".device-wheels"], timeout_s=540)
# Installs the carried wheels into /tmp/site (no index needed), then runs gpu_check.py;
# arguments are passed on (e.g. --parts a b, --budget-s 300).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device-wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 benchmarks/gpu_check.py "$@"
