"""The export pipeline's typed errors: each names the figure or step that failed and what to do."""

from __future__ import annotations


class ExportError(RuntimeError):
    """Base of every export failure; when one is raised, nothing has been written."""


class ConversionError(ExportError):
    """torch -> ONNX conversion or a precision conversion failed."""


class FusionError(ExportError):
    """The graph does not have one fused attention node per encoder block."""

    def __init__(self, fused: int, depth: int, softmax: int) -> None:
        self.fused, self.depth, self.softmax = fused, depth, softmax
        super().__init__(
            f"expected {depth} fused attention nodes and no Softmax, found {fused} fused and {softmax} "
            "Softmax; the model's attention must go through torch's scaled_dot_product_attention"
        )


class ParityError(ExportError):
    """A variant's outputs are too far from PyTorch's."""

    def __init__(self, precision: str, metric: str, value: float, limit: float) -> None:
        self.precision, self.metric, self.value, self.limit = precision, metric, value, limit
        super().__init__(f"{precision} parity gate failed: {metric} = {value:.6g}, limit {limit:.6g}")


class GateUnavailableError(ExportError):
    """A variant's gate cannot run for real here (no held-out data, or no device that runs it)."""


class HeldoutError(ExportError):
    """The held-out file is missing, unreadable or does not fit the model."""
