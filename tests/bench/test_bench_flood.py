"""`vitserve bench flood` on the shipped model, briefly: every point measured and reported, not its speed."""

from __future__ import annotations

import pytest

from vitserve.cli import main


@pytest.mark.parametrize(("route", "extra"), [("/classify", []), ("/classify_batch", ["--images", "2"])])
def test_bench_flood_reports_served_shed_latencies_and_both_cpus(
    capsys: pytest.CaptureFixture[str], route: str, extra: list[str]
) -> None:
    argv = ["bench", "flood", "--connections", "2", "12", "--factors", "2", "--duration-s", "1"]
    argv += ["--max-in-flight", "2", "--route", route, *extra, "--set", "VITSERVE_SHED_DELAY_MS=200"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: vitserve bench flood") and "--set VITSERVE_SHED_DELAY_MS=200" in out
    rows = {
        row[0]: row
        for row in (line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| "))
    }
    closed, paced = rows["2 connections"], rows["2x capacity, paced"]
    assert rows["12 connections"][2] == "closed loop" and float(paced[2]) > 0  # the rate asked for
    for row in (closed, rows["12 connections"], paced):
        assert float(row[4]) > 0  # served per second, from the server's own counters
        assert row[9] == "0" and row[11] == "none"  # no errors, no answer but 200 and 429
        assert row[7] != "none"  # admitted latencies, from h2load's own log
        assert float(row[13]) >= 0 and float(row[12]) > 0  # both CPUs reported
    assert float(rows["12 connections"][6]) > 0, "12 connections over 2 places: some were shed"
    refused = rows["12 connections"][8]
    assert refused == "none" or float(refused) >= 180  # held the delay (timers may fire a bit early)


def test_bench_flood_refuses_a_setting_that_is_not_vitserves(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "flood", "--set", "PATH=/tmp"]) == 2
    assert "--set takes VITSERVE_X=VALUE" in capsys.readouterr().err
