#!/usr/bin/env bash
# Stage what `vitserve bench gpu` needs on the device machine (docs/gpu.md) into .whl/device/ (ignored):
# cp312 wheels of the pinned serving dependencies (deploy/requirements/gpu.txt) and onnxruntime-gpu, and
# wrk with its LuaJIT from Debian, as one bundle split into parts small enough that each travels in one
# `run` call beside the working tree (64 MiB a call, tree included). Prints the calls to make.
#
# The device image has Python 3.12 with torch (CUDA 13), numpy, onnx, protobuf, pillow and the NVIDIA
# CUDA/cuDNN wheels (.library/device/KINDS.md); those stay as they are there and are not carried.
#
# Usage, in the checkout whose tree the `run` calls send: deploy/device/stage.sh [PART_MIB]
# PY=3.11 stages for this machine's Python instead, to rehearse install.sh and run-suite.sh here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=$ROOT/.whl/device
PYTHON=${PYTHON:-python3}
PY=${PY:-3.12}
# The device image's own copies of these serve torch there; ours would shadow them. (nvidia-ml-py is
# carried: BentoML imports it at start-up.)
SKIP='^(numpy|nvidia-cublas|nvidia-cuda-nvrtc|nvidia-cuda-runtime|nvidia-cudnn-cu13|nvidia-cufft|nvidia-curand|nvidia-nvjitlink|onnx|protobuf|ml_dtypes|pillow|typing_extensions)=='

# What travels on every call besides the part: tracked and untracked-not-ignored files.
tree_kib=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | du -c -k --files0-from=- 2>/dev/null | tail -1 | cut -f1)
PART_MIB=${1:-$(( (64 * 1024 - tree_kib - 3 * 1024) / 1024 ))}

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/wheels" "$staging/deb"
grep -v '^#' "$ROOT/deploy/requirements/gpu.txt" | cut -d' ' -f1 | grep -Eiv "$SKIP" >"$staging/requirements.txt"
{ "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$staging/wheels" \
    --only-binary=:all: --python-version="$PY" --implementation=cp --abi="cp${PY/./}" --abi=abi3 --abi=none \
    --platform=manylinux_2_28_x86_64 --platform=manylinux_2_27_x86_64 --platform=manylinux_2_26_x86_64 \
    --platform=manylinux_2_17_x86_64 --platform=manylinux2014_x86_64 --platform=manylinux_2_12_x86_64 \
    --platform=manylinux2010_x86_64 --platform=manylinux_2_5_x86_64 --platform=manylinux1_x86_64 \
    --platform=linux_x86_64 --platform=any \
    -r "$staging/requirements.txt"; } 2>&1 | { grep -v '^WARNING: Location' || true; }
# wrk (the serve stage's load generator) and the LuaJIT it links; libssl3 and libc are on the image.
(cd "$staging/deb" && apt-get download -qq -o APT::Sandbox::User=root wrk libluajit-5.1-2 libluajit-5.1-common)

rm -rf "$DEST"
mkdir -p "$DEST"
tar -cf "$staging/bundle.tar" -C "$staging" wheels deb
split -b "${PART_MIB}M" -d -a 2 "$staging/bundle.tar" "$DEST/part-"
parts=("$DEST"/part-*)
echo "$(sha256sum "$staging/bundle.tar" | cut -d' ' -f1) ${#parts[@]}" >"$DEST/MANIFEST"

echo "bundle: $(du -m "$staging/bundle.tar" | cut -f1) MiB in ${#parts[@]} parts of <= $PART_MIB MiB;" \
    "working tree $(( tree_kib / 1024 )) MiB" >&2
echo "The device calls, back to back (a machine idle for 30 s is given back, and its parts with it):"
last=$(( ${#parts[@]} - 1 ))
for i in "${!parts[@]}"; do
    part=.whl/device/$(basename "${parts[$i]}")
    if [ "$i" -lt "$last" ]; then
        echo "  run(carry=[\"$part\"], timeout_s=120, command=\"bash deploy/device/receive.sh $part\")"
    else
        echo "  run(carry=[\"$part\", \".whl/device/MANIFEST\"], timeout_s=600," \
            "command=\"bash deploy/device/receive.sh $part && bash deploy/device/run-suite.sh\")"
    fi
done
