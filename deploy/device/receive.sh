#!/usr/bin/env bash
# On the device machine: keep one part of deploy/device/stage.sh's bundle outside the working tree (each
# call replaces the tree; /tmp lasts as long as the machine), and say which parts are there so far.
# The first call also prints the machine's facts, at no extra cost.
set -euo pipefail
STAGE=/tmp/vitserve-stage
mkdir -p "$STAGE"
if [ -z "$(ls -A "$STAGE")" ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())' || true
    ldd --version | head -1 || true
fi
cp "$1" "$STAGE/"
echo "parts here:" "$STAGE"/part-*
