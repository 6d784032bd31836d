"""GPU suite, stage 2: model-only images/s of the FP16 ViT, five ways, with MFU.

  ort-served        runtime/session.py's OnnxClassifier as the service runs it: uint8 pixels from host
                    memory in, float32 logits back to host memory, every call
  ort-iobinding     the same session kind with IO binding: input and output buffers stay on the device
  ort-cudagraph     IO binding plus the CUDA provider's CUDA graphs, one graph per batch size (fixed
                    shapes and addresses; `gpu_graph_id` = the batch size)
  torch-eager-fp16  PyTorch eager, the ViT in float16 (attention through SDPA), pixels on the device
  torch-compile     the same module through torch.compile

Each call returns with its logits computed (ORT synchronises at the end of a run; the PyTorch runners
synchronise the device), so images/s is calls x batch / wall time. Variants run one after the other,
each with its share of the stage's budget; batch sizes from the largest down, so that a variant cut
short by its share still has the batch sizes where throughput peaks.
MFU = images/s x FLOP per image / peak, FLOP = 2 x multiply-adds of the ViT (35.1 G for ViT-B/16).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from vitserve.bench.gpu_config import SuiteConfig
from vitserve.bench.gpu_export import VIT_DIR, load_vit
from vitserve.bench.gpu_record import StageRecord
from vitserve.bench.model import time_round
from vitserve.export.convert import PixelClassifier
from vitserve.models.pixels import normalise_pixels
from vitserve.models.vit import ViTConfig
from vitserve.runtime.artifact import ARTIFACT_FILES, INPUT_NAME, OUTPUT_NAME
from vitserve.runtime.session import CPU, CUDA, OnnxClassifier, SessionOptions

VARIANTS = ("ort-served", "ort-iobinding", "ort-cudagraph", "torch-eager-fp16", "torch-compile")
WARMUP_CALLS = 3  # ORT captures its CUDA graph after a couple of plain runs; torch.compile compiles on call 1
Run = Callable[[Any], object]  # called with the batch's pixels (time_round counts len(pixels) images)
Prepare = Callable[[int], tuple[Run, Any]]  # batch -> (run, pixels)


def vit_flops(c: ViTConfig) -> float:
    """FLOP of one image's forward pass: 2 x multiply-adds of the matmuls and the patch projection."""
    tokens, hidden = c.num_patches + 1, int(c.dim * c.mlp_ratio)
    per_block = tokens * c.dim * 3 * c.dim + 2 * tokens * tokens * c.dim + tokens * c.dim * c.dim
    per_block += 2 * tokens * c.dim * hidden
    patch = c.num_patches * c.dim * c.in_chans * c.patch_size**2
    return 2.0 * (c.depth * per_block + patch + c.dim * c.num_classes)


