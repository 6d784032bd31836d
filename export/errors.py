"""The export pipeline's typed errors: each names the figure or step that failed and what to do."""

from __future__ import annotations


class ExportError(RuntimeError):
    """Base of every export failure; when one is raised, nothing has been written."""


class ConversionError(ExportError):
    """torch -> ONNX conversion or a precision conversion failed."""


class FusionError(ExportError):
    """A fused graph lacks one fused attention node per encoder block (or a manual one has any)."""

    def __init__(self, fused: int, depth: int, softmax: int, want_fused: bool = True) -> None:
        self.fused, self.depth, self.softmax = fused, depth, softmax
        if want_fused:
            why = "the model's attention must go through torch's scaled_dot_product_attention"
            wanted = f"{depth} fused attention nodes and no Softmax"
        else:
            why = "the explanation graph must compute its attention step by step to return it"
            wanted = f"no fused attention node and {depth} Softmax"
        super().__init__(f"expected {wanted}, found {fused} fused and {softmax} Softmax; {why}")


class ParityError(ExportError):
    """A variant's outputs are too far from PyTorch's."""

    def __init__(self, precision: str, metric: str, value: float, limit: float) -> None:
        self.precision, self.metric, self.value, self.limit = precision, metric, value, limit
        super().__init__(f"{precision} parity gate failed: {metric} = {value:.6g}, limit {limit:.6g}")


class GateUnavailableError(ExportError):
    """A variant's gate cannot run for real here (no held-out data, or no device that runs it)."""


class HeldoutError(ExportError):
    """The held-out file is missing, unreadable or does not fit the model."""


class CalibrationError(ExportError):
    """INT8 calibration images are missing, unreadable, or the held-out set itself."""


class BatchVarianceError(ExportError):
    """A variant's scores for an image change with the other images of its batch."""

    def __init__(self, precision: str, max_abs: float, limit: float, top1_changes: int, batches: int) -> None:
        self.precision, self.max_abs, self.limit, self.top1_changes = precision, max_abs, limit, top1_changes
        super().__init__(
            f"{precision} batch-invariance gate failed: an image's logits alone and beside other images "
            f"differ by up to {max_abs:.6g} (limit {limit:.6g}), top-1 changed {top1_changes} times over "
            f"{batches} mixed batches; its answers would depend on what the batcher put beside it"
        )
