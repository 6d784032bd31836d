"""Which export route yields one fused attention node per block? Evidence for export/README.md.

Route (a): torch's dynamo exporter at opset 23 lowers SDPA to ONNX `Attention` (vitserve's choice).
Route (b): onnxruntime.transformers' optimizer (model_type="vit") pattern-matches an unfused graph
into com.microsoft.Attention. Run: `python -m vitserve.bench.fusion_routes` (a few seconds per row).
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import warnings
from pathlib import Path

import torch
from onnxruntime.transformers.optimizer import optimize_model
from torch import nn

from vitserve.export.fusion import count_fusion
from vitserve.models.loaders.huggingface import hf_config_for
from vitserve.models.vit import PRESETS, ViT


class SplitQKVAttention(nn.Module):
    """The layout route (b) was written for: separate q/k/v projections and a Div by sqrt(head_dim)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, fused: bool = True) -> tuple[torch.Tensor, None]:  # always manual
        B, N, D = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, N, self.num_heads, self.head_dim).permute(0, 2, 1, 3)  # (B, nh, N, hd)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        probs = (torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)).softmax(-1)
        return self.proj(torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(B, N, D)), None


class ManualPath(nn.Module):
    """A ViT whose forward takes the step-by-step attention path (MatMul-Softmax-MatMul)."""

    def __init__(self, vit: ViT) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x, fused=False)


def candidates() -> dict[str, nn.Module]:
    config = PRESETS["digits"]
    torch.manual_seed(0)
    packed = ManualPath(ViT(config).eval())
    split = ViT(config).eval()
    for block in split.blocks:
        block.attn = SplitQKVAttention(config.dim, config.num_heads)  # type: ignore[assignment]
    models: dict[str, nn.Module] = {"vitserve ViT, manual attention (packed qkv)": packed}
    models["vitserve ViT, split q/k/v + Div"] = split
    try:
        import transformers
    except ImportError:
        return models
    hf_config = hf_config_for(config, attn_implementation="eager")
    models[f"transformers {transformers.__version__} ViTForImageClassification (eager)"] = (
        transformers.ViTForImageClassification(hf_config).eval()
    )
    return models


def export(module: nn.Module, dynamo: bool, path: Path) -> None:
    size = PRESETS["digits"].image_size
    example = (torch.randn(2, 3, size, size),)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(module, example, dynamo=True, opset_version=23)
            assert program is not None
            program.save(str(path))
        else:
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=17)


def main() -> None:
    config = PRESETS["digits"]
    print("| model | exporter | route (b) fused / depth | Softmax left |")
    print("| --- | --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, module in candidates().items():
            for dynamo in (False, True):
                path = Path(tmp) / "model.onnx"
                export(module, dynamo, path)
                optimized = optimize_model(
                    str(path), model_type="vit", num_heads=config.num_heads, hidden_size=config.dim
                )
                report = count_fusion(optimized.model)
                exporter = "dynamo, opset 23" if dynamo else "TorchScript, opset 17"
                print(
                    f"| {name} | {exporter} | {report.fused_attention} / {config.depth} | {report.softmax} |"
                )


if __name__ == "__main__":
    main()
