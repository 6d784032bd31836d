"""The ONNX Runtime session behind the service: artifact choice, provider choice, batched inference.

A missing CUDA makes ONNX Runtime fall back to the CPU silently, so the provider a session really got
is read back from `session.get_providers()` and never assumed from what was asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitserve.runtime.artifact import (
    ARTIFACT_FILES,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    PRECISIONS,
    ArtifactMetadata,
    metadata_from_props,
)
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.ort_capi import CSession, OrtApiError
from vitserve.runtime.spin import spin_config

if TYPE_CHECKING:
    import onnxruntime as ort

    from vitserve.runtime.shared_weights import SharedWeights

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# A run config entry: at the end of that run, the CPU arena frees the regions no tensor uses.
SHRINK_CPU_ARENA = ("memory.enable_memory_arena_shrinkage", "cpu:0")


class ModelLoadError(RuntimeError):
    """The model directory has no usable artifact for the requested precision/provider."""


def gpu_present() -> bool:
    """A cheap check that an NVIDIA device node exists, before asking ORT for CUDA at all."""
    if not Path("/dev/nvidiactl").exists():
        return False
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def wants_cuda(device: str) -> bool:
    """Whether a session for this device setting (auto | cuda | cpu) asks for the CUDA provider."""
    return device == "cuda" or (device == "auto" and gpu_present())


@dataclass(frozen=True)
class SessionOptions:
    precision: str = "auto"  # auto | fp32 | fp16 | int8
    device: str = "auto"  # auto | cuda | cpu
    intra_op_threads: int = 0  # 0: the CPU budget
    inter_op_threads: int = 1
    spin: str = "never"  # how the intra-op threads wait for work: runtime/spin.py


def auto_order(use_cuda: bool) -> list[str]:
    """What `auto` looks for, in order: FP16 on a GPU, else INT8 (static, so batch-invariant) then FP32."""
    return ["fp16", "fp32"] if use_cuda else ["int8", "fp32"]


def choose_artifact(model_dir: Path, precision: str, use_cuda: bool) -> Path:
    """auto: the first of auto_order present; an explicit precision must exist."""
    if precision == "auto":
        order = auto_order(use_cuda)
    else:
        if precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            raise ModelLoadError(f"unknown precision {precision!r}; choose from auto, {choices}")
        order = [precision]
    for candidate in order:
        path = model_dir / ARTIFACT_FILES[candidate]
        if path.is_file():
            return path
    wanted = ", ".join(ARTIFACT_FILES[p] for p in order)
    raise ModelLoadError(f"no artifact in {model_dir} for precision {precision!r} (looked for {wanted})")


def why_chosen(path: Path, precision: str, use_cuda: bool) -> str:
    """One line for GET /model: why this file serves."""
    if precision != "auto":
        return f"precision {precision} was asked for"
    files = [ARTIFACT_FILES[p] for p in auto_order(use_cuda)]
    missing = files[: files.index(path.name)]
    where = "a GPU" if use_cuda else "the CPU"
    reason = f"auto on {where} serves the first of {', '.join(files)} in the folder"
    return reason + (f"; it has no {', '.join(missing)}" if missing else "")


class OnnxClassifier:
    """One ORT session over a vitserve artifact; `predict_batch` takes uint8 (N, H, W, 3) pixels."""

    def __init__(
        self, model_dir: Path, options: SessionOptions, weights: SharedWeights | None = None
    ) -> None:
        """weights: build the session through the C API on those shared weights (CPU only), so that
        other sessions built on them hold no second copy (runtime/shared_weights.py)."""
        want_cuda = wants_cuda(options.device)
        self.path = choose_artifact(model_dir, options.precision, want_cuda)
        self.choice = why_chosen(self.path, options.precision, want_cuda)
        threads = options.intra_op_threads or cpu_budget()
        config = spin_config(options.spin)
        self.session: ort.InferenceSession | CSession
        self.weights_shared = weights is not None
        if weights is not None:
            if want_cuda or weights.path != self.path:
                raise ModelLoadError(
                    f"weights shared from {weights.path} cannot serve {self.path} on {options.device}"
                )
            try:
                self.session = weights.session(threads, options.inter_op_threads, config)
                found = self.session.custom_metadata(METADATA_KEY)
                props = {} if found is None else {METADATA_KEY: found}
            except OrtApiError as exc:
                raise ModelLoadError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
            self.providers: tuple[str, ...] = (CPU,)
        else:
            # Imported here: a worker whose sessions all share weights never loads it (runtime/ort_capi.py).
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = options.inter_op_threads
            for key, value in config.items():
                so.add_session_config_entry(key, value)
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            providers = [CUDA, CPU] if want_cuda else [CPU]
            try:
                self.session = ort.InferenceSession(str(self.path), so, providers=providers)
            except Exception as exc:  # ORT raises one unrelated class per status (InvalidProtobuf, Fail, ...)
                raise ModelLoadError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
            self.providers = tuple(self.session.get_providers())
            props = self.session.get_modelmeta().custom_metadata_map
        if options.device == "cuda" and self.providers[0] != CUDA:
            raise ModelLoadError(f"CUDA was required but the session runs on {self.providers}")
        self.metadata: ArtifactMetadata = metadata_from_props(props, self.path)
        self.intra_op_threads = threads
        size = self.metadata.preprocessing.image_size
        self.input_shape = (size, size, 3)
        log.info(
            "loaded %s (%s) on %s, %d threads", self.path, self.metadata.precision, self.providers, threads
        )
        if self.metadata.batch_max_abs_logit is None:
            log.warning(
                "%s predates the export's batch-invariance gate: an image's scores may depend on its "
                "batch-mates; export it again with `vitserve export`",
                self.path,
            )

    def predict_batch(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, num_classes) float32 logits."""
        if pixels.dtype != np.uint8 or pixels.shape[1:] != self.input_shape:
            raise ValueError(f"expected uint8 (N, {self.input_shape}), got {pixels.dtype} {pixels.shape}")
        return self._logits(np.ascontiguousarray(pixels))

    def release_arena(self) -> None:
        """A batch of one that gives back, as it ends, the arena memory larger batches took: otherwise
        warm-up's largest batch keeps its activations' memory resident at rest (docs/latency.md)."""
        self._logits(np.zeros((1, *self.input_shape), dtype=np.uint8), dict([SHRINK_CPU_ARENA]))

    def _logits(self, pixels: np.ndarray, run_config: dict[str, str] | None = None) -> np.ndarray:
        if isinstance(self.session, CSession):
            return self.session.run(INPUT_NAME, pixels, OUTPUT_NAME, run_config)
        options = None
        if run_config:
            import onnxruntime as ort

            options = ort.RunOptions()
            for key, value in run_config.items():
                options.add_run_config_entry(key, value)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels}, options)
        return np.asarray(logits, dtype=np.float32)

    def warm_up(self, batch_sizes: list[int]) -> None:
        """Run each batch size once, so first requests do not pay for allocations and kernel choice."""
        for n in batch_sizes:
            self.predict_batch(np.zeros((n, *self.input_shape), dtype=np.uint8))
