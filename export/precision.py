"""FP32 graph -> FP16 (float32 I/O kept, casts inside) and -> statically quantised INT8 (for CPU).

INT8 is static: every activation scale is fixed at export from calibration images, so an image's scores
never depend on the other images of its batch. Dynamic quantisation (scales computed per run over the
whole batch tensor) made them depend on batch-mates, which no serving system may let batching do.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.transformers.float16 import convert_float_to_float16

from vitserve.export.errors import ConversionError
from vitserve.runtime.artifact import INPUT_NAME

# Only the projections and MLP matmuls carry the weight; the fused Attention node must stay as it is
# (onnxruntime's quantizer would otherwise rewrite ONNX's Attention into its own, incompatible QAttention).
INT8_OP_TYPES = ["MatMul", "Gemm"]
# Images per calibration run: bounds the memory of the activations the calibrator collects.
CALIBRATION_BATCH = 16


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and activations in float16; the uint8 input and float32 logits stay as they are."""
    try:
        return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    except Exception as exc:  # the converter raises bare ValueError/KeyError from deep inside
        raise ConversionError(f"float16 conversion failed: {exc}") from exc


class _Batches(CalibrationDataReader):
    def __init__(self, pixels: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = (
            pixels[i : i + CALIBRATION_BATCH] for i in range(0, len(pixels), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def to_int8(model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    """Static QDQ quantisation: int8 weights per output channel, uint8 activations whose scales come
    from the min/max each one reaches over `calibration`, uint8 (N, H, W, 3) training-like images."""
    if not len(calibration):
        raise ConversionError("int8 quantisation needs at least one calibration image")

    def quantize(src: Path, dst: Path) -> None:
        try:
            quantize_static(
                src,
                dst,
                _Batches(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=INT8_OP_TYPES,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:  # the quantizer's own errors come as bare Exception subclasses
            raise ConversionError(f"int8 static quantisation failed: {exc}") from exc

    return through_files(model, quantize)


def through_files(model: onnx.ModelProto, quantize: Callable[[Path, Path], None]) -> onnx.ModelProto:
    """onnxruntime's quantizers read and write model files: `model` through one, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="vitserve-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        quantize(src, dst)
        return onnx.load(str(dst))
