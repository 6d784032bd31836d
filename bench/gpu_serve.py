"""GPU suite, stage 3: the service end to end, `vitserve serve` on the ViT's FP16 artifact.

First the CPU's decode capacity alone (runtime/decode.py on each test JPEG, in as many processes as the
service has API workers, no server running). Then one server (VITSERVE_DEVICE=cuda, N API workers
feeding one model server) driven by wrk closed-loop at each concurrency with a 224x224 and a 500x375
JPEG (bench/serve.py's measure_point: img/s, p50/p99, server CPU per image), while /metrics gives the
batch sizes the batcher formed and NVML the GPU's utilisation. Batch sizes and utilisation cover a
point's warm-up and measured seconds alike (the same concurrency throughout).

Each point is compared with its bound, min(model-only img/s at the mean batch size formed, decode
capacity): model-only is stage 2's ort-served (the service's own session kind), read from its record.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import httpx

from vitserve.bench.gpu_config import SuiteConfig
from vitserve.bench.gpu_export import VIT_DIR
from vitserve.bench.gpu_monitor import UtilisationSampler
from vitserve.bench.gpu_record import StageRecord
from vitserve.bench.peers import VITSERVE, multipart
from vitserve.bench.serve import BenchConfig, Server, check_answers, measure_point
from vitserve.bench.workloads import photo_jpeg
from vitserve.runtime.artifact import ARTIFACT_FILES, Preprocessing, read_metadata
from vitserve.runtime.decode import DecodeLimits, decode_image

IMAGES = {"224x224 JPEG": (224, 224), "500x375 JPEG": (500, 375)}
STOP_RESERVE_S = 15.0  # stopping a BentoML tree of many workers takes seconds
SERVER_LOG = "server.log"


def _decode_loop(job: tuple[bytes, dict[str, Any], float, float]) -> tuple[int, float, float]:
    """In a worker process: decode for `seconds` from `start` (wall clock, shared by every worker), or
    from when it got there if later; returns (images, seconds, how late it began)."""
    data, pre, start, seconds = job
    preprocessing, limits = Preprocessing.from_dict(pre), DecodeLimits()
    decode_image(data, preprocessing, limits)  # imports and first-call costs before the clock
    time.sleep(max(0.0, start - time.time()))
    late = max(0.0, time.time() - start)
    count, begun = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - begun < seconds:
        decode_image(data, preprocessing, limits)
        count += 1
    return count, time.perf_counter() - begun, late


def decode_capacity(data: bytes, pre: Preprocessing, processes: int, seconds: float) -> dict[str, Any]:
    """Images/s that `processes` processes decode and resize together, all starting at one instant."""
    context = multiprocessing.get_context("spawn")  # no copy of this process's threads and sessions
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        start = time.time() + 1.5 + 0.1 * processes  # time for every worker to spawn and warm up
        jobs = [(data, pre.to_dict(), start, seconds)] * processes
        results = list(pool.map(_decode_loop, jobs))
    per_process = [count / elapsed for count, elapsed, _ in results]
    return {
        "processes": processes,
        "images_per_s": sum(per_process),
        "per_process_images_per_s": min(per_process),
        "seconds": seconds,
        # A process that began late overlapped the others less: the sum then overstates capacity.
        "latest_start_s": max(late for _, _, late in results),
    }


def model_only_rates(config: SuiteConfig) -> dict[int, float]:
    """Stage 2's ort-served images/s by batch size, from its record; {} where it measured none."""
    path = config.work_dir / "stage-model.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["figures"].get("rows", [])
    return {r["batch"]: r["images_per_s"] for r in rows if r["variant"] == "ort-served"}


def rate_at(rates: dict[int, float], batch: float) -> float | None:
    """Model-only images/s at a (mean, fractional) batch size, linear between measured sizes."""
    if not rates:
        return None
    sizes = sorted(rates)
    if batch <= sizes[0]:
        return rates[sizes[0]]
    for low, high in itertools.pairwise(sizes):
        if batch <= high:
            share = (batch - low) / (high - low)
            return rates[low] + share * (rates[high] - rates[low])
    return rates[sizes[-1]]


