"""`vitserve bench peers --tritonclient` end to end on the shipped model, briefly: structure, not speed.

Real servers driven by Triton's own async client in a process of its own: vitserve's v2 REST and gRPC
always, PyTriton's where it is installed (the `peers` extra), else reported as not measured; vitserve's
/classify under wrk and under aiohttp, the control for a Python client's cost. What is
asserted is that every point was measured without a failed answer, with the client's own CPU, and that
the ratios the targets are stated in were printed.
"""

from __future__ import annotations

import importlib.util

import pytest

from vitserve.cli import main

PYTRITON = importlib.util.find_spec("pytriton") is not None


def rows(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"| {name} |")]


def test_bench_peers_tritonclient_measures_every_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "peers", "--workloads", "digits", "--tritonclient", "--concurrency", "1", "4"]
    argv += ["--duration-s", "1", "--warmup-s", "0.5", "--rounds", "1", "--no-half-load"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: vitserve bench peers --workloads digits --tritonclient")
    measured = ["vitserve", "vitserve /classify", "vitserve v2 REST", "vitserve v2 gRPC"]
    measured += ["pytriton v2 REST", "pytriton v2 gRPC"] if PYTRITON else []
    for name in measured:
        img_s, latency, cpu = rows(out, name)
        assert all(float(cell) > 0 for cell in img_s.strip(" |").split(" | ")[1:])
        assert all(" / " in cell for cell in latency.split(" | ")[1:3])
        assert cpu.rstrip(" |").endswith("| 0")  # no failed answers
    for name in measured[1:]:
        (generator,) = [line for line in out.splitlines() if line.startswith(f"| {name} (") and "aio" in line]
        assert all(float(cell) > 0 for cell in generator.strip(" |").split(" | ")[1:])
    for protocol in ("v2 REST", "v2 gRPC"):
        assert f"- vitserve {protocol} (tritonclient." in out
        assert ") / vitserve /classify (wrk) img/s: c=1 " in out
        assert ") / vitserve /classify (aiohttp) img/s: c=1 " in out
        assert (f"- vitserve / pytriton, {protocol} (tritonclient." in out) == PYTRITON
    if not PYTRITON:
        assert "- pytriton v2 REST: not installed" in out and "- pytriton v2 gRPC: not installed" in out
