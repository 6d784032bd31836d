"""Parity gates: run each ONNX variant in onnxruntime beside PyTorch FP32 on the same uint8 pixels.

A gate that fails raises ParityError naming the figure; a gate that cannot run for real here raises
GateUnavailableError. Nothing is ever downgraded to a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

from vitserve.export.config import EXPLAIN, ExportConfig
from vitserve.export.convert import PixelClassifier
from vitserve.export.errors import (
    BatchVarianceError,
    CalibrationError,
    ExportError,
    GateUnavailableError,
    HeldoutError,
    ParityError,
)
from vitserve.runtime.artifact import INPUT_NAME, OUTPUT_NAME, Preprocessing
from vitserve.runtime.decode import RESAMPLING
from vitserve.runtime.explain_session import ATTENTIONS_NAME
from vitserve.runtime.session import CPU, CUDA

HELDOUT_FILE = "heldout.npz"
CALIBRATION_FILE = "calibration.npz"


@dataclass(frozen=True)
class EvalData:
    """uint8 (N, H, W, 3) pixels at the model's size; labels only for a held-out set."""

    pixels: np.ndarray
    labels: np.ndarray | None
    source: str


@dataclass(frozen=True)
class GateResult:
    variant: str
    provider: str
    metrics: dict[str, float]
    # The variant's logits on the gate data: the fused FP32 graph's are the explanation graph's reference.
    logits: np.ndarray = field(repr=False, compare=False)


def read_npz(path: Path, keys: tuple[str, ...], error: type[ExportError]) -> dict[str, np.ndarray]:
    """The named arrays of an npz, read once; `error` names which file was wrong (held-out or calibration)."""
    try:
        with np.load(path) as data:
            return {key: data[key] for key in keys}
    except (OSError, KeyError, ValueError) as exc:
        wanted = " and ".join(f"'{key}'" for key in keys)
        raise error(f"{path}: cannot read {wanted} from it: {exc}") from exc


def model_pixels(
    images: np.ndarray, path: Path, preprocessing: Preprocessing, limit: int, error: type[ExportError]
) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3), the first `limit`, as RGB at the model's size."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or not len(images):
        raise error(f"{path}: want uint8 images (N,H,W[,3]), got {images.dtype} {images.shape}")
    images = images[:limit]
    if images.ndim == 3:  # grayscale: the model takes RGB
        images = np.repeat(images[..., None], 3, axis=-1)
    size = preprocessing.image_size
    if images.shape[1:3] != (size, size):
        resample = RESAMPLING[preprocessing.interpolation]
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), resample)) for im in images])
    return np.ascontiguousarray(images)


def load_heldout(path: Path, preprocessing: Preprocessing, limit: int) -> EvalData:
    """Read `images` and `labels` from an npz; images resized to the model's size."""
    arrays = read_npz(path, ("images", "labels"), HeldoutError)
    images, labels = arrays["images"], arrays["labels"]
    pixels = model_pixels(images, path, preprocessing, limit, HeldoutError)
    if len(labels) != len(images):
        raise HeldoutError(f"{path}: {len(labels)} labels for {len(images)} images")
    return EvalData(pixels, labels[: len(pixels)].astype(np.int64), f"heldout:{path} ({len(pixels)} images)")


def load_calibration(
    path: Path, heldout: Path | None, preprocessing: Preprocessing, limit: int
) -> np.ndarray:
    """Calibration images for static INT8: from the training distribution, never the held-out set the
    gates measure on (scales fitted to the test images would flatter the accuracy gate)."""
    if heldout is not None and path.resolve() == heldout.resolve():
        raise CalibrationError(f"{path} is the held-out set; calibrate on training images")
    images = read_npz(path, ("images",), CalibrationError)["images"]
    return model_pixels(images, path, preprocessing, limit, CalibrationError)


def random_pixels(image_size: int, count: int, seed: int) -> EvalData:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, image_size, image_size, 3), dtype=np.uint8)
    return EvalData(pixels, None, f"random:{count} uint8 images, seed {seed}")


def gate_data(heldout: Path | None, preprocessing: Preprocessing, config: ExportConfig) -> EvalData:
    """The images every gate runs on: the held-out set when there is one, else seeded random pixels
    (which, without labels, support only the gates that compare logits)."""
    if heldout is not None:
        return load_heldout(heldout, preprocessing, config.max_heldout)
    return random_pixels(preprocessing.image_size, config.random_samples, config.seed)


