"""The explanation artifact: written by `vitserve export`, same logits as the fused graph, true attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vitserve.cli import main
from vitserve.export.config import EXPLAIN, ExportConfig, Tolerances
from vitserve.export.convert import PixelClassifier
from vitserve.export.errors import ParityError
from vitserve.export.verify import gate, random_pixels
from vitserve.models.checkpoint import save_checkpoint
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import DigitNormalisation, Preprocessing, read_metadata
from vitserve.runtime.explain_session import (
    ATTENTIONS_NAME,
    EXPLAIN_FILE,
    EXPLANATION_ROLE,
    ROLE_KEY,
    ExplainArtifactError,
    ExplainSession,
)
from vitserve.runtime.rollout import rollout_map

TINY = ViTConfig(image_size=32, patch_size=8, num_classes=5, dim=32, depth=2, num_heads=2)
LABELS = tuple(f"class{i}" for i in range(TINY.num_classes))
PREPROCESSING = Preprocessing(image_size=32, mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3))


def tiny_vit(seed: int) -> ViT:
    torch.manual_seed(seed)
    return ViT(TINY).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder, tiny_vit(0), LABELS, PREPROCESSING, "tiny", "0.1")
    return folder


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`vitserve export` on a tiny checkpoint, through the CLI as a user runs it."""
    out = tmp_path_factory.mktemp("out")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    return out


def test_export_writes_the_explanation_artifact_beside_model_onnx(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == ["model.explain.onnx", "model.onnx"]
    meta = read_metadata(exported / EXPLAIN_FILE)
    assert meta.extra[ROLE_KEY] == EXPLANATION_ROLE
    assert meta.fused_attention == 0 and meta.precision == "fp32" and meta.labels == LABELS
    assert float(meta.extra["gate_max_abs_logit_vs_fused"]) <= 1e-4
    # The serving artifact is not marked: the service never mistakes one for the other.
    assert ROLE_KEY not in read_metadata(exported / "model.onnx").extra


def test_explanation_matches_the_fused_graph_and_pytorch_attention(exported: Path) -> None:
    model = onnx.load(str(exported / EXPLAIN_FILE))
    assert [o.name for o in model.graph.output] == ["logits", ATTENTIONS_NAME]
    session = ExplainSession(exported)
    pixels = random_pixels(32, 3, seed=5).pixels
    fused = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (fused_logits,) = fused.run(["logits"], {"pixels": pixels})
    vit = tiny_vit(0)
    for i, image in enumerate(pixels):
        explained = session.explain(image)
        assert explained.attentions.shape == (TINY.depth, TINY.num_heads, 17, 17)  # 4x4 patches + class
        np.testing.assert_allclose(explained.attentions.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(explained.logits, fused_logits[i], atol=1e-4)
        # The attention is PyTorch's manual path's, not just something row-stochastic.
        with torch.inference_mode():
            explaining = PixelClassifier(vit, PREPROCESSING, fused=False, attention_outputs=True)
            _, reference = explaining(torch.from_numpy(image[None]))
        np.testing.assert_allclose(explained.attentions, reference[0].numpy(), atol=1e-5)
        assert rollout_map(explained.attentions).shape == (4, 4)


def test_library_default_and_no_explain_flag_skip_it(tmp_path: Path) -> None:
    assert ExportConfig().explain is False
    checkpoint = tmp_path / "ckpt"
    save_checkpoint(checkpoint, tiny_vit(0), LABELS, PREPROCESSING, "tiny", "0.1")
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--no-explain"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]


def test_explanation_that_differs_from_the_fused_graph_fails_parity(exported: Path) -> None:
    """A graph that does not compute the fused graph's logits is refused (and so never written)."""
    explain = onnx.load(str(exported / EXPLAIN_FILE))
    # Shift every bias of the explanation graph a little: a different computation, same shapes.
    for tensor in explain.graph.initializer:
        if tensor.name.endswith("bias"):
            values = onnx.numpy_helper.to_array(tensor) + np.float32(0.01)
            tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    data = random_pixels(32, 4, seed=0)
    fused = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (fused_logits,) = fused.run(["logits"], {"pixels": data.pixels})
    with pytest.raises(ParityError, match="max_abs_logit_vs_fused"):
        gate(EXPLAIN, explain, fused_logits, data, ExportConfig(eval_batch=2, intra_op_threads=1))


def test_the_explanation_gate_limits_are_tolerances_like_every_other(exported: Path) -> None:
    explain = onnx.load(str(exported / EXPLAIN_FILE))
    data = random_pixels(32, 4, seed=0)
    fused = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (fused_logits,) = fused.run(["logits"], {"pixels": data.pixels})
    passed = gate(EXPLAIN, explain, fused_logits, data, ExportConfig())
    assert passed.metrics["max_attention_row_sum_error"] <= 1e-4
    impossible = ExportConfig(tolerances=Tolerances(explain_max_row_sum_error=-1.0))
    with pytest.raises(ParityError, match="max_attention_row_sum_error"):
        gate(EXPLAIN, explain, fused_logits, data, impossible)


def test_session_refuses_an_artifact_that_is_not_an_explanation(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(ExplainArtifactError, match=r"no model\.explain\.onnx"):
        ExplainSession(tmp_path)
    (tmp_path / EXPLAIN_FILE).write_bytes((exported / "model.onnx").read_bytes())
    with pytest.raises(ExplainArtifactError, match="not marked"):
        ExplainSession(tmp_path)


def test_digit_normalisation_travels_in_both_artifacts(tmp_path: Path) -> None:
    """A model trained behind the digit normalisation asks for it from every artifact it ships in."""
    pre = Preprocessing(image_size=32, digit_normalisation=DigitNormalisation(box=24))
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, tiny_vit(0), LABELS, pre, "tiny-digits", "0.1")
    assert main(["export", "--checkpoint", str(folder), "--out", str(tmp_path / "out")]) == 0
    for name in ("model.onnx", EXPLAIN_FILE):
        assert read_metadata(tmp_path / "out" / name).preprocessing == pre
