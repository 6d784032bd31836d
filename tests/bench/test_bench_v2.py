"""`vitserve bench v2` end to end on the shipped model, briefly: every protocol measured at every point,
counted from the server's own 200s, and the ratios printed. How fast is the benchmark's to print.

Run as its own process: the benchmark builds its gRPC request with vitserve's generated classes, whose
protobuf package (`inference`) the tritonclient other tests import into this process also defines.
"""

from __future__ import annotations

import subprocess
import sys


def test_bench_v2_measures_every_protocol_and_prints_the_ratios() -> None:
    argv = [
        "bench",
        "v2",
        "--concurrency",
        "1",
        "4",
        "--duration-s",
        "1",
        "--warmup-s",
        "0.5",
        "--rounds",
        "1",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "vitserve", *argv], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("command: vitserve bench v2 ")
    for protocol in ("/classify", "v2 REST", "v2 gRPC"):
        (row,) = [line for line in out.splitlines() if line.startswith(f"| {protocol} |")]
        assert all(float(cell.split()[0]) > 0 for cell in row.strip(" |").split(" | ")[1:])
    assert "- v2 REST / /classify img/s: c=1 " in out
    assert "- v2 gRPC / /classify img/s: c=1 " in out
