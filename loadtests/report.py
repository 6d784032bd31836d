"""A results folder -> report.md, summary.json and the PNG plots, with the SLO verdict.

Layout of a results folder (written by loadtests/run.py):
    command.txt            the command that produced it
    ramp/                  the scenario mix over the ramp: judged against the SLOs
    sweep/batching-on/users-NNN/    digits only at NNN users, server defaults      (optional: the
    sweep/batching-off/users-NNN/   digits only at NNN users, VITSERVE_MAX_BATCH_SIZE=1  batching sweep)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests import plots
from loadtests.measurement import Measurement
from loadtests.reference import REFERENCE, Reference
from loadtests.slo import Slo, Verdict, evaluate
from loadtests.stats import StepStats, step_stats

RAMP = "ramp"
SWEEP_ON = Path("sweep") / "batching-on"
SWEEP_OFF = Path("sweep") / "batching-off"
COMMAND = "command.txt"


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # A failure message may hold a `|`, which would split its cell.
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def _step_rows(steps: Sequence[StepStats]) -> list[list[str]]:
    return [
        [
            str(s.users),
            str(s.requests),
            f"{s.rps:.1f}",
            _ms(s.p50_ms),
            _ms(s.p95_ms),
            _ms(s.p99_ms),
            f"{s.error_rate:.2%}",
            str(s.shed),
        ]
        for s in steps
    ]


def _setup_lines(m: Measurement) -> list[str]:
    model, setup = m.model, m.setup
    return [
        f"- Model: `{model.get('name')}` {model.get('version')}, artifact `{model.get('artifact')}` "
        f"({model.get('precision')}, {', '.join(model.get('providers', []))}), "
        f"max_batch_size {model.get('max_batch_size')}, ONNX Runtime threads {model.get('intra_op_threads')}",
        f"- Server: {setup.get('target')}; settings {setup.get('server_env') or 'defaults'}",
        f"- Host: {setup.get('host')}",
        f"- Users: {', '.join(setup.get('user_classes', []))}; ramp {list(m.schedule.users)} users, "
        f"{m.schedule.step_seconds:g} s per step, the first {m.schedule.settle_seconds:g} s of each step "
        "left out of its statistics",
    ]


def _batch_lines(m: Measurement) -> list[str]:
    hist = m.batch_sizes
    mean = hist.sum / hist.count if hist.count else math.nan
    rows = [
        [plots.bucket_label(lo, hi), f"{n:.0f}", f"{n / hist.count:.1%}" if hist.count else "–"]
        for lo, hi, n in hist.buckets()
        if n > 0
    ]
    rejected = ", ".join(f"{k} {v:.0f}" for k, v in sorted(m.rejected.items()) if v > 0) or "none"
    return [
        f"{m.images_classified:.0f} images classified in {hist.count:.0f} inference batches "
        f"(mean {mean:.2f} images per batch); server-side refusals: {rejected}.",
        "",
        *_table(["images per batch", "batches", "share"], rows),
    ]


@dataclass(frozen=True)
class SweepSide:
    """One server setting of the batching sweep: a one-step Locust run per user count."""

    steps: list[StepStats]
    runs: list[Measurement]

    @classmethod
    def read(cls, folder: Path) -> SweepSide:
        runs = sorted(
            (Measurement.read(d) for d in folder.iterdir() if d.is_dir()), key=lambda m: m.schedule.users[0]
        )
        return cls([step_stats(m.log, m.schedule)[0] for m in runs], runs)

    @property
    def mean_batch(self) -> float:
        images = sum(m.batch_sizes.sum for m in self.runs)
        batches = sum(m.batch_sizes.count for m in self.runs)
        return images / batches if batches else math.nan


def sweep_ratios(on: Sequence[StepStats], off: Sequence[StepStats]) -> dict[int, float]:
    """Throughput with batching / without, per user count (none where batching off served nothing)."""
    return {a.users: a.rps / b.rps for a, b in zip(on, off, strict=True) if b.rps}


def _load(m: Measurement) -> str:
    return f"{m.setup.get('load_average_1m', math.nan):.1f}"


def _sweep_lines(on: SweepSide, off: SweepSide) -> list[str]:
    ratios = sweep_ratios(on.steps, off.steps)
    rows = [
        [
            str(a.users),
            f"{_load(run_on)} / {_load(run_off)}",
            f"{a.rps:.1f}",
            f"{b.rps:.1f}",
            f"{ratios[a.users]:.2f}x" if a.users in ratios else "–",
            _ms(a.p99_ms),
            _ms(b.p99_ms),
        ]
        for a, b, run_on, run_off in zip(on.steps, off.steps, on.runs, off.runs, strict=True)
    ]
    header = ["users", "host load on / off", "req/s on", "req/s off", "on/off", "p99 ms on", "p99 ms off"]
    return _table(header, rows)


def write_report(out: Path, slo: Slo, slo_path: Path) -> list[Verdict]:
    """Write report.md, summary.json and the PNGs into `out`; return the SLO verdicts."""
    ramp = Measurement.read(out / RAMP)
    reference = Reference.read(out / RAMP / REFERENCE)
    verdicts = evaluate(slo, ramp.log, ramp.schedule, reference)
    steps = step_stats(ramp.log, ramp.schedule)
    passed = all(v.met for v in verdicts)
    model_name = ramp.model.get("name", "?")
    plots.ramp(steps, f"vitserve ramp: {model_name}, {ramp.model.get('precision')}", out / "ramp.png")
    plots.batch_sizes(ramp.batch_sizes, "batches formed during the ramp", out / "batch_sizes.png")

    command = (out / COMMAND).read_text().strip() if (out / COMMAND).exists() else "(not recorded)"
    lines = [
        f"# vitserve load test: {'PASS' if passed else 'FAIL'}",
        "",
        f"Command: `{command}`",
        "",
        *_setup_lines(ramp),
        f"- Reference (the model alone, measured just before the ramp on this host): "
        f"{reference.images_per_s:.0f} images/s, `{reference.artifact}` at batch {reference.batch}, "
        f"{reference.threads} threads, {', '.join(reference.providers)}",
        "",
        f"## SLO verdict ({slo_path})",
        "",
        *_table(
            ["objective", "target", "measured", "met"],
            [[v.objective, v.target, v.measured, "yes" if v.met else "**NO**"] for v in verdicts],
        ),
        "",
        "## Per request type, whole ramp (Locust)",
        "",
        *_table(
            ["request", "requests", "failures", "error rate", "req/s", "p50 ms", "p95 ms", "p99 ms"],
            [
                [
                    e.name,
                    str(e.requests),
                    str(e.failures),
                    f"{e.error_rate:.2%}",
                    f"{e.rps:.1f}",
                    _ms(e.p50_ms),
                    _ms(e.p95_ms),
                    _ms(e.p99_ms),
                ]
                for e in ramp.endpoints
            ],
        ),
        "",
        "A bad input answered with its documented 4xx counts as a success; Locust rounds percentiles "
        "above 100 ms to 2 significant digits.",
        "",
    ]
    if ramp.failures:
        lines += [
            "Failures:",
            "",
            *_table(["request", "error", "count"], [[n, e, str(c)] for n, e, c in ramp.failures]),
            "",
        ]
    lines += [
        "## Ramp, all requests",
        "",
        *_table(
            ["users", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "of which 429"],
            _step_rows(steps),
        ),
        "",
        "![throughput and latency over the ramp](ramp.png)",
        "",
        "## Batches the server formed (vitserve_batch_size, during the ramp)",
        "",
        *_batch_lines(ramp),
        "",
        "![batch sizes](batch_sizes.png)",
        "",
    ]
    summary: dict[str, Any] = {
        "passed": passed,
        "verdicts": [asdict(v) for v in verdicts],
        "requests": int(ramp.log.ok.size),
        "failures": int((~ramp.log.ok).sum()),
        "requests_by_name": {e.name: e.requests for e in ramp.endpoints},
        "batches": ramp.batch_sizes.count,
        "batches_larger_than_1": ramp.batch_sizes.count_above(1.0),
        "images_classified": ramp.images_classified,
        "reference_images_per_s": reference.images_per_s,
        "steps": [asdict(s) for s in steps],
    }
    if (out / SWEEP_ON).is_dir() and (out / SWEEP_OFF).is_dir():
        on, off = SweepSide.read(out / SWEEP_ON), SweepSide.read(out / SWEEP_OFF)
        plots.sweep(
            on.steps, off.steps, f"batching on vs off: {model_name}, /classify digits", out / "sweep.png"
        )
        first = on.runs[0]
        lines += [
            "## Batching on vs off (digits only, same run)",
            "",
            f"Batching on: server defaults (max_batch_size {first.model.get('max_batch_size')}); off: "
            "VITSERVE_MAX_BATCH_SIZE=1. Both servers run side by side and each user count is measured on "
            "one and then the other, so that both see the same background load; the host's 1-minute "
            f"load average before each measurement is shown. {first.schedule.step_seconds:g} s per "
            f"measurement, the first {first.schedule.settle_seconds:g} s left out. Mean batch size formed "
            f"with batching on: {on.mean_batch:.2f}.",
            "",
            *_sweep_lines(on, off),
            "",
            "![batching on vs off](sweep.png)",
            "",
        ]
        summary["sweep_ratio_by_users"] = sweep_ratios(on.steps, off.steps)
    (out / "report.md").write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return verdicts
