#!/usr/bin/env bash
# On the GPU host, after install.sh: check that CUDA is really there, run the GPU suite, and pack what it
# wrote into one file to bring back (results.json, summary.md, the stage logs, the preflight).
# Extra arguments go to the suite (e.g. --stages serve, --budget-model-s 120).
#
# Usage: bash run-suite.sh [SUITE ARGUMENTS]   (PREFIX and PYTHON as for install.sh; OUT: results folder)
set -uo pipefail
PREFIX=${PREFIX:-${TMPDIR:-/tmp}/vitserve-gpu}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PREFIX/out}
# shellcheck source=/dev/null
source "$PREFIX/env.sh" || exit 1
mkdir -p "$OUT/gpu"
{
    nvidia-smi
    "$PYTHON" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.__file__, o.get_available_providers())'
    "$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, torch.cuda.is_available())'
    command -v wrk && wrk -v 2>&1 | head -1
} 2>&1 | tee "$OUT/preflight.log"
"$PYTHON" -m vitserve.bench.gpu_suite --device cuda --out "$OUT/gpu" --work "$PREFIX/work" "$@" 2>&1 |
    tee "$OUT/run.log"
status=${PIPESTATUS[0]}
tar -czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
echo "results: $OUT.tar.gz (suite exit status $status)"
exit "$status"
