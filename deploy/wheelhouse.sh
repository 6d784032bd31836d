#!/usr/bin/env bash
# Fill build/wheelhouse/ with every wheel the image installs: the project's own wheel (code and the
# shipped model, built from this checkout) and the hash-pinned dependencies of deploy/requirements/.
#
# The image build never reaches a package index: it installs from this folder with --no-index, so
# builds are reproducible and work where the build sandbox has no network (or no certificate chain).
#
# Usage: deploy/wheelhouse.sh [cpu|gpu]   (default gpu: adds the CUDA 13 / cuDNN 9 wheels, 1.3 GB)
set -euo pipefail

VARIANT=${1:-gpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
OUT=$ROOT/build/wheelhouse
REQUIREMENTS=$ROOT/deploy/requirements/$VARIANT.txt

[[ -f $REQUIREMENTS ]] || { echo "unknown variant $VARIANT: no $REQUIREMENTS" >&2; exit 2; }
mkdir -p "$OUT"

# A stale project wheel of the same version would be picked up by the image: always rebuild it.
rm -f "$OUT"/vitserve-*.whl
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$OUT" "$ROOT"

# Same platform flags as deploy/lock_requirements.py: the image's platform, not this machine's.
download() {
    "$PYTHON" -m pip download --quiet --no-deps --require-hashes --dest "$OUT" \
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

# The model must travel inside the wheel, else the image starts without a default model.
wheel=$(ls "$OUT"/vitserve-*.whl)
listing=$("$PYTHON" -m zipfile -l "$wheel")  # not piped: grep -q would close the pipe early
if ! grep -q 'vitserve/models/digits-vit/model' <<<"$listing"; then
    echo "$wheel carries no models/digits-vit artifact: export the default model first" >&2
    # Only for trying the image with a model mounted through VITSERVE_MODEL_DIR.
    [[ ${ALLOW_NO_MODEL:-0} == 1 ]] || exit 1
fi
echo "wheelhouse ready: $OUT ($(du -sh "$OUT" | cut -f1), variant $VARIANT)"
