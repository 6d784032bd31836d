#!/usr/bin/env bash
# Print the Python that builds the image's wheels and locks its requirements (build/image-env),
# creating it first where it is missing. It is not the development .venv: a fresh clone has none,
# and building the image must not depend on `make serve` or `make test` having run.
#
# It holds pip and nothing else. pip builds the project wheel in an isolated environment with the
# [build-system] requirements of pyproject.toml, so that what the wheel needs is declared there.
#
# Usage: deploy/build-env.sh   (PYTHON=python3.12 picks the interpreter the environment is made from)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ENV_DIR=$ROOT/build/image-env
# --build-constraint (the test of the declared setuptools floor) needs pip >= 25.2; pinned so that
# every machine resolves and builds alike.
PIP_VERSION=26.3

if [[ ! -x $ENV_DIR/bin/python ]] || ! "$ENV_DIR/bin/python" -m pip --version 2>/dev/null | grep -q "^pip $PIP_VERSION "; then
    rm -rf "$ENV_DIR"
    "${PYTHON:-python3}" -m venv "$ENV_DIR" >&2 \
        || { echo "cannot create $ENV_DIR: on Debian/Ubuntu, apt-get install -y python3-venv" >&2; exit 1; }
    "$ENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION" >&2
fi
echo "$ENV_DIR/bin/python"
