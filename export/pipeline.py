"""The export pipeline end to end: load -> convert -> count fusion -> derive precisions -> gate -> write."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

import vitserve
from vitserve.export.config import FILE_NAMES, OPSET, ExportConfig
from vitserve.export.convert import PixelClassifier, export_onnx
from vitserve.export.explain import VARIANT as EXPLAIN_VARIANT
from vitserve.export.explain import build_explain
from vitserve.export.fusion import check_fusion
from vitserve.export.precision import to_fp16, to_int8
from vitserve.export.verify import (
    EvalData,
    GateResult,
    find_heldout,
    gate,
    gate_provider,
    load_heldout,
    random_pixels,
    torch_logits,
)
from vitserve.export.write import with_metadata, write_atomic
from vitserve.models.checkpoint import LoadedModel, load_checkpoint
from vitserve.runtime.artifact import ArtifactMetadata
from vitserve.runtime.explain_session import EXPLAIN_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedVariant:
    precision: str
    path: Path
    metadata: ArtifactMetadata
    gate: GateResult


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: ExportConfig | None = None,
    preset: str | None = None,
    heldout: str | Path | None = None,
) -> list[ExportedVariant]:
    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint, preset)
    heldout_path = find_heldout(checkpoint, Path(heldout) if heldout is not None else None)
    return export_loaded(loaded, Path(out_dir), config or ExportConfig(), heldout_path)


def export_loaded(
    loaded: LoadedModel, out_dir: Path, config: ExportConfig, heldout: Path | None = None
) -> list[ExportedVariant]:
    """Build and gate every requested variant first; write only when all of them passed."""
    vit = loaded.model.eval()
    depth = vit.config.depth
    data = (
        load_heldout(heldout, loaded.preprocessing, config.max_heldout)
        if heldout is not None
        else random_pixels(vit.config.image_size, config.random_samples, config.seed)
    )
    for precision in config.precisions:
        gate_provider(precision, data)  # refuse before minutes of conversion, not after
    fp32 = export_onnx(vit, loaded.preprocessing, fused=True)
    fusion = check_fusion(fp32, depth)
    reference = torch_logits(
        PixelClassifier(vit, loaded.preprocessing).eval(), data.pixels, config.eval_batch
    )
    log.info("gating on %s", data.source)

    builders = {"fp32": lambda: fp32, "fp16": lambda: to_fp16(fp32), "int8": lambda: to_int8(fp32)}
    verified: list[tuple[str, onnx.ModelProto, GateResult]] = []
    # FP32 is always gated: the other variants are derived from it.
    for precision in ("fp32", *[p for p in config.precisions if p != "fp32"]):
        model = builders[precision]()
        check_fusion(model, depth)
        result = gate(precision, model, reference, data, config)
        log.info("%s gate passed on %s: %s", precision, result.provider, result.metrics)
        if precision in config.precisions:
            verified.append((precision, model, result))
    # The explanation graph is verified against the fused FP32 one before anything is written.
    explain = (
        build_explain(loaded, fp32, data, config.eval_batch, config.intra_op_threads)
        if config.explain
        else None
    )

    written = []
    for precision, model, result in verified:
        metadata = ArtifactMetadata(
            model_name=loaded.name,
            model_version=loaded.version,
            labels=loaded.labels,
            preprocessing=loaded.preprocessing,
            precision=precision,
            fused_attention=fusion.fused_attention,
            depth=depth,
            source_sha256=loaded.source_sha256,
            exporter_version=vitserve.__version__,
            extra=provenance(data, result),
        )
        path = out_dir / FILE_NAMES[precision]
        write_atomic(with_metadata(model, metadata), path)
        written.append(ExportedVariant(precision, path, metadata, result))
    if explain is not None:
        path = out_dir / EXPLAIN_FILE
        write_atomic(with_metadata(explain.model, explain.metadata), path)
        written.append(ExportedVariant(EXPLAIN_VARIANT, path, explain.metadata, explain.gate))
    return written


def provenance(data: EvalData, result: GateResult) -> dict[str, str]:
    """Tool versions and the gate's measured figures, so an artifact says how it was checked."""
    extra = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "opset": str(OPSET),
        "exporter": "torch.onnx.export(dynamo=True)",
        "gate_data": data.source,
        "gate_provider": result.provider,
    }
    extra.update({f"gate_{name}": f"{value:.6g}" for name, value in result.metrics.items()})
    return extra
