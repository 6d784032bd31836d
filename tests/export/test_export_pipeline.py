"""Export end to end through the public entry points: written files, gates, and all-or-nothing writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vitserve.cli import main
from vitserve.export.config import ExportConfig, Tolerances
from vitserve.export.convert import PixelClassifier, export_onnx
from vitserve.export.errors import (
    CalibrationError,
    FusionError,
    GateUnavailableError,
    HeldoutError,
    ParityError,
)
from vitserve.export.fusion import check_fusion, count_fusion
from vitserve.export.pipeline import export_checkpoint
from vitserve.export.verify import cuda_usable, load_heldout, make_session
from vitserve.models.checkpoint import load_checkpoint, save_checkpoint, sha256_of
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import INPUT_NAME, Preprocessing, read_metadata

TINY = ViTConfig(image_size=32, patch_size=8, num_classes=5, dim=32, depth=2, num_heads=2)
LABELS = tuple(f"class{i}" for i in range(TINY.num_classes))
# Not 0.5: the test must show the artifact carries this model's own normalisation.
PREPROCESSING = Preprocessing(image_size=32, mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3))


def tiny_vit(seed: int = 0, head_gain: float = 1.0) -> ViT:
    torch.manual_seed(seed)
    vit = ViT(TINY).eval()
    # A random ViT's logits are near-ties; a larger head makes its top-1 decisive, as a trained one is.
    with torch.no_grad():
        vit.head.weight.mul_(head_gain)
    return vit


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-ckpt")
    save_checkpoint(folder, tiny_vit(), LABELS, PREPROCESSING, "tiny", "0.1")
    return folder


@pytest.fixture(scope="module")
def heldout_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with heldout.npz beside it: 16x16 grayscale digits-like images, labelled by the model."""
    folder = tmp_path_factory.mktemp("heldout-ckpt")
    vit = tiny_vit(seed=1, head_gain=200.0)
    save_checkpoint(folder, vit, LABELS, PREPROCESSING, "tiny-heldout", "0.2")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(200, 16, 16), dtype=np.uint8)
    # Labels = PyTorch's own predictions on the images as the exporter will see them (RGB, resized).
    np.savez(folder / "heldout.npz", images=images, labels=np.zeros(len(images), dtype=np.int64))
    pixels = load_heldout(folder / "heldout.npz", PREPROCESSING, limit=len(images)).pixels
    with torch.inference_mode():
        labels = PixelClassifier(vit, PREPROCESSING)(torch.from_numpy(pixels)).argmax(1).numpy()
    np.savez(folder / "heldout.npz", images=images, labels=labels.astype(np.int64))
    # Calibration images for INT8: drawn apart from the held-out ones, as training images would be.
    calibration = np.random.default_rng(2).integers(0, 256, size=(64, 16, 16), dtype=np.uint8)
    np.savez(folder / "calibration.npz", images=calibration)
    return folder


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    export_checkpoint(tiny_checkpoint, out)
    return out / "model.onnx"


def test_fp32_artifact_has_fused_attention_and_metadata(exported: Path, tiny_checkpoint: Path) -> None:
    assert sorted(p.name for p in exported.parent.iterdir()) == ["model.onnx"]  # self-contained, no .data
    assert exported.stat().st_mode & 0o044 == 0o044  # readable by the service's user, not 0600
    meta = read_metadata(exported)
    assert (meta.precision, meta.depth, meta.fused_attention) == ("fp32", TINY.depth, TINY.depth)
    assert meta.labels == LABELS and meta.preprocessing == PREPROCESSING
    assert (meta.model_name, meta.model_version) == ("tiny", "0.1")
    assert meta.source_sha256 == sha256_of(tiny_checkpoint / "model.safetensors")
    assert {"torch", "onnx", "onnxruntime"} <= set(meta.extra)
    model = onnx.load(str(exported))
    assert count_fusion(model).softmax == 0
    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("batch", [1, 7])
