#!/usr/bin/env bash
# Build the image with `make image`, as docs/deploy.md says, run it the way Kubernetes will (read-only
# root, non-root user, no capabilities), wait for /readyz, classify the shipped digit samples (checked
# against samples/labels.json), check /metrics, stop it. Exits non-zero on any failure.
#
# Usage (as root, with podman, from a fresh clone or any checkout): deploy/container-smoke.sh
#   BASE_IMAGE=...   base image to build from (default: the local debootstrap stand-in for
#                    python:3.11-slim-bookworm, which `make image` makes if missing)
#   VARIANT=cpu|gpu  which wheel set to install (default cpu, as `make image`'s)
#   MODEL_DIR=...    serve this model directory, mounted read-only, instead of the shipped one
#   PORT=...         host port on 127.0.0.1 (default 3990)
#   EXTRA_RUN_ARGS=  more `podman run` arguments, e.g. "--device nvidia.com/gpu=all" on a GPU host
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-localhost/vitserve-base:bookworm}
VARIANT=${VARIANT:-cpu}
IMAGE=${IMAGE:-localhost/vitserve:smoke-$VARIANT}
PORT=${PORT:-3990}
NAME=vitserve-smoke-$$
READY_TIMEOUT_S=${READY_TIMEOUT_S:-180}
# The sandbox this was written on needs runc (apt-get install runc) and explicit ulimits.
PODMAN_OPTS=(--runtime "${OCI_RUNTIME:-runc}")
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

started=$(date +%s)
step() { printf '[%4ds] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
    if podman container exists "$NAME" 2>/dev/null; then
        podman logs "$NAME" >"${TMPDIR:-/tmp}/$NAME.log" 2>&1 || true
        podman rm --force "$NAME" >/dev/null 2>&1 || true
        echo "container log kept in ${TMPDIR:-/tmp}/$NAME.log" >&2
    fi
}
trap cleanup EXIT

command -v podman >/dev/null || fail "podman missing: apt-get install -y podman buildah runc debootstrap"
command -v make >/dev/null || fail "make missing: apt-get install -y make"

step "make image VARIANT=$VARIANT IMAGE=$IMAGE BASE_IMAGE=$BASE_IMAGE"
make -C "$ROOT" image VARIANT="$VARIANT" IMAGE="$IMAGE" BASE_IMAGE="$BASE_IMAGE" ENGINE=podman \
    ENGINE_FLAGS="${PODMAN_OPTS[*]} ${LIMITS[*]}"

step "checking the image carries no torch and no compiler, and its working directory"
# The working directory must be in the image itself: root's, empty and not writable by the service
# (a directory the engine makes at start would belong to uid 10001).
podman run --rm "${PODMAN_OPTS[@]}" "${LIMITS[@]}" --user 10001:10001 "$IMAGE" python3 -c '
import importlib.util, os, shutil, sys
bad = ["carries " + m for m in ("torch", "pip", "setuptools") if importlib.util.find_spec(m)]
bad += ["carries " + c for c in ("gcc", "cc", "g++", "make") if shutil.which(c)]
cwd = os.getcwd()
if os.stat(cwd).st_uid != 0 or os.access(cwd, os.W_OK) or os.listdir(cwd):
    bad.append(f"has a working directory {cwd} that is not root-owned, read-only and empty")
sys.exit("the image " + "; ".join(bad) if bad else 0)' || fail "the runtime image is not as the Dockerfile says"

if [[ $VARIANT == gpu ]]; then
    # No GPU here: check instead that every library ONNX Runtime's CUDA provider links resolves
    # inside the image, except libcuda.so.1, which the NVIDIA container toolkit mounts from the host
    # driver. cuDNN is dlopen()ed at run time, so its presence on LD_LIBRARY_PATH is checked too.
    step "checking the CUDA provider's libraries resolve in the image"
    podman run --rm "${PODMAN_OPTS[@]}" "${LIMITS[@]}" "$IMAGE" sh -c '
        set -e
        site=/opt/vitserve/lib/python3.11/site-packages
        missing=$(ldd "$site/onnxruntime/capi/libonnxruntime_providers_cuda.so" | grep "not found" || true)
        [ "$(echo "$missing" | grep -v "^$" | grep -vc libcuda.so.1)" = 0 ] || { echo "$missing"; exit 1; }
        test -f "$site/nvidia/cudnn/lib/libcudnn.so.9"' || fail "the GPU image lacks CUDA libraries"
