"""The export pipeline end to end: load -> convert -> count fusion -> derive variants -> gate -> write.

Every variant goes through the same steps: the precisions (FP32, FP16, INT8) that serve, and the
explanation graph (export/config.py's EXPLAIN) that POST /explain runs. Nothing is written until every
requested variant has passed its gate.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

import vitserve
from vitserve.export.config import EXPLAIN, OPSET, ExportConfig
from vitserve.export.convert import PixelClassifier, export_onnx
from vitserve.export.errors import CalibrationError
from vitserve.export.fusion import FusionReport, check_fusion
from vitserve.export.optimize import attention_on_tokens
from vitserve.export.precision import to_fp16, to_int8
from vitserve.export.verify import (
    EvalData,
    GateResult,
    find_calibration,
    find_heldout,
    gate,
    gate_data,
    gate_provider,
    load_calibration,
    torch_logits,
)
from vitserve.export.write import with_metadata, write_atomic
from vitserve.models.checkpoint import LoadedModel, load_checkpoint
from vitserve.runtime.artifact import ARTIFACT_FILES, ArtifactMetadata
from vitserve.runtime.explain_session import EXPLANATION_ROLE, ROLE_KEY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedVariant:
    variant: str
    path: Path
    metadata: ArtifactMetadata
    gate: GateResult


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: ExportConfig | None = None,
    preset: str | None = None,
    heldout: str | Path | None = None,
    calibration: str | Path | None = None,
) -> list[ExportedVariant]:
    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint, preset)
    heldout_path = find_heldout(checkpoint, Path(heldout) if heldout is not None else None)
    calibration_path = find_calibration(checkpoint, Path(calibration) if calibration is not None else None)
    return export_loaded(loaded, Path(out_dir), config or ExportConfig(), heldout_path, calibration_path)


def export_loaded(
    loaded: LoadedModel,
    out_dir: Path,
    config: ExportConfig,
    heldout: Path | None = None,
    calibration: Path | None = None,
) -> list[ExportedVariant]:
    """Build and gate every requested variant first; write only when all of them passed."""
    vit = loaded.model.eval()
    depth = vit.config.depth
    data = gate_data(heldout, loaded.preprocessing, config)
    for variant in config.variants:
        gate_provider(variant, data)  # refuse before minutes of conversion, not after
    calibration_pixels = None
    if "int8" in config.variants:
        if calibration is None:
            raise CalibrationError(
                "int8 needs calibration images from the training distribution (uint8 'images' in an npz): "
                "pass --calibration PATH or put calibration.npz beside the checkpoint"
            )
        calibration_pixels = load_calibration(
            calibration, heldout, loaded.preprocessing, config.max_calibration
        )
    exported = export_onnx(vit, loaded.preprocessing)
    # The CPU variants take attention on the token layout (export/optimize.py); FP16 keeps the
    # exporter's layout, the one whose placement on CUDA the GPU suite checks.
    fp32, moved = attention_on_tokens(exported)
    log.info("%d of %d attention nodes fed on the token layout", moved, depth)
    reference = torch_logits(
        PixelClassifier(vit, loaded.preprocessing).eval(), data.pixels, config.eval_batch
    )
    log.info("gating on %s", data.source)

    builders: dict[str, Callable[[], onnx.ModelProto]] = {
        "fp32": lambda: fp32,
        "fp16": lambda: to_fp16(exported),
        EXPLAIN: lambda: export_onnx(vit, loaded.preprocessing, fused=False, attention_outputs=True),
    }
    if calibration_pixels is not None:
        builders["int8"] = functools.partial(to_int8, fp32, calibration_pixels)
    results: dict[str, GateResult] = {}
    verified: list[tuple[str, onnx.ModelProto, FusionReport, GateResult]] = []
    # FP32 is always gated: the other variants are derived from it, or explain what it computes.
    for variant in ("fp32", *[v for v in config.variants if v != "fp32"]):
        model = builders[variant]()
        fusion = check_fusion(model, depth, fused=variant != EXPLAIN)
        against = results["fp32"].logits if variant == EXPLAIN else reference
        results[variant] = result = gate(variant, model, against, data, config)
        log.info("%s gate passed on %s: %s", variant, result.provider, result.metrics)
        if variant in config.variants:
            verified.append((variant, model, fusion, result))

    written = []
    for variant, model, fusion, result in verified:
        extra = provenance(data, result)
        if variant == "int8" and calibration_pixels is not None:
            extra["calibration_data"] = f"{calibration} ({len(calibration_pixels)} images)"
        if variant == EXPLAIN:
            extra[ROLE_KEY] = EXPLANATION_ROLE  # the service loads it for /explain, never for /classify
        metadata = ArtifactMetadata(
            model_name=loaded.name,
            model_version=loaded.version,
            labels=loaded.labels,
            preprocessing=loaded.preprocessing,
            precision="fp32" if variant == EXPLAIN else variant,
            fused_attention=fusion.fused_attention,
            depth=depth,
            source_sha256=loaded.source_sha256,
            exporter_version=vitserve.__version__,
            extra=extra,
        )
        path = out_dir / ARTIFACT_FILES[variant]
        write_atomic(with_metadata(model, metadata), path)
        written.append(ExportedVariant(variant, path, metadata, result))
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
