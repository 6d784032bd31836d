"""PNG plots for the load-test report: the ramp, the batch sizes formed, batching on vs off."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers or CI; must precede pyplot's import
import matplotlib.pyplot as plt

from loadtests.stats import StepStats
from vitserve.harness.metrics import Histogram

DPI = 90  # small files: these PNGs are committed to docs/


def _users_axis(ax: plt.Axes, users: Sequence[int], label: bool) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(users), [str(u) for u in users])
    ax.minorticks_off()
    if label:
        ax.set_xlabel("concurrent users")
    ax.grid(True, alpha=0.3)


def ramp(steps: Sequence[StepStats], title: str, path: Path) -> None:
    """Throughput and p50/p99 latency against users, one point per ramp step."""
    users = [s.users for s in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    top.plot(users, [s.rps for s in steps], marker="o")
    top.set_ylabel("successful requests/s")
    top.set_title(title, fontsize=10)
    bottom.plot(users, [s.p50_ms for s in steps], marker="o", label="p50")
    bottom.plot(users, [s.p99_ms for s in steps], marker="s", label="p99")
    bottom.set_ylabel("latency (ms)")
    bottom.legend()
    _users_axis(top, users, label=False)
    _users_axis(bottom, users, label=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def bucket_label(lower: float, upper: float) -> str:
    low, high = int(lower) + 1, upper
    if high == float("inf"):
        return f">{int(lower)}"
    return str(int(high)) if low == int(high) else f"{low}-{int(high)}"


def batch_sizes(histogram: Histogram, title: str, path: Path) -> None:
    """Batches per size bucket, as the server's vitserve_batch_size histogram counted them."""
    buckets = histogram.buckets()
    while len(buckets) > 1 and buckets[-1][2] == 0:  # up to the largest batch seen, not to 256
        buckets.pop()
    labels = [bucket_label(lo, hi) for lo, hi, _ in buckets]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, [n for _, _, n in buckets])
    ax.set_xlabel("images per inference batch")
    ax.set_ylabel("batches")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def sweep(on: Sequence[StepStats], off: Sequence[StepStats], title: str, path: Path) -> None:
    """Batching on vs off: throughput and p99 at each concurrency."""
    users = [s.users for s in on]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    for steps, label, marker in ((on, "batching on", "o"), (off, "batching off (max_batch_size 1)", "s")):
        top.plot(users, [s.rps for s in steps], marker=marker, label=label)
        bottom.plot(users, [s.p99_ms for s in steps], marker=marker, label=label)
    top.set_ylabel("successful requests/s")
    top.set_title(title, fontsize=10)
    top.legend()
    bottom.set_ylabel("p99 latency (ms)")
    _users_axis(top, users, label=False)
    _users_axis(bottom, users, label=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
