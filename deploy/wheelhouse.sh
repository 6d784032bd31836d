#!/usr/bin/env bash
# Fill build/wheelhouse/ with every wheel the image installs: the project's own wheel (code and the
# shipped model, built from this checkout by deploy/build-wheel.sh) and the hash-pinned dependencies
# of deploy/requirements/.
#
# The image build never reaches a package index: it installs from this folder with --no-index, so
# builds are reproducible and work where the build sandbox has no network (or no certificate chain).
#
# Usage: deploy/wheelhouse.sh [cpu|gpu]   (default cpu; gpu adds the CUDA 13 / cuDNN 9 wheels, 1.3 GB)
# WHEELHOUSE=DIR fills another folder; SKIP=REGEX leaves out the pins it matches (`name==...` lines),
# for a host that already has those packages (deploy/gpu-host/bundle.sh).
set -euo pipefail

VARIANT=${1:-cpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${WHEELHOUSE:-$ROOT/build/wheelhouse}
REQUIREMENTS=$ROOT/deploy/requirements/$VARIANT.txt

[[ -f $REQUIREMENTS ]] || { echo "unknown variant $VARIANT: no $REQUIREMENTS" >&2; exit 2; }
if [[ -n ${SKIP:-} ]]; then
    kept=$(mktemp)
    trap 'rm -f "$kept"' EXIT
    grep -Eiv "$SKIP" "$REQUIREMENTS" >"$kept"
    REQUIREMENTS=$kept
fi
PYTHON=$("$ROOT/deploy/build-env.sh")
"$ROOT/deploy/build-wheel.sh" "$OUT" >/dev/null

# Same platform flags as deploy/lock_requirements.py: the image's platform, not this machine's.
download() {
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes --dest "$OUT" \
        --only-binary=:all: --python-version=3.11 --implementation=cp --abi=cp311 \
        --platform=manylinux_2_28_x86_64 --platform=manylinux_2_27_x86_64 --platform=manylinux_2_26_x86_64 \
        --platform=manylinux_2_17_x86_64 --platform=manylinux2014_x86_64 --platform=manylinux_2_12_x86_64 \
        --platform=manylinux2010_x86_64 --platform=manylinux_2_5_x86_64 --platform=manylinux1_x86_64 \
        --platform=linux_x86_64 \
        -r "$REQUIREMENTS" "$@"
}
# Every pinned wheel already here, with the right hash: no need to ask the index again.
if ! download --no-index --find-links "$OUT" 2>/dev/null; then
    download
fi

echo "wheelhouse ready: $OUT ($(du -sh "$OUT" | cut -f1), variant $VARIANT)"