class Fp16PixelClassifier(PixelClassifier):
    """uint8 pixels -> logits with the ViT in float16: normalised in float32, then cast, as the FP16
    artifact does (export/precision.py keeps its uint8 input and casts inside)."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = normalise_pixels(pixels, self.mean, self.std).half()
        tokens, _ = self.vit.forward_features(x, True)
        return self.vit.forward_head(tokens)


def _pixels(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(batch).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def ort_served(model_dir: Path, config: SuiteConfig, size: int) -> Prepare:
    options = SessionOptions(precision="fp16", device=config.device, intra_op_threads=config.threads)
    classifier = OnnxClassifier(model_dir, options)

    def prepare(batch: int) -> tuple[Run, Any]:
        return classifier.predict_batch, _pixels(batch, size)

    return prepare


def ort_bound(path: Path, config: SuiteConfig, size: int, num_classes: int, cuda_graph: bool) -> Prepare:
    """IO binding with the input and output buffers allocated once on the device, per batch size."""
    device = "cuda" if config.device == "cuda" else "cpu"
    if cuda_graph and device != "cuda":
        raise RuntimeError("CUDA graphs need the CUDA provider; this run has none")
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    cuda_options = {"enable_cuda_graph": "1"} if cuda_graph else {}
    providers: list[Any] = [(CUDA, cuda_options), CPU] if device == "cuda" else [CPU]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if device == "cuda" and session.get_providers()[0] != CUDA:
        raise RuntimeError(f"asked for CUDA, the session runs on {session.get_providers()}")

    def prepare(batch: int) -> tuple[Run, Any]:
        pixels = _pixels(batch, size)
        x = ort.OrtValue.ortvalue_from_numpy(pixels, device, 0)
        y = ort.OrtValue.ortvalue_from_shape_and_type((batch, num_classes), np.float32, device, 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, x)
        binding.bind_ortvalue_output(OUTPUT_NAME, y)
        run_options = ort.RunOptions()
        if cuda_graph:
            run_options.add_run_config_entry("gpu_graph_id", str(batch))  # one captured graph per shape

        # The default argument keeps x and y (the device buffers bound above) alive as long as run is.
        def run(_: Any, buffers: tuple[Any, ...] = (x, y)) -> object:
            return session.run_with_iobinding(binding, run_options)

        return run, pixels

    return prepare


def torch_runner(module: torch.nn.Module, device: str, size: int) -> Prepare:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def prepare(batch: int) -> tuple[Run, Any]:
        pixels = torch.from_numpy(_pixels(batch, size)).to(device)

        def run(p: torch.Tensor) -> object:
            with torch.inference_mode():
                out = module(p)
            sync()
            return out

        return run, pixels

    return prepare


def builders(config: SuiteConfig, record: StageRecord) -> dict[str, Callable[[], Prepare]]:
    loaded, source = load_vit(config)
    vit = loaded.model
    size, classes = vit.config.image_size, vit.config.num_classes
    record.put("model", value={"source": source, "config": vit.config.to_dict()})
    fp16 = config.work_dir / VIT_DIR / ARTIFACT_FILES["fp16"]
    device = "cuda" if config.device == "cuda" else "cpu"

    def torch_module() -> torch.nn.Module:
        module = Fp16PixelClassifier(vit, loaded.preprocessing).eval().to(device)
        module.vit.half()
        return module

    def compiled() -> Prepare:
        module = torch.compile(torch_module(), backend=config.compile_backend, dynamic=False)
        return torch_runner(module, device, size)  # type: ignore[arg-type]

    def artifact() -> Path:
        if not fp16.is_file():
            raise FileNotFoundError(f"{fp16} is missing: the export stage did not write it")
        return fp16

    return {
        "ort-served": lambda: ort_served(artifact().parent, config, size),
        "ort-iobinding": lambda: ort_bound(artifact(), config, size, classes, cuda_graph=False),
        "ort-cudagraph": lambda: ort_bound(artifact(), config, size, classes, cuda_graph=True),
        "torch-eager-fp16": lambda: torch_runner(torch_module(), device, size),
        "torch-compile": compiled,
    }


def measure(variant: str, prepare: Prepare, config: SuiteConfig, record: StageRecord, share_s: float) -> None:
    deadline = time.monotonic() + share_s
    flops = record.figures["flops_per_image"]
    for batch in sorted(config.batches, reverse=True):
        if time.monotonic() > deadline:
            record.skip(
                f"{variant} b={batch}", f"the variant's share of the stage budget ({share_s:.0f} s) is used"
            )
            continue
        with record.attempt(f"{variant} b={batch}"):
            run, pixels = prepare(batch)
            started = time.perf_counter()
            for _ in range(WARMUP_CALLS):
                run(pixels)
            warmup_s = time.perf_counter() - started
            rates = [time_round(run, pixels, config.min_round_s) for _ in range(config.rounds)]
            rate = statistics.median(rates)
            record.append(
                "rows",
                value={
                    "variant": variant,
                    "batch": batch,
                    "images_per_s": rate,
                    "ms_per_batch": 1000 * batch / rate,
                    "mfu": rate * flops / (config.peak_tflops * 1e12),
                    "rounds": len(rates),
                    "spread": [min(rates), max(rates)],
                    "warmup_s": warmup_s,
                },
            )


def run(config: SuiteConfig, record: StageRecord) -> None:
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    build: dict[str, Callable[[], Prepare]] = {}
    with record.attempt("load"):
        build = builders(config, record)
    if not build:
        return
    loaded_config = ViTConfig(**record.figures["model"]["config"])
    record.put("flops_per_image", value=vit_flops(loaded_config))
    record.put("peak_tflops", value=config.peak_tflops)
    record.put("device", value=config.device)
    record.put("versions", value={"torch": torch.__version__, "onnxruntime": ort.__version__})
    record.put("compile_backend", value=config.compile_backend)
    if config.device == "cuda":
        record.put("gpu", value=torch.cuda.get_device_name(0))
    for index, variant in enumerate(VARIANTS):
        share = record.left_s() / (len(VARIANTS) - index)
        if config.device != "cuda" and variant == "ort-cudagraph":
            record.skip(variant, "CUDA graphs need the CUDA provider; this run has none")
            continue
        with record.attempt(variant):
            started = time.monotonic()
            prepare = build[variant]()
            record.put("setup_s", variant, value=time.monotonic() - started)
            measure(variant, prepare, config, record, share - (time.monotonic() - started))
        # One variant's sessions, graphs and compiled kernels at a time on the device.
        prepare = None  # type: ignore[assignment]
        gc.collect()
        if config.device == "cuda":
            torch.cuda.empty_cache()
