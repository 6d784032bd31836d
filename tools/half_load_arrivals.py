"""Half-load latency under random and under fixed pauses: how much of the tail is the arrivals'.

    python tools/half_load_arrivals.py digits [--rounds 4] [--servers vitserve naive]

`vitserve bench serve` judges "p99 <= 2x p50 at half of capacity" with 32 connections that pause a
random (exponential) time between requests: a Poisson-like stream, under which even an ideal server
that answers one request at a time shows p99/p50 = 4.33 (tools/queue_tail.py). This measures each
server's peak (64 connections, closed loop), then drives it at half of that from 32 connections in
alternating rounds: pausing at random, and pausing a fixed time (arrivals as even as the answers let
them be). If the fixed pauses bring p99/p50 down to about the one-client ratio, the tail under random
pauses is the queue that random arrivals build, not something the server adds.
"""

from __future__ import annotations

import argparse
import statistics

from vitserve.bench import workloads
from vitserve.bench.peers import NAIVE, VITSERVE
from vitserve.bench.processes import wait_quiet
from vitserve.bench.serve import HALF_LOAD_CONNECTIONS, BenchConfig, Server, check_answers
from vitserve.bench.wrk import run_wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["digits", "vit-tiny"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--servers", nargs="+", choices=["vitserve", "naive"], default=["vitserve", "naive"])
    parser.add_argument("--duration-s", type=float, default=8.0)
    args = parser.parse_args()
    workload = workloads.vit_tiny() if args.workload == "vit-tiny" else workloads.digits()
    specs = {"vitserve": VITSERVE, "naive": NAIVE}
    for name in args.servers:
        spec = specs[name]
        server = Server(spec, workload.model_dir, BenchConfig()).start()
        try:
            upload = spec.upload(workload.image, workload.media_type)
            check_answers(server, upload)
            url = server.url + spec.classify_path
            run_wrk(url, upload, 64, 2.0)
            wait_quiet(server.pid)
            peak = run_wrk(url, upload, 64, args.duration_s).ok_per_s
            alone = run_wrk(url, upload, 1, args.duration_s)
            think_ms = 1000 * HALF_LOAD_CONNECTIONS / (peak / 2)
            ratios: dict[str, list[float]] = {"random": [], "fixed": []}
            for round_index in range(args.rounds):
                modes = ["random", "fixed"] if round_index % 2 == 0 else ["fixed", "random"]
                for mode in modes:
                    wait_quiet(server.pid)
                    result = run_wrk(
                        url,
                        upload,
                        HALF_LOAD_CONNECTIONS,
                        args.duration_s,
                        think_ms=think_ms,
                        fixed_pauses=mode == "fixed",
                    )
                    ratios[mode].append(result.p99_ms / result.p50_ms)
                    print(
                        f"{name} round {round_index + 1} {mode} pauses: {result.ok_per_s:.1f} img/s, "
                        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms",
                        flush=True,
                    )
        finally:
            server.stop()
        print(
            f"{name}: peak {peak:.1f} img/s at 64 connections; one client p99/p50 "
            f"{alone.p99_ms / alone.p50_ms:.2f}; at half of the peak, p99/p50 median over "
            f"{args.rounds} rounds: random pauses {statistics.median(ratios['random']):.2f}, "
            f"fixed pauses {statistics.median(ratios['fixed']):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
