"""Run vitserve's load test and write its report; exit 1 when an SLO is missed (a release gate).

    nice -n 10 .venv/bin/python -m loadtests.run run --out reports/loadtest
    .venv/bin/python -m loadtests.run run --url http://127.0.0.1:3000 --no-sweep   # a running server
    .venv/bin/python -m loadtests.run report reports/loadtest --slo my-slo.toml     # re-judge a run

`run` starts a server on a free loopback port (or targets --url, which must be loopback: reach a
Kubernetes deployment with `kubectl port-forward`), scrapes /metrics, runs Locust headless over the
ramp, scrapes /metrics again, then measures digits-only load on two fresh servers, batching on and
off, at each --sweep-users.

Exit status: 0 all SLOs met, 1 an SLO missed, 2 the test itself could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from loadtests import measurement as files
from loadtests.reference import REFERENCE, ReferenceError, measure_reference
from loadtests.report import COMMAND, RAMP, SWEEP_OFF, SWEEP_ON, write_report
from loadtests.slo import Slo, SloError
from loadtests.stats import Schedule, StatsError, parse_users
from vitserve.bench.processes import wait_ready
from vitserve.harness.metrics import ScrapeError, fetch
from vitserve.harness.servers import running_server
from vitserve.harness.throttle import Throttle

log = logging.getLogger("loadtest")

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_SLO = Path(__file__).resolve().parent / "slo.toml"
DEFAULT_MODEL_DIR = REPO / "models" / "digits-vit"
RAMP_USER_CLASSES = ("ClassifyUser", "BatchUser", "BadInputUser")
SWEEP_USER_CLASSES = ("DigitUser",)
# Bounds that keep a mistyped option from turning a check into a stress test of the host.
MAX_USERS = 256
MAX_STEP_SECONDS = 300.0
EXIT_SLO_MISSED = 1
REFERENCE_PAIRS = 5
EXIT_ERROR = 2


class LoadTestError(RuntimeError):
    """The load test could not run (Locust crashed, bad arguments); no verdict."""


def users_option(text: str) -> tuple[int, ...]:
    try:
        return parse_users(text, MAX_USERS)
    except StatsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def seconds_option(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds <= MAX_STEP_SECONDS:
        raise argparse.ArgumentTypeError(f"seconds must be in (0, {MAX_STEP_SECONDS:g}], got {text}")
    return seconds


# The only hosts load tests are sent to (urlsplit gives an IPv6 literal without its brackets).
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def loopback_url(text: str) -> str:
    host = urlsplit(text).hostname or ""
    if host not in LOOPBACK:
        raise argparse.ArgumentTypeError(
            f"{text}: only loopback targets are load-tested; for a cluster, "
            "`kubectl port-forward svc/vitserve 3000:3000` and use http://127.0.0.1:3000"
        )
    return text.rstrip("/")


def host_description() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({cpu}), load average before the run {load}; Locust on the same host"


def run_locust(
    url: str,
    out: Path,
    schedule: Schedule,
    user_classes: Sequence[str],
    setup: dict[str, object],
) -> None:
    """One headless Locust run over `schedule`, with /metrics scraped around it, into folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    schedule.write(out / files.SCHEDULE)
    (out / files.MODEL).write_text(httpx.get(f"{url}/model", timeout=30).raise_for_status().text)
    setup = {
        **setup,
        "target": url,
        "user_classes": list(user_classes),
        "host": host_description(),
        "load_average_1m": os.getloadavg()[0],
    }
    (out / files.SETUP).write_text(json.dumps(setup, indent=2) + "\n")
    (out / files.METRICS_BEFORE).write_text(fetch(url))
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--ramp-users",
        ",".join(str(u) for u in schedule.users),
        "--step-seconds",
        str(schedule.step_seconds),
        "--request-log",
        str(out / files.REQUEST_LOG),
        "--csv",
        str(out / files.LOCUST_PREFIX),
        "--only-summary",
        # Let in-flight requests finish at the end: a user killed mid-request is a client disconnect
        # the server would count as a refusal.
        "--stop-timeout",
        "30",
        # Failures are judged by the SLOs, not by Locust; a non-zero exit means Locust itself failed.
        "--exit-code-on-error",
        "0",
        *user_classes,
    ]
    budget_s = len(schedule.users) * schedule.step_seconds + 180
    log.info("locust: %s users x %g s -> %s", list(schedule.users), schedule.step_seconds, out)
    with (out / "locust.log").open("wb") as locust_log:
        try:
            done = subprocess.run(
                command, cwd=REPO, stdout=locust_log, stderr=subprocess.STDOUT, timeout=budget_s
            )
        except subprocess.TimeoutExpired as exc:
            raise LoadTestError(f"Locust ran past {budget_s:.0f} s; see {out / 'locust.log'}") from exc
    if done.returncode != 0:
        tail = (out / "locust.log").read_text(errors="replace")[-3000:]
        raise LoadTestError(f"Locust exited with {done.returncode}:\n{tail}")
    (out / files.METRICS_AFTER).write_text(fetch(url))


@contextmanager
def target(args: argparse.Namespace, out: Path, name: str, env: dict[str, str]) -> Iterator[str]:
    """--url as given, or a fresh local server with the VITSERVE_* overrides `env`."""
    if args.url:
        wait_ready(args.url.rstrip("/") + "/readyz", timeout_s=30)
        yield args.url
        return
    with running_server(env, args.model_dir, log_path=out / f"server-{name}.log") as server:
        if args.slow_server_by == 1:
            yield server.url
            return
        with Throttle(server.pid, args.slow_server_by):
            yield server.url


