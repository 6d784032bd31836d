"""The committed gRPC code is what grpcio-tools generates from the committed .proto, byte for byte.

After changing grpc_predict_v2.proto or the grpcio-tools pin, regenerate from the repository root:

    python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. \\
        vitserve/service/v2/grpc_predict_v2.proto
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

V2 = REPO / "service" / "v2"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def test_regenerated_grpc_code_equals_the_committed_code(tmp_path: Path) -> None:
    # The same relative path as in the repository: it names the module the stubs import.
    proto = tmp_path / "vitserve" / "service" / "v2" / "grpc_predict_v2.proto"
    proto.parent.mkdir(parents=True)
    shutil.copy(V2 / "grpc_predict_v2.proto", proto)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(proto),
        ],
        check=True,
    )
    for name in GENERATED:
        assert (proto.parent / name).read_bytes() == (V2 / name).read_bytes(), (
            f"{name} differs; regenerate it"
        )


def test_the_proto_is_the_protocols_service() -> None:
    """tritonclient and KServe call /inference.GRPCInferenceService/<method>: package and names must hold."""
    text = (V2 / "grpc_predict_v2.proto").read_text()
    assert "package inference;" in text
    assert "service GRPCInferenceService" in text
    for method in (
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    ):
        assert f"rpc {method}(" in text
