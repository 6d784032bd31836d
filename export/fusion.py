"""Count what the exporter produced: one fused attention node per encoder block, no Softmax left over."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx

from vitserve.export.errors import FusionError

# (domain, op_type) of nodes that compute a whole softmax(QK^T/sqrt(d))V: ONNX's own op (opset 23) and
# onnxruntime's contrib ops, so an artifact from either route is counted the same way.
FUSED_ATTENTION_OPS = frozenset(
    {
        ("", "Attention"),
        ("com.microsoft", "Attention"),
        ("com.microsoft", "MultiHeadAttention"),
        ("com.microsoft", "QAttention"),
    }
)


@dataclass(frozen=True)
class FusionReport:
    fused_attention: int
    softmax: int


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Node counts keyed by op type, prefixed with the domain when it is not the default one."""
    return Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node
    )


def count_fusion(model: onnx.ModelProto) -> FusionReport:
    nodes = model.graph.node
    fused = sum(
        1 for n in nodes if (n.domain if n.domain != "ai.onnx" else "", n.op_type) in FUSED_ATTENTION_OPS
    )
    # The classifier ends in logits, so any Softmax in the graph is an unfused attention.
    softmax = sum(1 for n in nodes if n.op_type == "Softmax")
    return FusionReport(fused_attention=fused, softmax=softmax)


def check_fusion(model: onnx.ModelProto, depth: int, fused: bool = True) -> FusionReport:
    """One fused attention node per block and no Softmax; with fused=False, the reverse."""
    report = count_fusion(model)
    expected = (depth, 0) if fused else (0, depth)
    if (report.fused_attention, report.softmax) != expected:
        raise FusionError(report.fused_attention, depth, report.softmax, want_fused=fused)
    return report
