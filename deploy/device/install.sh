#!/usr/bin/env bash
# On the device machine: join the staged parts, check the bundle against its MANIFEST, install the wheels
# into /tmp/site and wrk into /tmp/wrk-root, and write /tmp/vitserve-env.sh for the suite to source.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STAGE=/tmp/vitserve-stage
PYTHON=${PYTHON:-python3}  # the device image's, with torch
read -r sha parts <"$ROOT/.whl/device/MANIFEST"
have=$(find "$STAGE" -maxdepth 1 -name "part-*" | wc -l)
if [ "$have" -ne "$parts" ]; then
    echo "only $have of $parts parts on this machine: it was started afresh since the first call;" \
        "make the calls again from the first (docs/gpu.md)" >&2
    exit 3
fi
cat "$STAGE"/part-* >/tmp/vitserve-bundle.tar
echo "$sha  /tmp/vitserve-bundle.tar" | sha256sum -c --quiet
rm -rf /tmp/vitserve-bundle /tmp/site /tmp/wrk-root
mkdir -p /tmp/vitserve-bundle /tmp/wrk-root
tar -xf /tmp/vitserve-bundle.tar -C /tmp/vitserve-bundle
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    /tmp/vitserve-bundle/wheels/*.whl
for deb in /tmp/vitserve-bundle/deb/*.deb; do dpkg -x "$deb" /tmp/wrk-root; done

# The CUDA 13 and cuDNN 9 libraries onnxruntime-gpu loads come from the image's NVIDIA wheels (torch's).
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
wrk_libs=$(dirname "$(find /tmp/wrk-root -name 'libluajit-5.1.so.2*' | head -1)")
cat >/tmp/vitserve-env.sh <<ENV
export PYTHONPATH=$ROOT:/tmp/site\${PYTHONPATH:+:\$PYTHONPATH}
export LD_LIBRARY_PATH=$nvidia_libs:$wrk_libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PATH=/tmp/wrk-root/usr/bin:\$PATH
export PYTHONUNBUFFERED=1
ENV
echo "installed: $(find /tmp/vitserve-bundle/wheels -name "*.whl" | wc -l) wheels, wrk; env in /tmp/vitserve-env.sh"
