"""`vitserve inspect MODEL.onnx`: metadata, inputs/outputs, op counts and fused-attention count as JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx

from vitserve.export.fusion import count_fusion, op_counts
from vitserve.runtime.artifact import ArtifactError, metadata_from_props


def describe(path: Path) -> dict[str, Any]:
    """Everything `inspect` prints, as a dict (metadata is null for a non-vitserve ONNX file)."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        metadata: dict[str, Any] | None = asdict(metadata_from_props(props, path))
    except ArtifactError as exc:
        metadata = None
        metadata_error: str | None = str(exc)
    else:
        metadata_error = None
    fusion = count_fusion(model)
    return {
        "path": str(path),
        "metadata": metadata,
        "metadata_error": metadata_error,
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "inputs": [_value_info(v) for v in model.graph.input],
        "outputs": [_value_info(v) for v in model.graph.output],
        "op_counts": dict(sorted(op_counts(model).items())),
        "fused_attention": fusion.fused_attention,
        "softmax": fusion.softmax,
    }


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tensor.shape.dim]
    return {
        "name": value.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        "shape": shape,
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="print an ONNX artifact's metadata and graph summary as JSON"
    )
    parser.add_argument("model", type=Path, help="path to a .onnx file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.model.is_file():
        raise SystemExit(f"no such file: {args.model}")
    print(json.dumps(describe(args.model), indent=2))
    return 0