def find_beside(checkpoint: Path, explicit: Path | None, name: str, error: type[ExportError]) -> Path | None:
    """`explicit` (which must exist), else the file `name` beside the checkpoint if there is one."""
    if explicit is not None:
        if not explicit.is_file():
            raise error(f"no file at {explicit}")
        return explicit
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    candidate = folder / name
    return candidate if candidate.is_file() else None


def find_heldout(checkpoint: Path, explicit: Path | None) -> Path | None:
    return find_beside(checkpoint, explicit, HELDOUT_FILE, HeldoutError)


def find_calibration(checkpoint: Path, explicit: Path | None) -> Path | None:
    return find_beside(checkpoint, explicit, CALIBRATION_FILE, CalibrationError)


def torch_logits(module: PixelClassifier, pixels: np.ndarray, batch: int) -> np.ndarray:
    with torch.inference_mode():
        parts = [module(torch.from_numpy(pixels[i : i + batch])) for i in range(0, len(pixels), batch)]
    return torch.cat(parts).numpy()


def make_session(model: onnx.ModelProto | bytes, provider: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=[provider])


def ort_logits(session: ort.InferenceSession, pixels: np.ndarray, batch: int) -> np.ndarray:
    parts = [
        session.run([OUTPUT_NAME], {INPUT_NAME: pixels[i : i + batch]})[0]
        for i in range(0, len(pixels), batch)
    ]
    return np.concatenate(parts)


def attention_row_sum_error(session: ort.InferenceSession, pixels: np.ndarray, batch: int) -> float:
    """max |sum of an attention row - 1| over every image, layer, head and row, batch by batch (the
    stacked maps of a whole held-out set would take gigabytes)."""
    worst = 0.0
    for i in range(0, len(pixels), batch):
        (attentions,) = session.run([ATTENTIONS_NAME], {INPUT_NAME: pixels[i : i + batch]})
        worst = max(worst, float(np.max(np.abs(attentions.sum(axis=-1) - 1.0))))
    return worst


def cuda_usable() -> bool:
    """True when onnxruntime can really place a session on CUDA (the gpu wheel lists it even without one)."""
    if CUDA not in ort.get_available_providers():
        return False
    from onnx import TensorProto, helper

    probe = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        ),
        ir_version=10,  # what onnx writes by default may be newer than onnxruntime reads
        opset_imports=[helper.make_opsetid("", 17)],
    )
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failed CUDA load is the expected answer on CPU machines
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=[CUDA, CPU])
    return session.get_providers()[0] == CUDA


def gate_provider(precision: str, data: EvalData) -> str:
    """Where a variant's gate runs, or GateUnavailableError when it cannot run for real here."""
    if precision in ("fp16", "int8") and data.labels is None:
        raise GateUnavailableError(
            f"{precision} needs held-out images to gate its accuracy (random inputs on a random-weight "
            "model only support the FP32 gate); pass --heldout PATH or put heldout.npz beside the checkpoint"
        )
    if precision != "fp16":
        return CPU
    # ORT's CPU provider runs only some FP16 kernels (Attention) and silently casts the rest
    # (MatMul, LayerNorm, Add) to float32, so a CPU run would not test the FP16 numerics we ship.
    if not cuda_usable():
        raise GateUnavailableError(
            "fp16 export needs a CUDA device to run its parity gate for real; onnxruntime's CPU "
            "provider computes most of an FP16 graph in float32; export fp16 on a GPU machine"
        )
    return CUDA


@dataclass(frozen=True)
class BatchVariance:
    """How far an image's logits inside mixed batches strayed from its logits alone."""

    max_abs_logit: float
    top1_changes: int
    batches: int


