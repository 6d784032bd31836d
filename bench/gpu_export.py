"""GPU suite, stage 1: FP16 export through the project's own pipeline, its parity as served, and where
ONNX Runtime places every node of the FP16 graph.

Two models. A ViT from a Hugging Face `ViTForImageClassification` config with random weights (speed
does not depend on them; ViT-B/16 at 224 on a GPU, a 2-block one in the smoke run), loaded by
models/loaders/huggingface.py; and the shipped digits model with its real held-out set. Each goes
through export/pipeline.py with precisions fp32 and fp16; the FP16 gate runs on the CUDA provider and
is refused on a machine without one. Where the gate refuses or fails, that is recorded and an FP16
graph marked "NOT GATED" is written beside the gated FP32 one, so that the speed stages still have an
FP16 artifact to time.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from vitserve.bench.gpu_config import SuiteConfig
from vitserve.bench.gpu_record import StageRecord
from vitserve.bench.workloads import DIGITS_DIR, photo_jpeg
from vitserve.export.config import ExportConfig
from vitserve.export.convert import PixelClassifier
from vitserve.export.errors import GateUnavailableError, ParityError
from vitserve.export.fusion import FUSED_ATTENTION_OPS
from vitserve.export.pipeline import export_loaded
from vitserve.export.precision import to_fp16
from vitserve.export.verify import find_heldout, load_heldout, top1_agreement, torch_logits
from vitserve.export.write import with_metadata, write_atomic
from vitserve.models.checkpoint import LoadedModel, load_checkpoint
from vitserve.models.loaders.huggingface import hf_config_for, load_hf_folder
from vitserve.models.vit import PRESETS, ViT, ViTConfig
from vitserve.runtime.artifact import ARTIFACT_FILES, INPUT_NAME, Preprocessing, read_metadata
from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.runtime.session import CPU, CUDA, OnnxClassifier, SessionOptions

# Folders under the suite's work folder; stages 2 and 3 read the ViT's artifacts from VIT_DIR.
VIT_DIR = "vit"
HF_DIR = "vit-hf"
DIGITS_OUT = "digits"
VIT_CONFIGS = {
    "base": PRESETS["vit_base_patch16_224"],
    "tiny": ViTConfig(dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10),
}
ATTENTION_OPS = frozenset(op for _, op in FUSED_ATTENTION_OPS)
# Photo sizes the ViT's held-out images are drawn at: landscape, portrait, square.
PHOTO_SIZES = ((500, 375), (375, 500), (320, 320))
EVAL_BATCH = 16


def load_vit(config: SuiteConfig) -> tuple[LoadedModel, str]:
    """The suite's ViT through the Hugging Face loader, from a folder `save_pretrained` wrote once."""
    vit = VIT_CONFIGS[config.vit]
    folder = config.work_dir / HF_DIR
    if not (folder / "config.json").is_file():
        try:
            import transformers
        except ImportError as exc:  # the test extra has it; a bare serving install does not
            torch.manual_seed(0)
            labels = tuple(map(str, range(vit.num_classes)))
            pre = Preprocessing(image_size=vit.image_size)  # Hugging Face's defaults: mean/std 0.5, bilinear
            loaded = LoadedModel(ViT(vit).eval(), labels, pre, "vit", "random", "")
            return loaded, f"vitserve's own ViT with random weights (transformers missing: {exc})"
        torch.manual_seed(0)
        hf = hf_config_for(vit)  # id2label follows num_labels: LABEL_0, LABEL_1, ...
        transformers.ViTForImageClassification(hf).eval().save_pretrained(folder)
    return load_hf_folder(folder), "Hugging Face ViTForImageClassification config, random weights"


