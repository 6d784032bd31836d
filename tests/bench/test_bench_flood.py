"""`vitserve bench flood` on the shipped model, briefly: every point measured and reported, not its speed."""

from __future__ import annotations

import pytest

from tests.support import SAMPLES_DIR, running_server
from vitserve.bench.h2load import OPEN_PERIOD_MS, paced_arguments, run_h2load
from vitserve.bench.wrk import Upload
from vitserve.cli import main


@pytest.mark.parametrize(
    ("route", "extra"), [("/classify", []), ("/classify_batch", ["--images", "2"]), ("v2", [])]
)
def test_bench_flood_reports_served_shed_latencies_and_both_cpus(
    capsys: pytest.CaptureFixture[str], route: str, extra: list[str]
) -> None:
    argv = ["bench", "flood", "--connections", "2", "12", "--factors", "2", "--duration-s", "1"]
    argv += ["--max-in-flight", "2", "--route", route, *extra, "--set", "VITSERVE_SHED_DELAY_MS=200"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: vitserve bench flood") and "--set VITSERVE_SHED_DELAY_MS=200" in out
    if route == "v2":  # the model's own infer path, flooded and counted under its metrics label
        assert "--route /v2/models/" in out and "/infer" in out
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


def test_paced_connections_open_over_one_tick_so_their_requests_do_not_arrive_as_one_herd() -> None:
    image = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    connections, rate = 40, 2.0  # a tick of 0.5 s: 50 groups of one connection, 10 ms apart
    with running_server() as server:
        result = run_h2load(server.url + "/classify", Upload(image, "image/png"), connections, 1.0, rate)
    assert result.errors == 0 and result.done == result.started == connections * 2
    first = min(a.started_s for a in result.answers)
    # Opened all at once, every connection would send its first request in the same few milliseconds
    # and nothing until the next tick; opened over the tick, the first tick's requests spread across it.
    first_tick = [a.started_s - first for a in result.answers if a.started_s - first < 1 / rate]
    assert len({int(t / 0.05) for t in first_tick}) >= 4, sorted(round(t, 3) for t in first_tick)
    # The flood lasted about the two ticks asked for, plus the one its connections opened over.
    assert result.duration_s >= 2 / rate


def test_paced_arguments_spread_connections_over_one_tick() -> None:
    args = paced_arguments(connections=1000, duration_s=8, rate_per_connection=0.8)
    per_group = int(args[0].removeprefix("-r"))
    assert args[1] == f"--rate-period={OPEN_PERIOD_MS}ms"
    ticks_ms = 1000 / 0.8
    assert per_group * ticks_ms / OPEN_PERIOD_MS >= 1000  # every connection opens within the first tick
    assert per_group <= 10  # in groups small enough not to be a herd
    assert args[2:] == ["-n6000", "--rps=0.8"]  # 8 s at 0.8 requests/s per connection
