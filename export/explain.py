"""The explanation artifact: the same weights through the manual attention path, with attention outputs.

The fused serving graph computes each block's attention in one node, so its probabilities never
exist as a tensor. This graph keeps softmax(QK^T / sqrt(d)) explicit and returns it per layer,
stacked as `attentions` (N, layers, heads, tokens, tokens), beside the same `logits`. Before it is
written it must give the fused graph's logits on the gate data (max |delta| <= 1e-4): an
explanation of a different computation than the one that classified would be meaningless.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import vitserve
from vitserve.export.config import FILE_NAMES, OPSET, ExportConfig
from vitserve.export.convert import PixelClassifier, export_module
from vitserve.export.errors import ExportError, ParityError
from vitserve.export.verify import (
    CPU,
    EvalData,
    GateResult,
    find_heldout,
    load_heldout,
    make_session,
    ort_logits,
    random_pixels,
)
from vitserve.export.write import with_metadata, write_atomic
from vitserve.models.checkpoint import LoadedModel, load_checkpoint
from vitserve.models.vit import ViT
from vitserve.runtime.artifact import INPUT_NAME, OUTPUT_NAME, ArtifactMetadata, Preprocessing, read_metadata
from vitserve.runtime.explain_session import ATTENTIONS_NAME, EXPLAIN_FILE, EXPLANATION_ROLE, ROLE_KEY

log = logging.getLogger(__name__)

# The two graphs share every weight and differ only in how attention is evaluated (one fused kernel
# vs MatMul-Softmax-MatMul), i.e. in float32 summation order: ~1e-6 on the digits model.
MAX_ABS_LOGIT = 1e-4
# Each attention row is a softmax; more than this off 1 means the output is not what it claims.
MAX_ROW_SUM_ERROR = 1e-4
# The label the export summary and the artifact's metadata use for this variant.
VARIANT = "explain"


class AttentionClassifier(nn.Module):
    """uint8 (N, H, W, 3) pixels -> (logits (N, C), attentions (N, L, H, T, T)) via the manual path."""

    def __init__(self, vit: ViT, preprocessing: Preprocessing) -> None:
        super().__init__()
        # PixelClassifier holds the normalisation constants; reuse it so both graphs normalise alike.
        self.pixels = PixelClassifier(vit, preprocessing)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wrapped = self.pixels
        x = pixels.to(torch.float32).permute(0, 3, 1, 2) / 255.0  # (N, 3, H, W) in [0, 1]
        x = (x - wrapped.mean) / wrapped.std
        tokens, attentions = wrapped.vit.forward_features(x, return_attention=True)
        logits = wrapped.vit.forward_head(tokens)
        return logits, torch.stack(attentions, dim=1)  # (N, L, nh, T, T)


def export_explain_onnx(vit: ViT, preprocessing: Preprocessing) -> onnx.ModelProto:
    """Export the manual-attention graph with outputs `logits` and `attentions`, dynamic batch."""
    vit.set_fused_attention(False)
    try:
        module = AttentionClassifier(vit, preprocessing).eval()
        return export_module(module, vit.config.image_size, [OUTPUT_NAME, ATTENTIONS_NAME])
    finally:
        vit.set_fused_attention(True)  # the caller's model goes back to serving mode


def verify_explain(
    explain: onnx.ModelProto, fused: onnx.ModelProto, data: EvalData, batch: int, threads: int
) -> GateResult:
    """Check the explanation graph against the fused FP32 graph; raise ParityError on any miss."""
    fused_logits = ort_logits(make_session(fused, CPU, threads), data.pixels, batch)
    session = make_session(explain, CPU, threads)
    max_abs, max_row_error = 0.0, 0.0
    for start in range(0, len(data.pixels), batch):
        logits, attentions = session.run(
            [OUTPUT_NAME, ATTENTIONS_NAME], {INPUT_NAME: data.pixels[start : start + batch]}
        )
        reference = fused_logits[start : start + batch].astype(np.float64)
        max_abs = max(max_abs, float(np.max(np.abs(logits.astype(np.float64) - reference))))
        max_row_error = max(max_row_error, float(np.max(np.abs(attentions.sum(axis=-1) - 1.0))))
    for metric, value, limit in (
        ("max_abs_logit_vs_fused", max_abs, MAX_ABS_LOGIT),
        ("max_attention_row_sum_error", max_row_error, MAX_ROW_SUM_ERROR),
    ):
        if not value <= limit:  # NaN fails too
            raise ParityError(VARIANT, metric, value, limit)
    return GateResult(
        VARIANT,
        CPU,
        {"max_abs_logit_vs_fused": max_abs, "max_attention_row_sum_error": max_row_error},
    )


@dataclass(frozen=True)
class ExplainArtifact:
    model: onnx.ModelProto
    metadata: ArtifactMetadata
    gate: GateResult


def build_explain(
    loaded: LoadedModel, fused: onnx.ModelProto, data: EvalData, batch: int, threads: int
) -> ExplainArtifact:
    """Export and verify the explanation graph of `loaded` against its fused FP32 graph `fused`."""
    vit = loaded.model.eval()
    model = export_explain_onnx(vit, loaded.preprocessing)
    result = verify_explain(model, fused, data, batch, threads)
    metadata = ArtifactMetadata(
        model_name=loaded.name,
        model_version=loaded.version,
        labels=loaded.labels,
        preprocessing=loaded.preprocessing,
        precision="fp32",
        fused_attention=0,
        depth=vit.config.depth,
        source_sha256=loaded.source_sha256,
        exporter_version=vitserve.__version__,
        extra={
            ROLE_KEY: EXPLANATION_ROLE,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": str(OPSET),
            "gate_data": data.source,
            **{f"gate_{name}": f"{value:.6g}" for name, value in result.metrics.items()},
        },
    )
    return ExplainArtifact(model, metadata, result)


def export_companion(model_dir: Path, config: ExportConfig | None = None) -> Path:
    """Add model.explain.onnx to a folder that already has a checkpoint and its exported model.onnx.

    For models exported before the explanation artifact existed, without re-exporting (and so
    changing) the serving artifacts. model.onnx must come from this very checkpoint.
    """
    config = config or ExportConfig()
    loaded = load_checkpoint(model_dir)
    fused_path = model_dir / FILE_NAMES["fp32"]
    if not fused_path.is_file():
        raise ExportError(f"no {fused_path.name} in {model_dir}; run `vitserve export` (it writes both)")
    served = read_metadata(fused_path)
    if served.source_sha256 != loaded.source_sha256:
        raise ExportError(
            f"{fused_path} was exported from another checkpoint (sha256 {served.source_sha256[:12]}..., "
            f"the folder's is {loaded.source_sha256[:12]}...); re-export with `vitserve export`"
        )
    heldout = find_heldout(model_dir, None)
    data = (
        load_heldout(heldout, loaded.preprocessing, config.max_heldout)
        if heldout is not None
        else random_pixels(loaded.preprocessing.image_size, config.random_samples, config.seed)
    )
    artifact = build_explain(
        loaded, onnx.load(str(fused_path)), data, config.eval_batch, config.intra_op_threads
    )
    path = model_dir / EXPLAIN_FILE
    write_atomic(with_metadata(artifact.model, artifact.metadata), path)
    log.info("wrote %s: %s", path, artifact.gate.metrics)
    return path


if __name__ == "__main__":
    # `python -m vitserve.export.explain MODEL_DIR`: export_companion for an already exported folder.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    print(export_companion(Path(sys.argv[1])))
