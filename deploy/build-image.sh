#!/usr/bin/env bash
# Build the vitserve image from this checkout: what `make image` runs. Needs podman (or Docker with
# BuildKit), python3 with venv, and the package registries; it makes everything else itself: the
# build environment (deploy/build-env.sh), the wheelhouse (deploy/wheelhouse.sh) and, for a
# localhost/vitserve-base:* base, the base image (deploy/make-local-base.sh, as root).
#
# Usage: make image [VARIANT=cpu|gpu] [IMAGE=...] [BASE_IMAGE=...]
#   VARIANT       cpu (default) or gpu (adds CUDA 13 / cuDNN 9 for ONNX Runtime's CUDA provider)
#   IMAGE         tag to build (default vitserve:<version>-cpu, or vitserve:<version> for gpu,
#                 the tags deploy/k8s/overlays expect)
#   BASE_IMAGE    base image (default: the Dockerfile's, python:3.11.14-slim-bookworm);
#                 localhost/vitserve-base:bookworm where no image registry is reachable
#   ENGINE        podman or docker (default: podman if installed, else docker)
#   ENGINE_FLAGS  more `build` arguments, e.g. "--runtime runc --ulimit nofile=1024:1024"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VARIANT=${VARIANT:-cpu}
BASE_IMAGE=${BASE_IMAGE:-}
ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
read -r -a engine_flags <<<"${ENGINE_FLAGS:-}"

started=$(date +%s)
step() { printf '[%4ds] %s\n' "$(($(date +%s) - started))" "$*"; }
command -v "$ENGINE" >/dev/null || { echo "no container engine: install podman (or Docker)" >&2; exit 1; }

base_s=0
if [[ $BASE_IMAGE == localhost/vitserve-base:* ]] && ! "$ENGINE" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    step "making the local base image $BASE_IMAGE"
    "$ROOT/deploy/make-local-base.sh" "$BASE_IMAGE"
    base_s=$(($(date +%s) - started))
fi

step "filling build/wheelhouse ($VARIANT)"
wheelhouse_started=$(date +%s)
"$ROOT/deploy/wheelhouse.sh" "$VARIANT"
wheelhouse_s=$(($(date +%s) - wheelhouse_started))

if [[ -z ${IMAGE:-} ]]; then
    wheel=$(basename "$(ls "$ROOT"/build/wheelhouse/vitserve-*.whl)")
    version=${wheel#vitserve-}
    version=${version%%-*}
    IMAGE=vitserve:$version-$VARIANT
    [[ $VARIANT != gpu ]] || IMAGE=vitserve:$version
fi

build_args=(--build-arg "VARIANT=$VARIANT" --tag "$IMAGE" --file "$ROOT/Dockerfile")
[[ -z $BASE_IMAGE ]] || build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
step "building $IMAGE with $ENGINE"
build_started=$(date +%s)
if [[ $(basename "$ENGINE") == podman ]]; then
    # The docker format keeps HEALTHCHECK, which OCI image configs cannot carry.
    podman build --format docker --layers "${engine_flags[@]}" "${build_args[@]}" "$ROOT"
else
    # RUN --mount (the bind-mounted wheelhouse) needs BuildKit, the default from Docker 23 on.
    DOCKER_BUILDKIT=1 "$ENGINE" build "${engine_flags[@]}" "${build_args[@]}" "$ROOT"
fi
build_s=$(($(date +%s) - build_started))

size=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE")
step "built $IMAGE: base ${base_s}s, wheelhouse ${wheelhouse_s}s, build ${build_s}s, image $((size / 1000000)) MB"
