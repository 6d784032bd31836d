#!/usr/bin/env bash
# On the GPU host, in the folder the bundle was copied to: check the bundle against its SHA-256 (joining
# its parts first if it was split), unpack it, install its wheels into PREFIX/site and wrk into
# PREFIX/wrk, and write PREFIX/env.sh for run-suite.sh. Nothing is downloaded.
#
# Usage: bash install.sh   (in the folder holding vitserve-gpu.tar[.part-*] and vitserve-gpu.tar.sha256)
#   PREFIX   where to install (default ${TMPDIR:-/tmp}/vitserve-gpu)
#   PYTHON   the host's CPython 3.11, with its PyTorch (default python3)
set -euo pipefail
NAME=vitserve-gpu
PREFIX=${PREFIX:-${TMPDIR:-/tmp}/vitserve-gpu}
PYTHON=${PYTHON:-python3}

if [ ! -f "$NAME.tar" ] && compgen -G "$NAME.tar.part-*" >/dev/null; then
    cat "$NAME.tar.part-"* >"$NAME.tar"
fi
sha256sum -c --quiet "$NAME.tar.sha256"
rm -rf "$PREFIX"
mkdir -p "$PREFIX/wrk"
tar -xf "$NAME.tar" -C "$PREFIX" --strip-components=1
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$PREFIX/site" \
    "$PREFIX"/wheels/*.whl
for deb in "$PREFIX"/deb/*.deb; do dpkg -x "$deb" "$PREFIX/wrk"; done

# The CUDA and cuDNN libraries onnxruntime-gpu loads come from the NVIDIA wheels beside the host's torch.
nvidia_libs=$("$PYTHON" - <<'PY'
import glob, os, sys
try:
    import nvidia
except ImportError:
    sys.exit("no NVIDIA wheels next to this Python: onnxruntime-gpu will not find CUDA")
dirs = {os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(f"{d}/**/lib*.so*", recursive=True)}
print(os.pathsep.join(sorted(dirs)))
PY
) || nvidia_libs=""  # said why on stderr; the suite then reports CUDA as missing, stage by stage
wrk_libs=$(dirname "$(find "$PREFIX/wrk" -name 'libluajit-5.1.so.2*' | head -1)")
cat >"$PREFIX/env.sh" <<ENV
export PYTHONPATH=$PREFIX/site\${PYTHONPATH:+:\$PYTHONPATH}
export LD_LIBRARY_PATH=$nvidia_libs:$wrk_libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PATH=$PREFIX/wrk/usr/bin:\$PATH
export PYTHONUNBUFFERED=1
ENV
echo "installed: $(find "$PREFIX/wheels" -name "*.whl" | wc -l) wheels and wrk into $PREFIX; environment in $PREFIX/env.sh"
