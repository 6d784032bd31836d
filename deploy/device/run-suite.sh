#!/usr/bin/env bash
# On the device machine, after the last part arrived: install, check that CUDA is really there, run the
# GPU suite into $OUT/gpu (results.json, summary.md, stage logs: what comes back). Extra arguments go
# to the suite (e.g. --stages serve, --budget-model-s 120).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
bash deploy/device/install.sh || exit $?
# shellcheck source=/dev/null
source /tmp/vitserve-env.sh
OUT=${OUT:-/tmp/vitserve-out}
mkdir -p "$OUT/gpu"
{
    nvidia-smi
    "${PYTHON:-python3}" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.__file__, o.get_available_providers())'
    command -v wrk && wrk -v 2>&1 | head -1
} 2>&1 | tee "$OUT/preflight.log"
"${PYTHON:-python3}" -m vitserve.bench.gpu_suite --device cuda --out "$OUT/gpu" --work /tmp/vitserve-gpu-work "$@" 2>&1 |
    tee "$OUT/run.log"
