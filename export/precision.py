"""FP32 graph -> FP16 (float32 I/O kept, casts inside) and -> dynamically quantised INT8 (for CPU)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from vitserve.export.errors import ConversionError

# Only the projections and MLP matmuls carry the weight; the fused Attention node must stay as it is
# (onnxruntime's quantizer would otherwise rewrite ONNX's Attention into its own, incompatible QAttention).
INT8_OP_TYPES = ["MatMul", "Gemm"]


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and activations in float16; the uint8 input and float32 logits stay as they are."""
    try:
        return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    except Exception as exc:  # the converter raises bare ValueError/KeyError from deep inside
        raise ConversionError(f"float16 conversion failed: {exc}") from exc


def to_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic quantisation: int8 weights, activations quantised per batch at run time."""
    with tempfile.TemporaryDirectory(prefix="vitserve-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OP_TYPES)
        except Exception as exc:  # the quantizer's own errors come as bare Exception subclasses
            raise ConversionError(f"int8 dynamic quantisation failed: {exc}") from exc
        return onnx.load(str(dst))
