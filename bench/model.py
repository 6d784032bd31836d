"""Model-only throughput: PyTorch eager vs ONNX Runtime (unfused, fused, as served, INT8) on the same CPU
threads.

Every variant of one (model, batch) runs once per round, rounds interleaved, so that drift in the
machine's load hits all variants alike; the table reports per-variant medians and ratios to PyTorch.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from vitserve.export.convert import PixelClassifier, export_onnx
from vitserve.export.fusion import count_fusion
from vitserve.export.optimize import attention_on_tokens
from vitserve.export.precision import INT8_OP_TYPES, through_files, to_int8
from vitserve.export.verify import make_session
from vitserve.models.checkpoint import LoadedModel, load_checkpoint
from vitserve.models.vit import PRESETS, ViT
from vitserve.runtime.artifact import INPUT_NAME, Preprocessing
from vitserve.runtime.session import CPU

# ort-fp32 and ort-int8 are the graphs `vitserve export` writes for the CPU (attention on the token
# layout; INT8 static); ort-fp32-fused is the exporter's own layout; ort-int8-dynamic, the CPU default
# vitserve once served, quantises each run's activations over the whole batch, so its answers depend on
# batch-mates: a reference for speed, never served now.
VARIANTS = ("pytorch", "ort-fp32-unfused", "ort-fp32-fused", "ort-fp32", "ort-int8", "ort-int8-dynamic")
# Calibration images for the INT8 variant: speed does not depend on which images set the scales.
CALIBRATION_IMAGES = 32
# The shipped model's checkpoint folder (models/digits-vit), when the trained one is present.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "digits-vit"


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    batches: tuple[int, ...] = (1, 8, 32)
    rounds: int = 5
    threads: int = 2
    # Each timed round repeats its call until this much time has passed, so batch-1 rounds are not noise.
    min_round_s: float = 0.5
    # Time allowed per (model, batch) cell: heavy cells (ViT-B/16 at batch 32) get fewer rounds, never < 2.
    cell_budget_s: float = 60.0


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    variant: str
    images_per_s: float  # median over rounds
    rounds: int


def default_models() -> tuple[str, ...]:
    default = str(DEFAULT_CHECKPOINT) if (DEFAULT_CHECKPOINT / "model.safetensors").is_file() else "digits"
    return ("vit_tiny_patch16_224", "vit_base_patch16_224", default)


def load_model(spec: str) -> tuple[str, LoadedModel]:
    """A preset name gives random weights (speed does not depend on them); anything else is a checkpoint."""
    if spec in PRESETS:
        torch.manual_seed(0)
        config = PRESETS[spec]
        loaded = LoadedModel(
            model=ViT(config).eval(),
            labels=tuple(str(i) for i in range(config.num_classes)),
            preprocessing=Preprocessing(image_size=config.image_size),
            name=spec,
            version="random",
            source_sha256="",
        )
        return f"{spec} (random weights)", loaded
    loaded = load_checkpoint(spec)
    return f"{loaded.name} ({spec})", loaded


def build_runners(loaded: LoadedModel, threads: int) -> dict[str, Callable[[np.ndarray], object]]:
    vit = loaded.model.eval()
    unfused = export_onnx(vit, loaded.preprocessing, fused=False)
    fused = export_onnx(vit, loaded.preprocessing, fused=True)
    if count_fusion(fused).fused_attention != vit.config.depth or count_fusion(unfused).fused_attention:
        raise RuntimeError("benchmark graphs are not what their names say (fused/unfused)")
    module = PixelClassifier(vit, loaded.preprocessing).eval()  # PyTorch eager runs SDPA, as served
    served, _ = attention_on_tokens(fused)
    size = loaded.preprocessing.image_size
    calibration = np.random.default_rng(0).integers(0, 256, (CALIBRATION_IMAGES, size, size, 3), np.uint8)
    sessions = {
        "ort-fp32-unfused": make_session(unfused, CPU, threads),
        "ort-fp32-fused": make_session(fused, CPU, threads),
        "ort-fp32": make_session(served, CPU, threads),
        "ort-int8": make_session(to_int8(served, calibration), CPU, threads),
        "ort-int8-dynamic": make_session(dynamic_int8(fused), CPU, threads),
    }

    def run_torch(pixels: np.ndarray) -> object:
        with torch.inference_mode():
            return module(torch.from_numpy(pixels))

    def run_session(session: ort.InferenceSession) -> Callable[[np.ndarray], object]:
        return lambda pixels: session.run(None, {INPUT_NAME: pixels})

    runners: dict[str, Callable[[np.ndarray], object]] = {"pytorch": run_torch}
    runners.update({name: run_session(s) for name, s in sessions.items()})
    return runners


def dynamic_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """INT8 weights, activations quantised per run over the whole batch tensor."""
    return through_files(
        model,
        lambda src, dst: quantize_dynamic(
            src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OP_TYPES
        ),
    )


def time_round(run: Callable[[np.ndarray], object], pixels: np.ndarray, min_s: float) -> float:
    calls, start = 0, time.perf_counter()
    while True:
        run(pixels)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return calls * len(pixels) / elapsed


def bench_model(spec: str, config: BenchConfig) -> list[Row]:
    name, loaded = load_model(spec)
    runners = build_runners(loaded, config.threads)
    size = loaded.preprocessing.image_size
    rows = []
    for batch in config.batches:
        pixels = np.random.default_rng(batch).integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
        start = time.perf_counter()
        for run in runners.values():
            run(pixels)  # warm-up: first-call allocations and ORT's kernel selection
        one_round = max(time.perf_counter() - start, len(VARIANTS) * config.min_round_s)
        rounds = min(config.rounds, max(2, int(config.cell_budget_s / one_round)))
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            for variant in VARIANTS:
                samples[variant].append(time_round(runners[variant], pixels, config.min_round_s))
        rows += [Row(name, batch, v, statistics.median(samples[v]), rounds) for v in VARIANTS]
    return rows


def run_benchmark(config: BenchConfig) -> list[Row]:
    torch.set_num_threads(config.threads)
    rows: list[Row] = []
    for spec in config.models:
        rows += bench_model(spec, config)
    return rows


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass  # fall through to /proc/cpuinfo, then to platform's answer
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| model | batch | variant | images/s (median) | vs PyTorch | rounds |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    baseline = {(r.model, r.batch): r.images_per_s for r in rows if r.variant == "pytorch"}
    for r in rows:
        ratio = r.images_per_s / baseline[(r.model, r.batch)]
        lines.append(
            f"| {r.model} | {r.batch} | {r.variant} | {r.images_per_s:.1f} | {ratio:.2f}x | {r.rounds} |"
        )
    return "\n".join(lines)


def environment(config: BenchConfig) -> str:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs visible), load average at end: {load}\n"
        f"threads: {config.threads} (torch intra-op and ORT intra_op_num_threads), rounds: up to "
        f"{config.rounds} (fewer, never < 2, where one round exceeds the {config.cell_budget_s:.0f}s cell "
        f"budget), min round: {config.min_round_s}s\n"
        f"torch {torch.__version__}, onnxruntime {ort.__version__}"
    )
