"""The load test end to end on a real server (a few seconds of Locust), and the SLO gate both ways.

No timing is asserted: the machine is shared. The smoke run checks that Locust ran every scenario,
that requests succeeded (bad inputs got their 4xx) and that the server formed batches; the gate is
checked on a results folder written here by hand, so that its verdicts are exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, running_server

SMOKE_USERS = 12


def run_runner(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtests.run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def write_slo(
    path: Path,
    at_users: int,
    endpoint: str,
    max_p99_ratio: float,
    max_error_rate: float,
    min_capacity_ratio: float,
) -> Path:
    path.write_text(
        f'at_users = {at_users}\nendpoint = "{endpoint}"\nmax_p99_ratio = {max_p99_ratio}\n'
        f"max_error_rate = {max_error_rate}\nmin_capacity_ratio = {min_capacity_ratio}\n"
    )
    return path


@pytest.mark.timeout(400)
def test_smoke_load_test_succeeds_and_batches(tmp_path: Path) -> None:
    out = tmp_path / "results"
    lenient = write_slo(tmp_path / "lenient.toml", SMOKE_USERS, "/classify digit", 1e9, 0.0, 0.0)
    with running_server() as server:
        done = run_runner(
            "run",
            "--url",
            server.url,
            "--out",
            str(out),
            "--slo",
            str(lenient),
            "--users",
            str(SMOKE_USERS),
            "--step-seconds",
            "5",
            "--settle-seconds",
            "1",
            "--reference-seconds",
            "0.5",
            "--user-classes",
            "DigitUser,BatchUser,BadInputUser",
            "--no-sweep",
        )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    by_name = summary["requests_by_name"]
    for name in ("/classify digit", "/classify_batch x8", "/classify bad input"):
        assert by_name.get(name, 0) > 0, f"Locust sent no {name}: {by_name}"
    assert summary["failures"] == 0, (out / "report.md").read_text()
    assert summary["images_classified"] > 0
    assert summary["batches_larger_than_1"] >= 1, "the server never formed a batch of more than one image"
    for artefact in ("report.md", "ramp.png", "batch_sizes.png"):
        assert (out / artefact).stat().st_size > 0
    assert summary["reference_images_per_s"] > 0, "no model-only reference was measured"

    impossible = write_slo(tmp_path / "impossible.toml", SMOKE_USERS, "/classify digit", 1e-9, 0.0, 1e9)
    rejudged = run_runner("report", str(out), "--slo", str(impossible))
    assert rejudged.returncode == 1, rejudged.stdout + rejudged.stderr
    assert "FAIL" in (out / "report.md").read_text().splitlines()[0]


# A run built by hand: ramp 1 -> 4 users, 10 s steps, first 2 s of each left out.
RAMP_USERS = [1, 4]
SCHEDULE = {"users": RAMP_USERS, "step_seconds": 10.0, "settle_seconds": 2.0}
METRICS = """# TYPE vitserve_batch_size histogram
vitserve_batch_size_bucket{{le="1.0"}} {b1}
vitserve_batch_size_bucket{{le="2.0"}} {b2}
vitserve_batch_size_bucket{{le="4.0"}} {b4}
vitserve_batch_size_bucket{{le="+Inf"}} {b4}
vitserve_batch_size_sum {total}
vitserve_batch_size_count {b4}
# TYPE vitserve_images_classified_total counter
vitserve_images_classified_total{{label="7"}} {total}
# TYPE vitserve_requests_rejected_total counter
vitserve_requests_rejected_total{{reason="bad_input"}} {bad}
"""
STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)


def fixed_results(out: Path) -> Path:
    """100 /classify digit requests per step window, of 1..100 ms; at 4 users the 100 ms one failed."""
    ramp = out / "ramp"
    ramp.mkdir(parents=True)
    rows = ["elapsed_s,name,response_time_ms,status,ok,users"]
    rows += [f"1.0,/classify digit,{5000 + i},200,1,1" for i in range(3)]  # settling: left out
    for step, users in enumerate(RAMP_USERS):
        start = step * 10 + 2
        for i in range(100):
            status, ok = (503, 0) if (users == 4 and i == 99) else (200, 1)
            rows.append(f"{start + i * 0.08:.3f},/classify digit,{i + 1},{status},{ok},{users}")
    (ramp / "requests.csv").write_text("\n".join(rows) + "\n")
    (ramp / "schedule.json").write_text(json.dumps(SCHEDULE))
    (ramp / "locust_stats.csv").write_text(
        STATS_HEADER
        + "\nPOST,/classify digit,203,1,50,60,1,5002,300,10.1,0.05,50,66,75,80,90,95,98,99,100,5000,5000\n"
    )
    (ramp / "metrics_before.prom").write_text(METRICS.format(b1=5, b2=5, b4=5, total=5, bad=0))
    # During the run: 100 batches of 1, 20 of 2, 25 of 4 images = 240 images in 145 batches.
    (ramp / "metrics_after.prom").write_text(METRICS.format(b1=105, b2=125, b4=150, total=245, bad=2))
    (ramp / "model.json").write_text(
        json.dumps({"name": "digits", "precision": "int8", "max_batch_size": 32})
    )
    (ramp / "setup.json").write_text(json.dumps({"target": "hand-built", "user_classes": ["DigitUser"]}))
    # The model alone: 100 images/s, so 40 ms is the ideal latency at 4 users (4 / 100 s) and 10 ms at 1;
    # the server beside it in three pairs: 10, 12 and 14 % of the model alone's round, a median of 12 %.
    reference = {"images_per_s": 100.0, "batch": 32, "threads": 2, "artifact": "model.int8.onnx"}
    beside = {"connections": 4, "served_rounds": [10.0, 12.0, 14.0], "capacity_ratios": [0.14, 0.1, 0.12]}
    (ramp / "reference.json").write_text(
        json.dumps({**reference, **beside, "providers": ["CPUExecutionProvider"]})
    )
    return out


@pytest.mark.parametrize(
    ("max_p99_ratio", "max_error_rate", "min_capacity_ratio", "expected_exit"),
    [
        # At 4 users: 99 successes of 1..99 ms, so p99 (nearest rank) is 99 ms, 2.475 x the ideal 40 ms.
        (2.475, 0.01, 0.12, 0),
        (2.47, 0.01, 0.12, 1),  # p99 just over 2.47 x 40 ms
        (2.475, 0.004, 0.12, 1),  # 1 failure in 203 requests is 0.49%
        (2.475, 0.01, 0.121, 1),  # the server's capacity, a median of 12 % of the model alone's
    ],
)
def test_slo_gate_on_fixed_results(
    tmp_path: Path,
    max_p99_ratio: float,
    max_error_rate: float,
    min_capacity_ratio: float,
    expected_exit: int,
) -> None:
    out = fixed_results(tmp_path / "results")
    slo = write_slo(
        tmp_path / "slo.toml", 4, "/classify digit", max_p99_ratio, max_error_rate, min_capacity_ratio
    )
    done = run_runner("report", str(out), "--slo", str(slo), timeout_s=120)
    assert done.returncode == expected_exit, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batches"] == 145 and summary["batches_larger_than_1"] == 45
    assert summary["images_classified"] == 240


# The top step (4 users) has 99 successes in its window, the best (1 user) 100: a ratio of 0.99.
@pytest.mark.parametrize(("ratio", "expected_exit"), [(0.5, 0), (0.99, 0), (0.995, 1)])
def test_goodput_at_the_top_step_is_judged_against_the_best_step(
    tmp_path: Path, ratio: float, expected_exit: int
) -> None:
    out = fixed_results(tmp_path / "results")
    slo = write_slo(tmp_path / "slo.toml", 4, "/classify digit", 2.475, 0.01, 0.12)
    slo.write_text(slo.read_text() + f"min_goodput_ratio = {ratio}\n")
    done = run_runner("report", str(out), "--slo", str(slo), timeout_s=120)
    assert done.returncode == expected_exit, done.stdout + done.stderr
    assert "goodput at 4 users (the top step)" in done.stdout


def test_errors_past_the_judged_load_are_reported_not_judged(tmp_path: Path) -> None:
    out = fixed_results(tmp_path / "results")
    # Judged at 1 user: its step has 103 requests and no failure; the 503 at 4 users is past it.
    slo = write_slo(tmp_path / "slo.toml", 1, "/classify digit", 9.9, 0.0, 0.12)
    done = run_runner("report", str(out), "--slo", str(slo), timeout_s=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0.00% (0 of 103)" in done.stdout


@pytest.mark.parametrize(
    ("slo_text", "why"),
    [
        (
            'at_users = 16\nendpoint = "/classify digit"\nmax_p99_ratio = 1\nmax_error_rate = 0\n'
            "min_capacity_ratio = 0\n",
            "16 users",
        ),
        (
            'at_users = 4\nendpoint = "/nope"\nmax_p99_ratio = 1\nmax_error_rate = 0\n'
            "min_capacity_ratio = 0\n",
            "/nope",
        ),
        ("at_users = 4\nmax_p99_ratio = 1\n", "needs exactly the keys"),
        # An old file with absolute targets: the gate's targets are ratios of this host's own speed now.
        (
            'at_users = 4\nendpoint = "/classify digit"\np99_ms = 1\nmax_error_rate = 0\nmin_rps = 0\n',
            "needs exactly the keys",
        ),
    ],
)
def test_unusable_slo_is_an_error_not_a_verdict(tmp_path: Path, slo_text: str, why: str) -> None:
    out = fixed_results(tmp_path / "results")
    (tmp_path / "slo.toml").write_text(slo_text)
    done = run_runner("report", str(out), "--slo", str(tmp_path / "slo.toml"), timeout_s=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert why in done.stderr


def test_a_run_without_its_reference_is_an_error_not_a_verdict(tmp_path: Path) -> None:
    out = fixed_results(tmp_path / "results")
    (out / "ramp" / "reference.json").unlink()
    slo = write_slo(tmp_path / "slo.toml", 4, "/classify digit", 2.475, 0.01, 0.12)
    done = run_runner("report", str(out), "--slo", str(slo), timeout_s=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "reference" in done.stderr