def mixed_batches(probes: int, pool: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Indices into the gate images: for each size, batches that together hold every probe (indices below
    `probes`) once, beside partners drawn from the rest of the pool, at shuffled positions."""
    rng = np.random.default_rng(seed)
    others = np.arange(probes, pool) if pool > probes else np.arange(pool)
    batches = []
    for size in sizes:
        per_batch = max(1, size // 2)  # every batch has partners, and other probes at other positions
        for start in range(0, probes, per_batch):
            chosen = np.arange(start, min(start + per_batch, probes))
            partners = rng.choice(others, size - len(chosen), replace=size - len(chosen) > len(others))
            batches.append(rng.permutation(np.concatenate([chosen, partners])))
    return batches


def batch_variance(
    model: onnx.ModelProto, provider: str, pixels: np.ndarray, config: ExportConfig
) -> BatchVariance:
    """Each probe image alone on a one-thread session, then inside mixed batches on the gate's threads:
    the service runs an image alone or batched, on one thread or several, by load and layout."""
    data = model.SerializeToString()
    alone_session = make_session(data, provider, 1)
    batch_session = make_session(data, provider, config.intra_op_threads)
    probes = min(config.invariance_images, len(pixels))
    alone = ort_logits(alone_session, pixels[:probes], 1)
    batches = mixed_batches(probes, len(pixels), config.invariance_batch_sizes, config.seed)
    worst, changes = 0.0, 0
    for indices in batches:
        (logits,) = batch_session.run([OUTPUT_NAME], {INPUT_NAME: pixels[indices]})
        for position in np.flatnonzero(indices < probes):
            row, reference = logits[position], alone[indices[position]]
            worst = max(worst, float(np.max(np.abs(row.astype(np.float64) - reference))))
            changes += int(row.argmax() != reference.argmax())
    return BatchVariance(worst, changes, len(batches))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def _require(precision: str, metric: str, value: float, limit: float, at_most: bool) -> None:
    failed = value > limit if at_most else value < limit
    # NaN compares false both ways: a NaN figure is a failure, never a pass.
    if failed or np.isnan(value):
        raise ParityError(precision, metric, value, limit)


def gate(
    variant: str, model: onnx.ModelProto, reference: np.ndarray, data: EvalData, config: ExportConfig
) -> GateResult:
    """Run one variant on `data` and check it against `reference` logits: PyTorch FP32's for the
    precisions, the fused FP32 graph's for the explanation graph. Raises ParityError on any miss."""
    tol = config.tolerances
    provider = gate_provider(variant, data)
    session = make_session(model, provider, config.intra_op_threads)
    logits = ort_logits(session, data.pixels, config.eval_batch)
    metrics: dict[str, float] = {}
    agreement = top1_agreement(logits, reference)
    metrics["top1_agreement"] = agreement
    max_abs = float(np.max(np.abs(logits.astype(np.float64) - reference)))
    if variant == "fp32":
        metrics["max_abs_logit"] = max_abs
        _require(variant, "max_abs_logit", max_abs, tol.fp32_max_abs_logit, at_most=True)
        _require(variant, "top1_agreement", agreement, tol.fp32_top1_agreement, at_most=False)
    elif variant == EXPLAIN:
        metrics["max_abs_logit_vs_fused"] = max_abs
        _require(variant, "max_abs_logit_vs_fused", max_abs, tol.explain_max_abs_logit, at_most=True)
        row_error = attention_row_sum_error(session, data.pixels, config.eval_batch)
        metrics["max_attention_row_sum_error"] = row_error
        _require(
            variant, "max_attention_row_sum_error", row_error, tol.explain_max_row_sum_error, at_most=True
        )
    elif variant == "fp16":
        _require(variant, "top1_agreement", agreement, tol.fp16_top1_agreement, at_most=False)
    else:
        assert data.labels is not None
        drop = float(np.mean(reference.argmax(1) == data.labels) - np.mean(logits.argmax(1) == data.labels))
        metrics["accuracy_drop"] = drop
        _require(variant, "top1_agreement", agreement, tol.int8_top1_agreement, at_most=False)
        _require(variant, "accuracy_drop", drop, tol.int8_accuracy_drop, at_most=True)
    if variant != EXPLAIN:  # /explain runs one image at a time: only the serving variants are batched
        variance = batch_variance(model, provider, data.pixels, config)
        metrics["batch_max_abs_logit"] = variance.max_abs_logit
        limit = tol.fp16_batch_max_abs_logit if variant == "fp16" else tol.batch_max_abs_logit
        if variance.max_abs_logit > limit or variance.top1_changes or np.isnan(variance.max_abs_logit):
            raise BatchVarianceError(
                variant, variance.max_abs_logit, limit, variance.top1_changes, variance.batches
            )
    if data.labels is not None:
        metrics["accuracy"] = float(np.mean(logits.argmax(1) == data.labels))
    return GateResult(variant, provider, metrics, logits)