def batch_sizes(before: str, after: str) -> dict[str, Any]:
    """The batches formed between two /metrics scrapes: count, mean and per-bucket counts."""
    from vitserve.harness.metrics import histogram  # the repository's one reader of /metrics histograms

    formed = histogram(after, "vitserve_batch_size").minus(histogram(before, "vitserve_batch_size"))
    return {
        "batches": formed.count,
        "mean": formed.sum / formed.count if formed.count else 0.0,
        "buckets": {f"<={upper:g}": n for _, upper, n in formed.buckets() if n},
    }


def server_env(config: SuiteConfig, precision: str) -> dict[str, str]:
    return {
        "VITSERVE_DEVICE": config.device,
        "VITSERVE_PRECISION": precision,
        "VITSERVE_API_WORKERS": str(config.api_workers),
        "VITSERVE_MAX_BATCH_SIZE": str(config.max_batch_size),
        # Closed-loop clients never exceed the concurrency; nothing may be shed as overload.
        "VITSERVE_MAX_IN_FLIGHT": str(max(128, *config.concurrencies)),
        "VITSERVE_ACCESS_LOG": "0",
    }


def run(config: SuiteConfig, record: StageRecord) -> None:
    from vitserve.harness.metrics import fetch

    model_dir = config.work_dir / VIT_DIR
    precision = "fp16" if config.device == "cuda" else "fp32"
    artifact = model_dir / ARTIFACT_FILES[precision]
    if not artifact.is_file():
        raise FileNotFoundError(f"{artifact} is missing: the export stage did not write it")
    pre = read_metadata(artifact).preprocessing
    images = {label: photo_jpeg(w, h, seed=7) for label, (w, h) in IMAGES.items()}
    env = server_env(config, precision)
    record.put(
        "setup",
        value={"artifact": str(artifact), "env": env, "images_bytes": {k: len(v) for k, v in images.items()}},
    )
    for label, data in images.items():
        with record.attempt(f"decode capacity {label}"):
            record.put(
                "decode_capacity",
                label,
                value=decode_capacity(data, pre, config.api_workers, config.duration_s),
            )

    rates = model_only_rates(config)
    record.put("model_only_ort_served", value={str(b): r for b, r in sorted(rates.items())})
    bench = BenchConfig(duration_s=config.duration_s, warmup_s=config.warmup_s)
    spec = replace(VITSERVE, name="vitserve-gpu", env=lambda model_dir, bench_config: env)
    server = Server(spec, model_dir, bench)
    sampler = UtilisationSampler()
    if not sampler.available:
        record.put("gpu_utilisation", value={"unavailable": sampler.reason})
    try:
        started = time.monotonic()
        server.start(timeout_s=max(30.0, record.left_s() - STOP_RESERVE_S))
        record.put("startup_s", value=time.monotonic() - started)
        info = httpx.get(server.url + "/model", timeout=30).json()
        record.put("model_info", value=info)
        if config.device == "cuda" and info.get("providers", [None])[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"the server's session runs on {info.get('providers')}, not CUDA")
        point_s = config.warmup_s + config.duration_s + 2.0
        for label, data in images.items():
            upload = multipart(data, "image/jpeg")
            check_answers(server, upload, n=4)
            for c in config.concurrencies:
                if record.left_s() < point_s + STOP_RESERVE_S:
                    record.skip(f"{label} c={c}", "the stage budget is used")
                    continue
                with record.attempt(f"{label} c={c}"):
                    before = fetch(server.url)
                    with sampler:
                        point = measure_point(server, upload, c, bench)
                    formed = batch_sizes(before, fetch(server.url))
                    ceiling = rate_at(rates, formed["mean"])
                    decode = record.figures.get("decode_capacity", {}).get(label, {}).get("images_per_s")
                    bounds = [b for b in (ceiling, decode) if b]
                    record.append(
                        "points",
                        value={
                            "image": label,
                            **asdict(point),
                            "batch_sizes": formed,
                            "gpu": sampler.summary(),
                            "model_only_at_mean_batch": ceiling,
                            "bound": min(bounds) if bounds else None,
                            "ratio_to_bound": point.images_per_s / min(bounds) if bounds else None,
                        },
                    )
                    print(f"  {label} c={c}: {point.images_per_s:.1f} img/s", file=sys.stderr, flush=True)
    finally:
        server.stop()
        if server.log_path.is_file():
            shutil.copyfile(server.log_path, Path(config.out) / SERVER_LOG)
