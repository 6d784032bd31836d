"""`vitserve bench flood` on the shipped model, briefly: every point measured and reported, not its speed."""

from __future__ import annotations

import pytest

from vitserve.cli import main


@pytest.mark.parametrize(("route", "extra"), [("/classify", []), ("/classify_batch", ["--images", "2"])])
def test_bench_flood_reports_served_shed_latencies_and_both_cpus(
    capsys: pytest.CaptureFixture[str], route: str, extra: list[str]
) -> None:
    argv = ["bench", "flood", "--connections", "2", "12", "--duration-s", "1", "--max-in-flight", "2"]
    assert main([*argv, "--route", route, *extra, "--set", "VITSERVE_SHED_DELAY_MS=200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: vitserve bench flood") and "--set VITSERVE_SHED_DELAY_MS=200" in out
    rows = [
        line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith(("| 2 |", "| 12 |"))
    ]
    assert [row[0] for row in rows] == ["2", "12"]
    for row in rows:
        assert float(row[2]) > 0  # served per second, from the server's own counters
        assert row[7] == "0" and row[8] == "none"  # no socket errors, no answer but 200 and 429
    assert float(rows[1][4]) > 0, "12 connections over 2 places: some were shed"
    assert rows[1][6] == "none" or float(rows[1][6]) >= 180  # held the delay (timers may fire a bit early)


def test_bench_flood_refuses_a_setting_that_is_not_vitserves(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "flood", "--set", "PATH=/tmp"]) == 2
    assert "--set takes VITSERVE_X=VALUE" in capsys.readouterr().err