def test_ort_logits_match_pytorch(exported: Path, tiny_checkpoint: Path, batch: int) -> None:
    loaded = load_checkpoint(tiny_checkpoint)
    pixels = np.random.default_rng(batch).integers(0, 256, size=(batch, 32, 32, 3), dtype=np.uint8)
    session = make_session(exported.read_bytes(), "CPUExecutionProvider", threads=1)
    (logits,) = session.run(None, {INPUT_NAME: pixels})
    with torch.inference_mode():
        expected = PixelClassifier(loaded.model, loaded.preprocessing)(torch.from_numpy(pixels)).numpy()
    assert logits.dtype == np.float32 and logits.shape == (batch, TINY.num_classes)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_impossible_tolerance_raises_parity_error_and_writes_nothing(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    config = ExportConfig(tolerances=Tolerances(fp32_max_abs_logit=-1.0))
    with pytest.raises(ParityError) as info:
        export_checkpoint(tiny_checkpoint, tmp_path / "out", config)
    assert (info.value.precision, info.value.metric, info.value.limit) == ("fp32", "max_abs_logit", -1.0)
    assert not (tmp_path / "out").exists()


def test_int8_variant_is_gated_on_heldout_and_runs(heldout_checkpoint: Path, tmp_path: Path) -> None:
    variants = export_checkpoint(heldout_checkpoint, tmp_path, ExportConfig(precisions=("fp32", "int8")))
    assert [v.variant for v in variants] == ["fp32", "int8"]
    int8 = tmp_path / "model.int8.onnx"
    meta = read_metadata(int8)
    assert (meta.precision, meta.fused_attention) == ("int8", TINY.depth)
    assert meta.extra["gate_data"].startswith("heldout:")
    assert float(meta.extra["gate_top1_agreement"]) >= 0.99
    assert float(meta.extra["gate_batch_max_abs_logit"]) == 0.0
    assert meta.extra["calibration_data"].endswith("calibration.npz (64 images)")
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    # Static: scales are constants of the graph, none computed from the batch at run time.
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops
    # The agreement measured here, on every held-out image, not the figure the exporter recorded.
    pixels = load_heldout(heldout_checkpoint / "heldout.npz", PREPROCESSING, limit=200).pixels
    (logits,) = make_session(int8.read_bytes(), "CPUExecutionProvider", 1).run(None, {INPUT_NAME: pixels})
    assert logits.shape == (200, TINY.num_classes) and logits.dtype == np.float32
    loaded = load_checkpoint(heldout_checkpoint)
    with torch.inference_mode():
        expected = PixelClassifier(loaded.model, loaded.preprocessing)(torch.from_numpy(pixels)).numpy()
    assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99


def test_int8_without_calibration_images_is_refused(heldout_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "heldout.npz"):
        (folder / name).write_bytes((heldout_checkpoint / name).read_bytes())
    with pytest.raises(CalibrationError, match="calibration"):
        export_checkpoint(folder, tmp_path / "out", ExportConfig(precisions=("fp32", "int8")))
    assert not (tmp_path / "out").exists()


def test_int8_refuses_to_calibrate_on_the_heldout_set(heldout_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="held-out"):
        export_checkpoint(
            heldout_checkpoint,
            tmp_path / "out",
            ExportConfig(precisions=("fp32", "int8")),
            calibration=heldout_checkpoint / "heldout.npz",
        )
    assert not (tmp_path / "out").exists()


def test_failing_int8_gate_writes_no_variant_at_all(heldout_checkpoint: Path, tmp_path: Path) -> None:
    config = ExportConfig(precisions=("fp32", "int8"), tolerances=Tolerances(int8_accuracy_drop=-1.0))
    with pytest.raises(ParityError, match="int8 parity gate failed: accuracy_drop"):
        export_checkpoint(heldout_checkpoint, tmp_path, config)
    assert list(tmp_path.iterdir()) == []


def test_int8_without_heldout_data_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(GateUnavailableError, match="held-out"):
        export_checkpoint(tiny_checkpoint, tmp_path, ExportConfig(precisions=("int8",)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(cuda_usable(), reason="with CUDA the FP16 gate runs; this checks the CPU-only refusal")
def test_fp16_is_refused_without_cuda(heldout_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(GateUnavailableError, match="CUDA"):
        export_checkpoint(heldout_checkpoint, tmp_path, ExportConfig(precisions=("fp32", "fp16")))
    assert list(tmp_path.iterdir()) == []


def test_unfused_graph_fails_the_fusion_count() -> None:
    model = export_onnx(tiny_vit(), PREPROCESSING, fused=False)
    with pytest.raises(FusionError) as info:
        check_fusion(model, TINY.depth)
    assert (info.value.fused, info.value.softmax) == (0, TINY.depth)


def test_cli_export_then_inspect(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "model.onnx")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fused_attention"] == TINY.depth == report["metadata"]["depth"]
    assert report["inputs"] == [{"name": "pixels", "dtype": "uint8", "shape": ["batch", 32, 32, 3]}]
    assert report["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", TINY.num_classes]}]
    assert report["op_counts"]["Attention"] == TINY.depth and "Softmax" not in report["op_counts"]


def test_unreadable_heldout_file_is_a_typed_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, pictures=np.zeros((2, 32, 32), dtype=np.uint8))
    with pytest.raises(HeldoutError, match="cannot read 'images'"):
        export_checkpoint(tiny_checkpoint, tmp_path / "out", heldout=bad)
    assert not (tmp_path / "out").exists()
