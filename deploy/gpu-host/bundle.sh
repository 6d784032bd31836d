#!/usr/bin/env bash
# Bundle what `vitserve bench gpu` needs on a GPU host without internet access (docs/gpu.md), on a
# machine that has it: the project's wheel and the pinned serving dependencies of
# deploy/requirements/gpu.txt (deploy/wheelhouse.sh gpu: hash-checked, for CPython 3.11 on x86-64
# Linux), wrk and its LuaJIT from Debian, and this folder's install.sh and run-suite.sh, as one
# tar file with its SHA-256 and install.sh beside it, in build/gpu-bundle/.
#
# The suite's export and model stages use the host's own PyTorch with CUDA: the packages it was built
# against (numpy, the NVIDIA CUDA/cuDNN wheels, ...) stay as the host has them and are not bundled
# (SKIP below; onnxruntime-gpu finds CUDA and cuDNN in those NVIDIA wheels).
#
# Usage: deploy/gpu-host/bundle.sh [PART_MIB]
#   PART_MIB splits the tar into parts of at most that many MiB, for a transfer that limits file size.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=$ROOT/build/gpu-bundle
NAME=vitserve-gpu
# Left to the host's PyTorch; nvidia-ml-py is bundled (BentoML imports it at start-up).
SKIP='^(numpy|nvidia-cublas|nvidia-cuda-nvrtc|nvidia-cuda-runtime|nvidia-cudnn-cu13|nvidia-cufft|nvidia-curand|nvidia-nvjitlink|onnx|protobuf|ml_dtypes|pillow|typing_extensions)=='

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/$NAME/deb"
SKIP=$SKIP WHEELHOUSE=$staging/$NAME/wheels "$ROOT/deploy/wheelhouse.sh" gpu >&2
# wrk (the serve stage's load generator) and the LuaJIT it links; libssl3 and libc are on the host.
(cd "$staging/$NAME/deb" && apt-get download -qq -o APT::Sandbox::User=root wrk libluajit-5.1-2 libluajit-5.1-common)
cp "$ROOT/deploy/gpu-host/install.sh" "$ROOT/deploy/gpu-host/run-suite.sh" "$staging/$NAME/"

rm -rf "$DEST"
mkdir -p "$DEST"
tar -cf "$DEST/$NAME.tar" -C "$staging" "$NAME"
(cd "$DEST" && sha256sum "$NAME.tar" >"$NAME.tar.sha256")
cp "$ROOT/deploy/gpu-host/install.sh" "$DEST/"  # beside the tar too: the host's first command
if [ -n "${1:-}" ]; then
    split -b "${1}M" -d -a 2 "$DEST/$NAME.tar" "$DEST/$NAME.tar.part-"
    rm "$DEST/$NAME.tar"
fi
echo "bundle: $(du -sm "$DEST" | cut -f1) MiB in $DEST:"
ls -l "$DEST"