def photo_heldout(loaded: LoadedModel, path: Path, count: int) -> Path:
    """Photo-like JPEGs decoded as the service decodes them; labels are PyTorch FP32's own top-1 (random
    weights have no true classes), so the FP16 gate's accuracy is its top-1 agreement with FP32."""
    pre = loaded.preprocessing
    images = np.stack(
        [
            decode_image(photo_jpeg(*PHOTO_SIZES[i % len(PHOTO_SIZES)], seed=100 + i), pre, DecodeLimits())
            for i in range(count)
        ]
    )
    labels = torch_logits(PixelClassifier(loaded.model, pre).eval(), images, EVAL_BATCH).argmax(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, labels=labels)
    return path


def export_fp16(loaded: LoadedModel, out_dir: Path, heldout: Path, config: ExportConfig) -> dict[str, Any]:
    """export/pipeline.py with fp32 + fp16; where the FP16 gate refuses or fails, FP32 alone and an
    FP16 graph marked NOT GATED (for timing only)."""
    try:
        written = export_loaded(loaded, out_dir, replace(config, precisions=("fp32", "fp16")), heldout)
        return {"fp16_gated": True, "gates": {v.variant: _gate(v.gate) for v in written}}
    except (GateUnavailableError, ParityError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        failed = (
            {"metric": exc.metric, "value": exc.value, "limit": exc.limit}
            if isinstance(exc, ParityError)
            else None
        )
    written = export_loaded(loaded, out_dir, replace(config, precisions=("fp32",)), heldout)
    write_ungated_fp16(out_dir, reason)
    return {
        "fp16_gated": False,
        "fp16_gate_refused": reason,
        "fp16_gate_failure": failed,
        "gates": {v.variant: _gate(v.gate) for v in written},
    }


def _gate(result: Any) -> dict[str, Any]:
    return {"provider": result.provider, "metrics": result.metrics}


def write_ungated_fp16(model_dir: Path, reason: str) -> None:
    """model.fp16.onnx derived from the gated FP32 artifact, its metadata saying it was not gated."""
    source = model_dir / ARTIFACT_FILES["fp32"]
    metadata = read_metadata(source)
    extra = {**metadata.extra, "gate_provider": "none", "gate_fp16": f"NOT GATED: {reason}"[:500]}
    model = to_fp16(onnx.load(str(source)))
    write_atomic(
        with_metadata(model, replace(metadata, precision="fp16", extra=extra)),
        model_dir / ARTIFACT_FILES["fp16"],
    )


def parity_as_served(
    model_dir: Path, loaded: LoadedModel, heldout: Path, limit: int, config: SuiteConfig
) -> dict[str, Any]:
    """The FP16 artifact through runtime/session.py, as the service runs it, against PyTorch FP32."""
    data = load_heldout(heldout, loaded.preprocessing, limit)
    reference = torch_logits(
        PixelClassifier(loaded.model, loaded.preprocessing).eval(), data.pixels, EVAL_BATCH
    )
    options = SessionOptions(precision="fp16", device=config.device, intra_op_threads=config.threads)
    classifier = OnnxClassifier(model_dir, options)
    logits = np.concatenate(
        [
            classifier.predict_batch(data.pixels[i : i + EVAL_BATCH])
            for i in range(0, len(data.pixels), EVAL_BATCH)
        ]
    )
    figures: dict[str, Any] = {
        "session_providers": list(classifier.providers),
        "images": len(data.pixels),
        "data": data.source,
        "max_abs_logit": float(np.max(np.abs(logits.astype(np.float64) - reference))),
        "top1_agreement": top1_agreement(logits, reference),
    }
    if data.labels is not None:
        figures["accuracy_fp16"] = float(np.mean(logits.argmax(1) == data.labels))
        figures["accuracy_fp32_pytorch"] = float(np.mean(reference.argmax(1) == data.labels))
    return figures


def placement(path: Path, device: str, sample: np.ndarray, profile_dir: Path) -> dict[str, Any]:
    """Which provider ran each node, read from ONNX Runtime's own profile of one run."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(profile_dir / f"ort-profile-{path.parent.name}")
    providers = [CUDA, CPU] if device == "cuda" else [CPU]
    session = ort.InferenceSession(str(path), options, providers=providers)
    session.run(None, {INPUT_NAME: sample})
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args", {})
        if (
            event.get("cat") == "Node"
            and event.get("name", "").endswith("_kernel_time")
            and "provider" in args
        ):
            nodes[event["name"].removesuffix("_kernel_time")] = (args.get("op_name", "?"), args["provider"])
    attention = {name: p for name, (op, p) in nodes.items() if op in ATTENTION_OPS}
    return {
        "session_providers": session.get_providers(),
        "nodes": len(nodes),
        "nodes_by_provider": dict(Counter(p for _, p in nodes.values())),
        "attention_nodes": len(attention),
        "attention_on_cuda": sum(p == CUDA for p in attention.values()),
        "attention_ops": dict(Counter(op for op, _ in nodes.values() if op in ATTENTION_OPS)),
        "off_cuda": [{"node": n, "op": op, "provider": p} for n, (op, p) in nodes.items() if p != CUDA][:40],
    }


def check_placement(found: dict[str, Any], depth: int, device: str) -> str | None:
    """Why the placement falls short of "every fused Attention on CUDA, one per block", or None."""
    if device != "cuda":
        return f"no CUDA here: the session runs on {found['session_providers']}"
    if found["session_providers"][:1] != [CUDA]:
        return f"the session fell back to {found['session_providers']}"
    if found["attention_nodes"] != depth or found["attention_on_cuda"] != depth:
        return (
            f"{found['attention_on_cuda']} of {found['attention_nodes']} fused attention nodes on CUDA, "
            f"{depth} blocks"
        )
    return None


def export_one(
    name: str, loaded: LoadedModel, heldout: Path, limit: int, config: SuiteConfig, record: StageRecord
) -> None:
    out_dir = config.work_dir / (VIT_DIR if name == "vit" else DIGITS_OUT)
    export_config = ExportConfig(max_heldout=limit, intra_op_threads=config.threads)
    with record.attempt(f"{name}: export"):
        record.put(name, "export", value=export_fp16(loaded, out_dir, heldout, export_config))
        record.put(name, "artifact_dir", value=str(out_dir))
    fp16 = out_dir / ARTIFACT_FILES["fp16"]
    if not fp16.is_file():
        record.skip(f"{name}: parity and placement", "no FP16 artifact was written")
        return
    with record.attempt(f"{name}: parity as served"):
        record.put(name, "parity_as_served", value=parity_as_served(out_dir, loaded, heldout, limit, config))
    with record.attempt(f"{name}: placement"):
        size = loaded.preprocessing.image_size
        sample = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
        found = placement(fp16, config.device, sample, config.work_dir)
        problem = check_placement(found, loaded.model.config.depth, config.device)
        record.put(name, "placement", value={**found, "all_attention_on_cuda": problem is None})
        if problem is not None:
            record.error(f"{name}: placement", problem)


def run(config: SuiteConfig, record: StageRecord) -> None:
    torch.set_num_threads(config.threads)
    record.put("torch", value=torch.__version__)
    record.put("onnxruntime", value=ort.__version__)
    with record.attempt("vit"):
        loaded, source = load_vit(config)
        record.put("vit", "source", value=source)
        record.put("vit", "config", value=loaded.model.config.to_dict())
        heldout = photo_heldout(loaded, config.work_dir / HF_DIR / "heldout.npz", config.heldout_images)
        export_one("vit", loaded, heldout, config.heldout_images, config, record)
    if record.left_s() < 10:
        record.skip("digits", f"{record.left_s():.0f} s of the stage budget left")
        return
    with record.attempt("digits"):
        digits = load_checkpoint(DIGITS_DIR)
        record.put("digits", "source", value=str(DIGITS_DIR))
        shipped = find_heldout(DIGITS_DIR, None)
        if shipped is None:
            raise FileNotFoundError(f"no heldout.npz in {DIGITS_DIR}")
        export_one("digits", digits, shipped, config.digits_heldout_images, config, record)
