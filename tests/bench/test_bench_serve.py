"""`vitserve bench serve` end to end on the shipped model, briefly: its structure, not its speed.

The real servers (vitserve, the naive one) are started and driven by wrk; what is asserted is that
every point was measured and reported, with server CPU and the generator's own, and the ratios the
targets are stated in. How fast anything was is the benchmark's to print, not a test's to judge.
"""

from __future__ import annotations

import pytest

from tests.support import DEFAULT_MODEL_DIR
from vitserve.bench.wrk import Upload, run_wrk
from vitserve.cli import main


def test_bench_serve_measures_and_reports_every_server_and_point(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "serve", str(DEFAULT_MODEL_DIR), "--concurrency", "1", "4", "--rounds", "1", "--v2"]
    assert main([*argv, "--duration-s", "1", "--warmup-s", "1", "--no-half-load"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: vitserve bench serve")
    tables = out.split("img/s, median over rounds")[1]
    for name in ("vitserve", "vitserve-v2", "naive"):
        rows = [line for line in tables.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows) == 3, f"{name}: expected img/s, latency and CPU rows, got {rows}"
        img_s, latency, cpu = rows
        assert all(float(cell.split()[0]) > 0 for cell in img_s.split(" | ")[1:3])
        assert all(" / " in cell for cell in latency.split(" | ")[1:3])
        assert cpu.rstrip(" |").endswith("| 0")  # no failed requests
    assert "load generator (wrk) CPU per request" in out
    assert "vitserve / naive img/s: c=1 " in out and "vitserve / naive server CPU per image: c=1 " in out
    assert "vitserve-v2 (v2 REST, binary BYTES) / vitserve (/classify) img/s: c=1 " in out
    assert "vitserve RSS at rest" in out
    assert "not measured" not in out


def test_wrk_counts_non_200_answers_as_failed(vitserve_server: str) -> None:
    bad = Upload.multipart("image", "x.png", b"not an image", "image/png")
    result = run_wrk(f"{vitserve_server}/classify", bad, concurrency=2, duration_s=0.5)
    assert result.requests > 0 and result.failed == result.requests
    assert result.generator_cpu_s >= 0
