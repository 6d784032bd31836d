#!/usr/bin/env bash
# Build the project's wheel (code and the shipped model) from this checkout into OUT_DIR, the way a
# fresh clone builds it: in an isolated build environment that pip fills from pyproject.toml's
# [build-system] requires, never from whatever setuptools the calling environment holds.
#
# The build backend's own warnings (setuptools' BuildBackendWarning, deprecations) are printed to
# stderr; pip hides them otherwise. tests/deploy/test_image_build.py fails on any.
#
# Usage: deploy/build-wheel.sh OUT_DIR
#   PIP_BUILD_CONSTRAINT=FILE   constrain the build requirements (the test pins them to their floor)
set -euo pipefail

OUT=${1:?usage: deploy/build-wheel.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=$("$ROOT/deploy/build-env.sh")
mkdir -p "$OUT"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# A stale project wheel of the same version would be picked up by the image: always rebuild it.
rm -f "$OUT"/vitserve-*.whl
# --ignore-requires-python: the wheel is pure Python and runs on the image's interpreter, not on the
# one building it. -v: the only way pip shows what the build backend says.
if ! "$PYTHON" -m pip wheel -v --disable-pip-version-check --no-deps --ignore-requires-python \
    --wheel-dir "$OUT" "$ROOT" >"$log" 2>&1; then
    cat "$log" >&2
    echo "building the vitserve wheel failed (output above)" >&2
    exit 1
fi
# Python's warning lines name their category (SetuptoolsDeprecationWarning: ...).
grep -E '[A-Za-z]+Warning: ' "$log" >&2 || true

wheel=$(ls "$OUT"/vitserve-*.whl)
# The model must travel inside the wheel, else the image starts without a default model.
listing=$("$PYTHON" -m zipfile -l "$wheel")  # not piped: grep -q would close the pipe early
if ! grep -q 'vitserve/models/digits-vit/model' <<<"$listing"; then
    echo "$wheel carries no models/digits-vit artifact: export the default model first" >&2
    # Only for trying the image with a model mounted through VITSERVE_MODEL_DIR.
    [[ ${ALLOW_NO_MODEL:-0} == 1 ]] || exit 1
fi
echo "$wheel"
