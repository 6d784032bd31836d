"""Kill the worker that holds the model while the client SDK scores a folder, and check what came out.

With one API worker (the default) that is the API worker itself: the model runs in it.

The folder holds copies of the shipped samples under distinct names; the results file must list every
one exactly once, each with a prediction, however many requests failed while the worker was down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.gate import GatedProxy
from tests.support import SAMPLES_DIR, ServerProcess
from vitserve.client import Client
from vitserve.harness.metrics import metric
from vitserve.harness.procs import worker_pids

IMAGE_SUFFIXES = (".png", ".jpg", ".webp", ".bmp")


@dataclass(frozen=True)
class CrashReport:
    files: int
    scored: int
    failed: int
    rows: int
    unique_rows: int
    error_rows: int
    killed_pid: int
    rows_at_kill: int  # results written when the worker was killed: the rest came after it
    replacement_pid: int | None
    replaced_after_s: float | None
    worker_starts: float  # vitserve_inference_worker_starts_total: 2 = the first worker and its replacement
    unavailable_rejections: float  # vitserve_requests_rejected_total{reason="unavailable"}: 503s
    elapsed_s: float

    def lines(self) -> list[str]:
        return [f"{key:24s} {value}" for key, value in asdict(self).items()]


def make_folder(root: Path, copies: int) -> list[Path]:
    samples = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix in IMAGE_SUFFIXES)
    files = []
    for i in range(copies):
        sample = samples[i % len(samples)]
        target = root / f"shard{i % 7}" / f"img{i:05d}{sample.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample, target)
        files.append(target)
    return files


def kill_model_worker_while_scoring(
    server: ServerProcess,
    service_name: str,
    folder: Path,
    out: Path,
    copies: int,
    kill_after_requests: int,
    retries: int = 120,
) -> CrashReport:
    """SIGKILL the one worker of BentoML service `service_name` (the one holding the model) mid-run.

    The kill lands mid-run on any machine: the client scores through a gate that answers
    `kill_after_requests` requests, then holds the rest until the worker is dead."""
    assert server.proc is not None
    root = server.proc.pid
    files = make_folder(folder, copies)
    (victim,) = worker_pids(root, service_name)
    replacement: list[tuple[int, float]] = []
    rows_at_kill: list[int] = []

    def written() -> int:
        try:
            return out.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    with GatedProxy(server.url) as proxy:

        def kill_then_watch() -> None:
            proxy.gate.wait_until_waiting()
            os.kill(victim, signal.SIGKILL)
            rows_at_kill.append(written())
            killed_at = time.monotonic()
            proxy.gate.open()  # what was held now meets the dead worker
            while time.monotonic() - killed_at < 120:
                fresh = [pid for pid in worker_pids(root, service_name) if pid != victim]
                if fresh:
                    replacement.append((fresh[0], time.monotonic() - killed_at))
                    return
                time.sleep(0.1)

        proxy.gate.let_through(kill_after_requests)
        watcher = threading.Thread(target=kill_then_watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        # Retry-After is 1 s and a fresh worker needs its model loaded and warmed up, slow on a busy
        # machine: allow retries to span minutes. Meanwhile the supervisor keeps the listening socket.
        with Client(proxy.url, retries=retries, backoff=0.5, max_backoff=2.0) as client:
            summary = client.score_folder(folder, out, concurrency=8, batch_size=4)
    elapsed = time.monotonic() - started
    watcher.join(timeout=130)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    paths = [row.get("path") for row in rows]
    # The replacement counts itself once its model is loaded, which can come after the run has ended.
    deadline = time.monotonic() + 60
    while metric(server.url, "vitserve_inference_worker_starts_total") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    return CrashReport(
        files=len(files),
        scored=summary.scored,
        failed=summary.failed,
        rows=len(rows),
        unique_rows=len(set(paths)),
        error_rows=sum(1 for row in rows if row.get("error")),
        killed_pid=victim,
        rows_at_kill=rows_at_kill[0] if rows_at_kill else -1,
        replacement_pid=replacement[0][0] if replacement else None,
        replaced_after_s=round(replacement[0][1], 2) if replacement else None,
        worker_starts=metric(server.url, "vitserve_inference_worker_starts_total"),
        unavailable_rejections=metric(server.url, 'vitserve_requests_rejected_total{reason="unavailable"}'),
        elapsed_s=round(elapsed, 1),
    )
