"""Fuzz the whole upload path of a real server: the hostile corpus, then N mutated images.

    .venv/bin/python -m reliability.fuzz_decode [--examples 2000]

Prints inputs tried, the status counts, the 5xx count (target 0), worker restarts and the server's
peak RSS (all its processes). tests/reliability/test_hostile_input.py runs a short version.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import httpx
from hypothesis import HealthCheck, given, settings

from vitserve.bench.processes import tree_rss_mib
from vitserve.harness.hostile import corpus
from vitserve.harness.mutations import mutated_image
from vitserve.harness.procs import RssSampler, worker_pids
from vitserve.harness.servers import SAMPLES_DIR, running_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="mutated images to send")
    args = parser.parse_args()
    statuses: Counter[int] = Counter()
    with running_server() as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert server.proc is not None
        root = server.proc.pid
        workers = {name: worker_pids(root, name) for name in ("vitserve",)}  # the API worker holds the model
        baseline = tree_rss_mib(root)
        started = time.monotonic()
        with RssSampler(root, interval_s=0.1) as rss:
            for item in corpus():
                for kwargs in (
                    {"files": {"image": (item.filename, item.data, item.content_type)}},
                    {"content": item.data, "headers": {"Content-Type": item.content_type}},
                ):
                    statuses[client.post("/classify", **kwargs).status_code] += 1

            @settings(
                max_examples=args.examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(data=mutated_image())
            def send(data: bytes) -> None:
                response = client.post("/classify", content=data, headers={"Content-Type": "image/png"})
                statuses[response.status_code] += 1

            send()
        elapsed = time.monotonic() - started
        replaced = {name: worker_pids(root, name) for name in workers} != workers
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    print(f"model: {SAMPLES_DIR.parent}")
    print(f"inputs tried        {sum(statuses.values())} ({2 * len(corpus())} corpus sends + mutated images)")
    print(f"statuses            {dict(sorted(statuses.items()))}")
    print(f"5xx                 {server_errors}")
    print(f"worker replaced     {replaced}")
    print(f"RSS baseline / peak {baseline:.0f} / {rss.peak_mib:.0f} MiB")
    print(f"elapsed             {elapsed:.0f} s")
    return 0 if server_errors == 0 and not replaced else 1


if __name__ == "__main__":
    sys.exit(main())
