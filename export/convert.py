"""torch -> ONNX: wrap the ViT so the graph takes uint8 NHWC pixels; export with torch's dynamo exporter.

The dynamo exporter lowers `F.scaled_dot_product_attention` to ONNX's own `Attention` op (opset 23),
so each encoder block's attention leaves PyTorch already fused; see export/README.md for why this
route was chosen over onnxruntime.transformers' pattern-matching optimizer.
"""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stdout

import onnx
import torch
from torch import nn

from vitserve.export.config import OPSET
from vitserve.export.errors import ConversionError
from vitserve.models.pixels import normalise_pixels
from vitserve.models.vit import ViT
from vitserve.runtime.artifact import INPUT_NAME, OUTPUT_NAME, Preprocessing
from vitserve.runtime.explain_session import ATTENTIONS_NAME

# A protobuf cannot be serialised above 2 GiB; such a model would need external data.
PROTOBUF_LIMIT = 2**31 - 1


class PixelClassifier(nn.Module):
    """uint8 (N, H, W, 3) RGB pixels -> float32 logits (N, C): the artifact's whole contract in one module.

    `fused=False` evaluates attention step by step; with `attention_outputs` it also returns every
    block's attention probabilities, stacked (N, layers, heads, tokens, tokens): the explanation graph.
    """

    def __init__(
        self, vit: ViT, preprocessing: Preprocessing, fused: bool = True, attention_outputs: bool = False
    ) -> None:
        super().__init__()
        if fused and attention_outputs:
            raise ValueError("fused attention never materialises its probabilities: use fused=False")
        self.vit = vit
        self.fused, self.attention_outputs = fused, attention_outputs
        # Buffers, so the exported graph carries this artifact's mean/std as constants.
        self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, pixels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = normalise_pixels(pixels, self.mean, self.std)
        tokens, attentions = self.vit.forward_features(x, self.fused)
        logits = self.vit.forward_head(tokens)
        if self.attention_outputs:
            return logits, torch.stack(attentions, dim=1)  # (N, L, nh, T, T)
        return logits


def export_onnx(
    vit: ViT, preprocessing: Preprocessing, fused: bool = True, attention_outputs: bool = False
) -> onnx.ModelProto:
    """Export with a dynamic batch axis. The serving graph is fused; `fused=False` gives the manual
    attention path (the explanation graph with `attention_outputs`, else a benchmark's reference)."""
    module = PixelClassifier(vit, preprocessing, fused, attention_outputs).eval()
    outputs = [OUTPUT_NAME, ATTENTIONS_NAME] if attention_outputs else [OUTPUT_NAME]
    return export_module(module, vit.config.image_size, outputs)


def export_module(module: nn.Module, image_size: int, output_names: list[str]) -> onnx.ModelProto:
    """Export a module taking uint8 (N, S, S, 3) "pixels", with a dynamic batch axis, as one proto."""
    # Batch 2, not 1: torch.export specialises a size-1 dimension and would drop the dynamic axis.
    example = torch.zeros((2, image_size, image_size, 3), dtype=torch.uint8)
    # The exporter reports progress on stdout and warns about internals we do not control; keep the
    # CLI's output to what vitserve says. Errors still propagate.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("onnxscript").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}},
                optimize=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many unrelated types; one typed error for callers
            raise ConversionError(f"torch.onnx.export (dynamo, opset {OPSET}) failed: {exc}") from exc
    if program is None:
        raise ConversionError("torch.onnx.export returned no program")
    model = program.model_proto
    # The exporter's intermediate shape annotations are not always consistent after its own
    # optimisation (onnxruntime's quantizer rejects them); ORT re-infers shapes anyway.
    del model.graph.value_info[:]
    if model.ByteSize() > PROTOBUF_LIMIT:
        raise ConversionError("model exceeds 2 GiB and cannot be written as one self-contained .onnx file")
    return model
