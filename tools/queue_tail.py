"""The latency tail an ideal server shows under random arrivals: the reference for "p99 <= 2x p50".

    python tools/queue_tail.py [--load 0.5] [--requests 2000000]

`vitserve bench serve` measures the half-load tail with connections that pause a random
(exponential) time between requests, so requests arrive like independent users: a Poisson stream.
This simulates one server that takes exactly the same time for every request, first come first
served (M/D/1), at that share of its capacity, and prints the p50 and p99 of the time from arrival
to answer in units of that service time. A server that answers one request at a time cannot do
better under the same arrivals; one that serves several at once (batching, parallel workers) can.
"""

from __future__ import annotations

import argparse

import numpy as np


def sojourn_times(load: float, requests: int, seed: int = 0) -> np.ndarray:
    """Arrival-to-answer times of `requests` Poisson arrivals at a FIFO server with service time 1."""
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1 / load, requests))
    times = np.empty(requests)
    free_at = 0.0
    for i, arrived in enumerate(arrivals.tolist()):  # Lindley's recursion
        free_at = max(arrived, free_at) + 1.0
        times[i] = free_at - arrived
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=float, default=0.5, help="arrival rate / capacity, below 1")
    parser.add_argument("--requests", type=int, default=2_000_000)
    args = parser.parse_args()
    p50, p99 = np.percentile(sojourn_times(args.load, args.requests), [50, 99])
    print(f"M/D/1 at {args.load:.0%} of capacity: p50 {p50:.2f}, p99 {p99:.2f} service times", end="; ")
    print(f"p99/p50 {p99 / p50:.2f}")


if __name__ == "__main__":
    main()
