"""Interleaved A/B of servers and settings: every variant started at once, then short alternating points.

    python tools/ab_serve.py vit-tiny base r1:VITSERVE_BATCH_RUNNERS=1 [naive] \\
        --rounds 6 --concurrency 1 8 64

`vitserve bench serve` measures one server after another for 10 s a point; on a shared machine whose
speed drifts by tens of percent within minutes, two rounds of that cannot settle a 10-20 % effect.
Here all the variants stay up (an idle server costs nothing) and each round measures every variant
at each concurrency within seconds of the others (every server quiet, 1 s warm-up, the server quiet
again, 4 s measured with wrk; `--warmup-s`, `--duration-s`), in alternating order. The figure to
read is the median over rounds of the paired ratio against the first variant: a drift common to a
round cancels out of it. Each server's resident memory (its whole process tree) is read once all are
up and idle; `--rounds 0` reads only that.

A variant is `base` (vitserve as the bench serves it), `naive` (bench/naive_server.py), a peer of
`vitserve bench peers` (bentoml, litserve, pytriton, ray: the peers extra) or
`LABEL:VITSERVE_X=V[,VITSERVE_Y=W]` (vitserve with those settings).
"""

from __future__ import annotations

import argparse
import statistics
import time

from vitserve.bench import workloads
from vitserve.bench.peers import NAIVE, PEERS, VITSERVE, vitserve_variant
from vitserve.bench.processes import tree_rss_mib, wait_quiet
from vitserve.bench.serve import BenchConfig, Point, Server, ServerSpec, check_answers, measure_point
from vitserve.bench.wrk import Upload


def spec_for(variant: str) -> ServerSpec:
    return {"base": VITSERVE, "naive": NAIVE, **PEERS}.get(variant) or vitserve_variant(variant)


def measure(
    server: Server, upload: Upload, concurrency: int, others: list[Server], point: BenchConfig
) -> Point:
    """bench/serve.py's point, short, once every other server is quiet too."""
    for other in others:  # the last point's abandoned requests, still being served there
        wait_quiet(other.pid)
    return measure_point(server, upload, concurrency, point)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    # Short, so that the variants of a round run close together; a slow model at many clients needs
    # longer, or its requests outlast the window and the point counts none of them.
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=4.0)
    args = parser.parse_args()
    point_config = BenchConfig(warmup_s=args.warmup_s, duration_s=args.duration_s)
    workload = workloads.WORKLOADS[args.workload]()
    servers: list[tuple[Server, Upload]] = []
    try:
        for variant in args.variants:
            spec = spec_for(variant)
            server = Server(spec, workload.model_dir, point_config).start()
            upload = spec.upload(workload.image, workload.media_type)
            check_answers(server, upload)
            servers.append((server, upload))
        time.sleep(1.0)  # start-up's and the checks' garbage settled, as bench/serve.py reads it
        rss = {server.spec.name: tree_rss_mib(server.pid) for server, _ in servers}
        points: dict[tuple[str, int], list[Point]] = {}
        for round_index in range(args.rounds):
            order = servers if round_index % 2 == 0 else servers[::-1]
            for c in args.concurrency:
                for server, upload in order:
                    others = [s for s, _ in servers if s is not server]
                    point = measure(server, upload, c, others, point_config)
                    points.setdefault((server.spec.name, c), []).append(point)
                    print(f"  round {round_index + 1} {server.spec.name}: {point}", flush=True)
            print(f"round {round_index + 1} of {args.rounds} done", flush=True)
    finally:
        for server, _ in servers:
            server.stop()
    first = servers[0][0].spec.name
    for name, mib in rss.items():
        print(f"{name}: RSS at rest {mib:.0f} MiB (process tree), {mib / rss[first]:.3f}x {first}'s")
    for c in args.concurrency if args.rounds else []:  # --rounds 0: memory at rest only
        for server, _ in servers:
            rows = points[(server.spec.name, c)]
            # A round where the first variant answered nothing has no ratio; its failures are counted.
            pairs = zip(rows, points[(first, c)], strict=True)
            paired = [a.images_per_s / b.images_per_s for a, b in pairs if b.images_per_s > 0]
            ratio = f"{statistics.median(paired):.3f}" if paired else "-"
            img_s = [r.images_per_s for r in rows]
            cpu = statistics.median(r.server_cpu_ms_per_image for r in rows)
            p50, p99 = statistics.median(r.p50_ms for r in rows), statistics.median(r.p99_ms for r in rows)
            print(
                f"c={c} {server.spec.name}: img/s median {statistics.median(img_s):.1f} "
                f"({min(img_s):.1f}-{max(img_s):.1f}), CPU ms/img {cpu:.2f}, p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms, failed {sum(r.failed for r in rows)}; paired ratio to {first}: {ratio} "
                f"({len(paired)} rounds)"
            )


if __name__ == "__main__":
    main()
