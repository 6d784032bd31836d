"""`vitserve export`: checkpoint (ours, Hugging Face folder, timm file) -> gated ONNX artifacts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vitserve.runtime.artifact import PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX with fused attention, gated against PyTorch",
        description=(
            "Export a ViT checkpoint to self-contained ONNX files (model.onnx, model.fp16.onnx, "
            "model.int8.onnx). Every variant is checked against PyTorch before anything is written."
        ),
    )
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="vitserve folder, HF folder or timm file"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=["fp32"], help="variants to write"
    )
    parser.add_argument(
        "--preset", default=None, help="ViT preset for a timm file (e.g. vit_base_patch16_224)"
    )
    parser.add_argument(
        "--heldout",
        type=Path,
        default=None,
        help="npz with uint8 'images' and 'labels' (default: heldout.npz beside the checkpoint)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="npz with uint8 'images' from the training distribution, for int8's activation scales "
        "(default: calibration.npz beside the checkpoint)",
    )
    parser.add_argument(
        "--no-explain",
        action="store_true",
        help="skip model.explain.onnx, the attention-map companion that POST /explain needs",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `vitserve --help` does not pay for torch.
    from vitserve.export.config import ExportConfig
    from vitserve.export.errors import ExportError
    from vitserve.export.pipeline import export_checkpoint
    from vitserve.models.checkpoint import CheckpointError

    # vitserve's own progress at INFO; the exporter's libraries only when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("vitserve").setLevel(logging.INFO)
    # torch's exporter warns about optional packages (torchvision) that a ViT never uses.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # onnxruntime's quantizer advises running its pre-processing on every call, through the root logger;
    # the INT8 gates, not that advice, decide whether the variant is good enough.
    logging.getLogger().addFilter(
        lambda record: "pre-processing before quantization" not in record.getMessage()
    )
    config = ExportConfig(precisions=tuple(dict.fromkeys(args.precision)), explain=not args.no_explain)
    try:
        variants = export_checkpoint(
            args.checkpoint,
            args.out,
            config,
            preset=args.preset,
            heldout=args.heldout,
            calibration=args.calibration,
        )
    except (ExportError, CheckpointError) as exc:
        # The message names the failed figure or step; a traceback would only bury it.
        print(
            f"vitserve export: {type(exc).__name__}: {exc}; nothing was written to {args.out}",
            file=sys.stderr,
        )
        return 1
    summary = [
        {"variant": v.variant, "path": str(v.path), "provider": v.gate.provider, "gate": v.gate.metrics}
        for v in variants
    ]
    print(json.dumps(summary, indent=2))
    return 0
