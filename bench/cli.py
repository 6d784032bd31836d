"""`vitserve bench ...`: benchmarks as a subcommand group: model, serve, peers, score, gpu."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vitserve.bench.serve import BenchConfig, ServerSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks that print markdown tables")
    group = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    register_model(group)
    register_serve(group)
    register_peers(group)
    register_score(group)
    register_flood(group)
    register_v2(group)
    register_gpu(group)


def register_v2(group: argparse._SubParsersAction) -> None:
    parser = group.add_parser(
        "v2",
        help="/classify vs the Open Inference Protocol's REST and gRPC routes, on one server",
        description="Needs wrk and h2load (apt-get install wrk nghttp2-client).",
    )
    parser.add_argument("model_dir", nargs="?", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--duration-s", type=float, default=8.0, help="measured seconds per point")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds before each point")
    parser.add_argument("--rounds", type=int, default=3, help="protocols in rotating order each round")
    parser.add_argument(
        "--grpc-streams", type=int, default=1, help="concurrent gRPC calls per HTTP/2 connection (h2load -m)"
    )
    parser.set_defaults(func=run_v2)


def run_v2(args: argparse.Namespace) -> int:
    from vitserve.bench.model import cpu_model
    from vitserve.bench.v2 import V2BenchConfig, markdown, run
    from vitserve.bench.workloads import digits

    workload = digits()
    model_dir = args.model_dir or workload.model_dir
    config = V2BenchConfig(
        tuple(args.concurrency), args.duration_s, args.warmup_s, args.rounds, args.grpc_streams
    )
    rates = run(model_dir, workload.image, workload.media_type, config)
    print(
        f"command: vitserve bench v2 {model_dir} --concurrency {' '.join(map(str, config.concurrencies))} "
        f"--duration-s {config.duration_s:g} --warmup-s {config.warmup_s:g} --rounds {config.rounds} "
        f"--grpc-streams {config.grpc_streams}"
    )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs; load average at the end: {load}")
    print(f"image: {workload.description}")
    print()
    print(markdown(rates, config))
    return 0


def register_flood(group: argparse._SubParsersAction) -> None:
    parser = group.add_parser(
        "flood",
        help="overload: served and shed per second under h2load floods, closed loop and paced open loop",
        description="The first connection count is the capacity point; the rest flood the server, then "
        "open loop paced at each --factors x capacity.",
    )
    from vitserve.bench.flood import add_flood_arguments

    parser.add_argument("model_dir", nargs="?", type=Path, default=None, help="default: the shipped model")
    add_flood_arguments(parser, "--duration-s")
    parser.add_argument(
        "--route",
        choices=["/classify", "/classify_batch", "v2"],
        default="/classify",
        help="v2: the model's Open Inference Protocol REST infer path, one BYTES image per request",
    )
    parser.add_argument("--images", type=int, default=4, help="images per /classify_batch request")
    parser.add_argument("--set", action="append", default=[], metavar="VITSERVE_X=V", help="a setting")
    parser.set_defaults(func=run_flood_command)


def run_flood_command(args: argparse.Namespace) -> int:
    from vitserve.bench.flood import flood_config, flood_upload, markdown, run_flood
    from vitserve.bench.peers import v2_infer_path
    from vitserve.bench.workloads import digits

    pairs = [pair.split("=", 1) for pair in args.set]
    if not all(len(pair) == 2 and pair[0].startswith("VITSERVE_") for pair in pairs):
        print("vitserve bench flood: --set takes VITSERVE_X=VALUE", file=sys.stderr)
        return 2
    settings = tuple((name, value) for name, value in pairs)
    workload = digits()
    model_dir = args.model_dir or workload.model_dir
    images = args.images if args.route == "/classify_batch" else 1
    route = v2_infer_path(model_dir) if args.route == "v2" else args.route
    config = flood_config(args, route=route, images_per_request=images, env=settings)
    upload = flood_upload(workload.image, workload.media_type, route, images)
    run = run_flood(model_dir, upload, config)
    print(
        f"command: vitserve bench flood {model_dir} --connections {' '.join(map(str, config.connections))} "
        f"--factors {' '.join(f'{f:g}' for f in config.factors)} --max-connections {config.max_connections} "
        f"--duration-s {config.duration_s:g} --max-in-flight {config.max_in_flight} --route {config.route}"
        + (f" --images {images}" if args.route == "/classify_batch" else "")
        + "".join(f" --set {k}={v}" for k, v in settings)
    )
    print(markdown(run, config))
    return 0


def register_gpu(group: argparse._SubParsersAction) -> None:
    from vitserve.bench.gpu_suite import add_arguments

    parser = group.add_parser(
        "gpu",
        help="the GPU run: FP16 export and placement, model-only img/s and MFU, the service",
        description="Each stage in a process of its own under a time budget; results.json and summary.md "
        "in --out (docs/gpu.md). --smoke runs the pipeline on a tiny ViT on any machine.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_gpu)


def run_gpu(args: argparse.Namespace) -> int:
    from vitserve.bench.gpu_suite import run_command

    return run_command(args)


def register_score(group: argparse._SubParsersAction) -> None:
    parser = group.add_parser(
        "score",
        help="vitserve score throughput as a fraction of the service's capacity, same run",
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--images", type=int, default=6000, help="images scored per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=8.0, help="capacity measurement time per round")
    parser.add_argument("--rounds", type=int, default=4, help="capacity/scoring rounds; medians reported")
    parser.add_argument(
        "--warmup-s", type=float, default=10.0, help="closed-loop load before the first round, not counted"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write py-spy's collapsed stacks of the last round's scoring here and print where the "
        "scorer's CPU went (needs py-spy)",
    )
    parser.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    from vitserve.bench.model import cpu_model
    from vitserve.bench.score import components, run

    result = run(
        args.model_dir,
        args.images,
        args.concurrency,
        args.batch_size,
        args.duration_s,
        args.rounds,
        args.profile,
        args.warmup_s,
    )
    command = ["vitserve", "bench", "score", str(args.model_dir), "--images", str(args.images)]
    command += ["--concurrency", str(args.concurrency), "--batch-size", str(args.batch_size)]
    command += [
        "--duration-s",
        str(args.duration_s),
        "--rounds",
        str(args.rounds),
        "--warmup-s",
        str(args.warmup_s),
    ]
    print(f"command: {shlex.join(command)}")
    print(f"cpu: {cpu_model()}; client and server share the machine; {os.cpu_count()} cores")
    print()
    print(
        "| round | capacity img/s | scoring img/s | ratio | scorer CPU ms/img "
        "| server CPU ms/img, scoring | server CPU ms/img, capacity |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for number, r in enumerate(result.rounds, start=1):
        print(
            f"| {number} | {r.capacity_images_per_s:.1f} | {r.scoring_images_per_s:.1f} | {r.ratio:.0%} "
            f"| {r.scorer_cpu_ms_per_image:.3f} | {r.server_cpu_ms_per_image:.3f} "
            f"| {r.capacity_server_cpu_ms_per_image:.3f} |"
        )
    capacity, scoring = result.median("capacity_images_per_s"), result.median("scoring_images_per_s")
    scorer_cpu, server_cpu = (
        result.median("scorer_cpu_ms_per_image"),
        result.median("server_cpu_ms_per_image"),
    )
    capacity_cpu = result.median("capacity_server_cpu_ms_per_image")
    ratio = f"**{result.ratio:.0%}**"
    print(
        f"| median | {capacity:.1f} | {scoring:.1f} | {ratio} | {scorer_cpu:.3f} | {server_cpu:.3f} "
        f"| {capacity_cpu:.3f} |"
    )
    print()
    print(
        f"capacity: the scorer's /classify_batch requests of {args.batch_size} sample images, "
        f"{args.concurrency} closed-loop clients; scoring: "
        f"{result.images} images per round, {result.failed} failed in all"
    )
    print(f"ratio (median of rounds): {result.ratio:.0%} (target >= 90%)")
    if args.profile is not None:
        print()
        print(f"where the scorer's CPU went (py-spy, GIL-holding samples, last round; in {args.profile}):")
        for name, share in components(args.profile):
            print(f"  {share:6.1%}  {name}")
    return 0


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--duration-s", type=float, default=8.0, help="measured seconds per point")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds before each point")
    parser.add_argument("--rounds", type=int, default=2, help="each server once per round, order alternating")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="ORT intra-op threads for model-only, the naive server and the peers "
        "(vitserve lays out its own from the CPUs it has)",
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the peers' batching window")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--no-half-load", action="store_true", help="skip the open-loop run at half capacity")
    parser.add_argument(
        "--vitserve-variant",
        action="append",
        default=[],
        metavar="LABEL:VITSERVE_X=V[,...]",
        help="also measure vitserve with these settings, e.g. spin:VITSERVE_ORT_SPIN=always (repeatable)",
    )
    parser.add_argument(
        "--v2",
        action="store_true",
        help="also measure vitserve through the Open Inference Protocol's REST route (vitserve-v2)",
    )


def _config(args: argparse.Namespace) -> BenchConfig:
    from vitserve.bench.serve import BenchConfig

    return BenchConfig(
        concurrencies=tuple(args.concurrency),
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        rounds=args.rounds,
        threads=args.threads,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        precision=args.precision,
        half_load=not args.no_half_load,
    )


def _load_flags(config: BenchConfig) -> list[str]:
    flags = ["--concurrency", *map(str, config.concurrencies), "--duration-s", f"{config.duration_s:g}"]
    flags += ["--warmup-s", f"{config.warmup_s:g}", "--rounds", str(config.rounds)]
    flags += ["--threads", str(config.threads), "--max-batch-size", str(config.max_batch_size)]
    flags += ["--batch-wait-ms", f"{config.batch_wait_ms:g}", "--precision", config.precision]
    return flags + ([] if config.half_load else ["--no-half-load"])


def _variants(args: argparse.Namespace) -> tuple[list[ServerSpec], list[str]]:
    from vitserve.bench.peers import VITSERVE_V2, vitserve_variant

    specs = [vitserve_variant(v) for v in args.vitserve_variant]
    flags = [f for v in args.vitserve_variant for f in ("--vitserve-variant", v)]
    return ([VITSERVE_V2] if args.v2 else []) + specs, (["--v2"] if args.v2 else []) + flags


def register_serve(group: argparse._SubParsersAction) -> None:
    parser = group.add_parser(
        "serve",
        help="end-to-end img/s, p50/p99 and server CPU per image: vitserve vs a naive server vs model-only",
        description="wrk closed-loop at each concurrency, plus an open-loop run at half capacity.",
    )
    parser.add_argument("model_dirs", nargs="+", type=Path, help="directories written by `vitserve export`")
    _add_load_options(parser)
    parser.set_defaults(func=run_serve)


def register_peers(group: argparse._SubParsersAction) -> None:
    parser = group.add_parser(
        "peers",
        help="vitserve vs the naive server vs BentoML, LitServe, PyTriton and Ray Serve, on two models",
        description="Needs `pip install 'vitserve[peers]'` for the peers and the export extra for vit-tiny; "
        "a peer that cannot run is reported as such.",
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["digits", "vit-tiny"], choices=["digits", "vit-tiny"]
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        default=["bentoml", "litserve", "pytriton", "ray"],
        help="peer frameworks to add",
    )
    parser.add_argument(
        "--tritonclient",
        action="store_true",
        help="instead of the naive server and the peers: vitserve's and PyTriton's v2 REST and gRPC routes "
        "driven by Triton's own async client (tritonclient), beside vitserve's /classify under wrk "
        "and aiohttp",
    )
    _add_load_options(parser)
    parser.set_defaults(func=run_peers)


def _print_header(command: list[str], config: BenchConfig) -> None:
    from vitserve.bench.model import cpu_model

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"command: {shlex.join(command)}")
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs; load average at start: {load}")
    print(
        f"load generator: wrk, one thread, closed loop, on the same machine; {config.warmup_s:g} s warm-up "
        f"+ {config.duration_s:g} s per point; {config.rounds} round(s), servers in alternating order"
    )


def run_serve(args: argparse.Namespace) -> int:
    from vitserve.bench.peers import NAIVE, VITSERVE
    from vitserve.bench.serve import markdown, run
    from vitserve.bench.workloads import digits

    config = _config(args)
    variants, flags = _variants(args)
    command = ["vitserve", "bench", "serve", *map(str, args.model_dirs), *_load_flags(config), *flags]
    _print_header(command, config)
    sample = digits()
    # The shipped model's sample image fits any model: it is resized like any upload.
    workloads = [(d, (sample.image, sample.media_type), sample.description) for d in args.model_dirs]
    for report in run(workloads, [VITSERVE, *variants, NAIVE], config):
        print()
        print(markdown(report, config))
    return 0


def run_peers(args: argparse.Namespace) -> int:
    from vitserve.bench.peers import NAIVE, VITSERVE, available, tritonclient_systems
    from vitserve.bench.serve import markdown, run
    from vitserve.bench.workloads import WORKLOADS

    config = _config(args)
    variants, flags = _variants(args)
    command = ["vitserve", "bench", "peers", "--workloads", *args.workloads]
    command += ["--tritonclient"] if args.tritonclient else ["--peers", *args.peers]
    _print_header([*command, *_load_flags(config), *flags], config)
    if args.tritonclient:
        print(
            "v2 systems: Triton's async client (tritonclient.http.aio / .grpc.aio), one process of its own, "
            "one image per request as a BYTES tensor, the top 5 through the classification extension; "
            "vitserve /classify (aiohttp): the same loop posting the image to /classify, the control for "
            "a Python client's own CPU"
        )
        systems, missing = tritonclient_systems()
    else:
        peers, missing = available(args.peers)
        systems = [NAIVE, *peers]
    workloads = []
    for name in args.workloads:
        w = WORKLOADS[name]()
        workloads.append((w.model_dir, (w.image, w.media_type), w.description))
    for report in run(workloads, [VITSERVE, *variants, *systems], config, unavailable=missing):
        print()
        print(markdown(report, config))
    return 0


def register_model(group: argparse._SubParsersAction) -> None:
    parser = group.add_parser(
        "model",
        help="model-only images/s: PyTorch vs ORT fp32 unfused/fused vs ORT int8",
        description="Model-only throughput on CPU, interleaved rounds, medians, ratios vs PyTorch eager.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="preset names (random weights) or checkpoint paths; default: ViT-Ti/16, ViT-B/16, default model",
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every runtime")
    parser.add_argument(
        "--min-round-s", type=float, default=0.5, help="each round repeats calls for this long"
    )
    parser.add_argument(
        "--cell-budget-s",
        type=float,
        default=60.0,
        help="seconds per (model, batch); heavy cells get fewer rounds",
    )
    parser.set_defaults(func=run_model)


def run_model(args: argparse.Namespace) -> int:
    from vitserve.bench.model import BenchConfig, default_models, environment, markdown_table, run_benchmark

    config = BenchConfig(
        models=tuple(args.models) if args.models else default_models(),
        batches=tuple(args.batches),
        rounds=args.rounds,
        threads=args.threads,
        min_round_s=args.min_round_s,
        cell_budget_s=args.cell_budget_s,
    )
    rows = run_benchmark(config)
    # The command with every default spelled out, so that the figures can be reproduced exactly.
    command = [
        "vitserve",
        "bench",
        "model",
        "--models",
        *config.models,
        "--batches",
        *map(str, config.batches),
    ]
    command += ["--rounds", str(config.rounds), "--threads", str(config.threads)]
    command += ["--min-round-s", str(config.min_round_s), "--cell-budget-s", str(config.cell_budget_s)]
    print(f"command: {shlex.join(command)}")
    print(environment(config))
    print()
    print(markdown_table(rows))
    return 0
