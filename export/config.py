"""What an export run produces and how strictly each variant is gated: one frozen, declarative config."""

from __future__ import annotations

from dataclasses import dataclass

from vitserve.runtime.artifact import EXPLAIN, PRECISIONS

# Opset 23 is the first with ONNX's own `Attention` op, which torch's dynamo exporter emits for SDPA.
OPSET = 23


@dataclass(frozen=True)
class Tolerances:
    """Parity limits against PyTorch FP32 on the same uint8 pixels."""

    # FP32 differs from PyTorch only by kernel order of summation; 1e-3 leaves room for that, not for bugs.
    fp32_max_abs_logit: float = 1e-3
    fp32_top1_agreement: float = 1.0
    # FP16 rounds every weight and activation to 11 bits of mantissa; a near-tie may flip, no more.
    fp16_top1_agreement: float = 0.995
    int8_top1_agreement: float = 0.99
    # Held-out accuracy (a fraction, 0.005 = 0.5 point) that INT8 may lose against PyTorch FP32.
    int8_accuracy_drop: float = 0.005
    # The explanation graph against the fused FP32 graph it explains: they share every weight and
    # differ only in how attention is summed (one kernel vs MatMul-Softmax-MatMul), ~1e-6 on digits.
    # An explanation of a different computation than the one that classified would be meaningless.
    explain_max_abs_logit: float = 1e-4
    # Each attention row is a softmax; more than this off 1 means the output is not what it claims.
    explain_max_row_sum_error: float = 1e-4
    # An image's logits alone against the same image inside mixed batches (positions, partners, sizes),
    # on one thread alone and the gate's threads in batches. On the CPU: bitwise, since every CPU kernel
    # the variants use reduces each row in an order that does not depend on the batch.
    batch_max_abs_logit: float = 0.0
    # FP16 on CUDA may pick other GEMM kernels per batch size (split-K sums in another order); stated,
    # with no top-1 change allowed, until a GPU run measures it.
    fp16_batch_max_abs_logit: float = 1e-2


@dataclass(frozen=True)
class ExportConfig:
    precisions: tuple[str, ...] = ("fp32",)
    tolerances: Tolerances = Tolerances()
    # Held-out images cap: enough for a 0.5-point gate to mean something, bounded for ViT-B on a CPU.
    max_heldout: int = 2000
    # Random uint8 images used when no held-out set exists (random-weight models: FP32 gate only).
    random_samples: int = 32
    seed: int = 0
    # Evaluation batch: also exercises the dynamic batch axis with a size other than the trace's.
    eval_batch: int = 16
    # Also write model.explain.onnx (the EXPLAIN variant). Off for library callers, on for
    # `vitserve export` unless --no-explain.
    explain: bool = False
    intra_op_threads: int = 2
    # The batch-invariance gate: this many gate images, each alone and inside mixed batches of these
    # sizes (32: the service's default largest batch).
    invariance_images: int = 8
    invariance_batch_sizes: tuple[int, ...] = (2, 3, 8, 32)
    # Calibration images read for static INT8 (min/max of every activation over them).
    max_calibration: int = 512

    @property
    def variants(self) -> tuple[str, ...]:
        return (*self.precisions, EXPLAIN) if self.explain else self.precisions

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise ValueError(f"precisions must be a non-empty subset of {PRECISIONS}, got {self.precisions}")
        sizes = (self.max_heldout, self.random_samples, self.eval_batch, self.invariance_images)
        if min(sizes) <= 0 or self.max_calibration <= 0:
            raise ValueError(
                "max_heldout, random_samples, eval_batch, invariance_images, max_calibration must be positive"
            )
        if not self.invariance_batch_sizes or min(self.invariance_batch_sizes) < 2:
            raise ValueError(f"invariance_batch_sizes must be sizes >= 2, got {self.invariance_batch_sizes}")
