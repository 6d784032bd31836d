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


def test_the_front_door_serves_the_direct_routes_and_they_alone_are_generated_from_its_table() -> None:
    from fastapi import FastAPI

    from vitserve.service.web.endpoints import DIRECT_PATHS
    from vitserve.service.web.routes import router

    app = FastAPI()
    app.include_router(router)
    posts = {path for path, operations in app.openapi()["paths"].items() if "post" in operations}
    assert {"/classify", "/classify_batch"} == DIRECT_PATHS
    assert posts == DIRECT_PATHS | {"/explain"}  # /explain is a FastAPI route behind BentoML's stack
