"""service/app.py's wiring: what BentoML's arbiter imports stays light, and the door guards the routes."""

from __future__ import annotations

import subprocess
import sys


def test_the_arbiter_imports_no_numpy_pillow_or_onnx_runtime() -> None:
    # BentoML's arbiter process imports the service module to read its configuration; each of these
    # would stay resident in a process that never serves (numpy alone is ~15 MiB).
    heavy = ["numpy", "PIL", "onnxruntime", "vitserve.service.web.routes", "vitserve.service.flow.classify"]
    code = f"import sys, vitserve.service.app; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_front_door_guards_exactly_the_classify_routes() -> None:
    from vitserve.service.app import CLASSIFY_PATHS
    from vitserve.service.web.routes import router

    posts = {r.path for r in router.routes if "POST" in getattr(r, "methods", ())}  # type: ignore[attr-defined]
    assert posts == CLASSIFY_PATHS