fi

read -r -a extra_run_args <<<"${EXTRA_RUN_ARGS:-}"
model_args=()
sample_dir=$ROOT/models/digits-vit/samples
if [[ -n ${MODEL_DIR:-} ]]; then
    model_args=(--volume "$(cd "$MODEL_DIR" && pwd):/models/custom:ro" --env VITSERVE_MODEL_DIR=/models/custom)
    sample_dir=$MODEL_DIR/samples
fi
# samples/labels.json maps each sample file (PNG, JPEG, WebP, BMP: every decoder the image needs)
# to the label the model must give it.
[[ -f $sample_dir/labels.json ]] || fail "no samples/labels.json in $sample_dir"
mapfile -t samples < <(python3 -c 'import json, sys
for name, label in sorted(json.load(open(sys.argv[1])).items()):
    print(name, label)' "$sample_dir/labels.json")
((${#samples[@]} > 0)) || fail "samples/labels.json in $sample_dir lists no sample"

step "starting $NAME: read-only root, uid 10001, all capabilities dropped"
run_started=$(date +%s)
podman run --detach --name "$NAME" "${PODMAN_OPTS[@]}" "${LIMITS[@]}" \
    --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,size=256m,mode=1777 \
    --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges \
    --publish "127.0.0.1:$PORT:3000" "${model_args[@]}" "${extra_run_args[@]}" "$IMAGE" >/dev/null

base=http://127.0.0.1:$PORT
until curl --silent --fail --max-time 2 "$base/readyz" >/dev/null; do
    [[ $(podman inspect --format '{{.State.Running}}' "$NAME") == true ]] || fail "container exited"
    (($(date +%s) - run_started < READY_TIMEOUT_S)) || fail "not ready after ${READY_TIMEOUT_S}s"
    sleep 1
done
ready_s=$(($(date +%s) - run_started))
step "ready after ${ready_s}s"

curl --silent --fail --max-time 2 "$base/livez" >/dev/null || fail "/livez is not 200"
# The Dockerfile's HEALTHCHECK command itself, run once by hand (podman has no timer for it here).
podman healthcheck run "$NAME" 2>/dev/null || fail "the image's HEALTHCHECK reports unhealthy"
for entry in "${samples[@]}"; do
    read -r name expected <<<"$entry"
    answer=$(curl --silent --show-error --fail --max-time 30 --form "image=@$sample_dir/$name" "$base/classify") \
        || fail "/classify failed for $name"
    label=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["label"])' "$answer")
    [[ $label == "$expected" ]] || fail "$name was classified $label, labels.json says $expected"
done
step "classified all ${#samples[@]} samples as samples/labels.json says"

metrics=$(curl --silent --fail --max-time 5 "$base/metrics") || fail "/metrics failed"
for series in vitserve_images_classified_total vitserve_batch_size_bucket vitserve_queue_wait_seconds_bucket \
    vitserve_model_info vitserve_request_seconds_bucket; do
    grep -q "^$series" <<<"$metrics" || fail "/metrics lacks $series"
done
step "/metrics carries the vitserve_* series"

step "stopping (SIGTERM, 30 s grace)"
stop_started=$(date +%s)
podman stop --time 30 "$NAME" >/dev/null
stop_s=$(($(date +%s) - stop_started))
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
((stop_s < 30)) || fail "the server ignored SIGTERM and was killed after 30 s"
podman rm "$NAME" >/dev/null

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "PASS container smoke: ready ${ready_s}s, stop ${stop_s}s (exit $exit_code)," \
    "image $((size / 1000000)) MB ($size B), total $(($(date +%s) - started))s"