def server_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("VITSERVE_"):
            raise LoadTestError(f"--server-env takes VITSERVE_NAME=value, not {pair!r}")
        env[key] = value
    return env


def command_run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / COMMAND).write_text(shlex.join(["python", "-m", "loadtests.run", *sys.argv[1:]]) + "\n")
    env = server_env(args.server_env)
    slo = Slo.read(args.slo)  # fail on a bad SLO file before spending minutes on load
    if slo.at_users not in args.users:
        raise SloError(f"{args.slo} judges at {slo.at_users} users; add it to --users {args.users}")
    ramp = Schedule(args.users, args.step_seconds, args.settle_seconds)
    setup: dict[str, object] = {"server_env": env}
    with target(args, out, "ramp", env) as url:
        # On the same host and server, just before the ramp (loadtests/reference.py).
        (out / RAMP).mkdir(parents=True, exist_ok=True)
        image = sorted((args.model_dir / "samples").glob("*.png"))[0].read_bytes()
        reference = measure_reference(
            args.model_dir, url, image, slo.at_users, seconds=args.reference_seconds / REFERENCE_PAIRS
        )
        reference.write(out / RAMP / REFERENCE)
        run_locust(url, out / RAMP, ramp, args.user_classes.split(","), setup)
        log.info(
            "reference: the model alone %.0f images/s, the server %s req/s, ratios %s",
            reference.images_per_s,
            reference.served_rounds,
            reference.capacity_ratios,
        )
    if args.sweep and args.url:
        log.warning("no batching sweep: it restarts the server with other settings, and --url is fixed")
    elif args.sweep:
        sweep(args, out, env)
    return judge(out, slo, args.slo)


def sweep(args: argparse.Namespace, out: Path, env: dict[str, str]) -> None:
    """Batching on vs off: both servers up at once, each user count measured on one then the other.

    Interleaving keeps the comparison fair on a shared host, where background load drifts over minutes.
    """
    off_env = {**env, "VITSERVE_MAX_BATCH_SIZE": "1"}
    with (
        target(args, out, "batching-on", env) as on_url,
        target(args, out, "batching-off", off_env) as off_url,
    ):
        for users in args.sweep_users:
            schedule = Schedule((users,), args.sweep_step_seconds, args.settle_seconds)
            for folder, url, server_env in ((SWEEP_ON, on_url, env), (SWEEP_OFF, off_url, off_env)):
                run_locust(
                    url,
                    out / folder / f"users-{users:03d}",
                    schedule,
                    SWEEP_USER_CLASSES,
                    {"server_env": server_env},
                )


def judge(out: Path, slo: Slo, slo_path: Path) -> int:
    verdicts = write_report(out, slo, slo_path)
    for v in verdicts:
        sys.stdout.write(f"{'ok  ' if v.met else 'MISS'} {v.objective}: {v.measured} (target {v.target})\n")
    sys.stdout.write(f"report: {out / 'report.md'}\n")
    return 0 if all(v.met for v in verdicts) else EXIT_SLO_MISSED


def command_report(args: argparse.Namespace) -> int:
    return judge(args.results, Slo.read(args.slo), args.slo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the load test and write the report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--url", type=loopback_url, help="a running server (loopback only); default: start one"
    )
    run.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="model for the local server, and for the model-only reference (with --url: the served one's)",
    )
    run.add_argument("--out", type=Path, default=REPO / "reports" / "loadtest", help="results folder")
    run.add_argument("--slo", type=Path, default=DEFAULT_SLO, help="SLO file (TOML or JSON)")
    run.add_argument("--users", type=users_option, default=(1, 4, 16, 32, 64), help="ramp steps (users)")
    run.add_argument("--step-seconds", type=seconds_option, default=15.0, help="seconds per ramp step")
    run.add_argument(
        "--reference-seconds", type=float, default=15.0, help="reference pairs before the ramp, seconds"
    )
    run.add_argument("--settle-seconds", type=float, default=3.0, help="start of each step left out")
    run.add_argument("--user-classes", default=",".join(RAMP_USER_CLASSES), help="Locust users for the ramp")
    run.add_argument(
        "--sweep", action=argparse.BooleanOptionalAction, default=True, help="batching on vs off"
    )
    run.add_argument("--sweep-users", type=users_option, default=(1, 4, 16, 64), help="sweep steps (users)")
    run.add_argument("--sweep-step-seconds", type=seconds_option, default=10.0, help="seconds per sweep step")
    run.add_argument(
        "--slow-server-by",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="pause local servers for 1 - 1/FACTOR of every 20 ms: a check of the gate itself, which "
        "must fail at 2",
    )
    run.add_argument(
        "--server-env", action="append", default=[], metavar="VITSERVE_X=V", help="setting for local servers"
    )
    run.set_defaults(func=command_run)
    report = sub.add_parser("report", help="rewrite the report of a results folder and judge it again")
    report.add_argument("results", type=Path)
    report.add_argument("--slo", type=Path, default=DEFAULT_SLO)
    report.set_defaults(func=command_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (
        LoadTestError,
        RuntimeError,
        TimeoutError,
        ScrapeError,
        ReferenceError,
        SloError,
        StatsError,
        httpx.HTTPError,
    ) as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
