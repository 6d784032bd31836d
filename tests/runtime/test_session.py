"""Artifact choice and OnnxClassifier on a real ONNX artifact exported from a tiny random ViT."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.support import host_providers
from vitserve.export.convert import PixelClassifier, export_onnx
from vitserve.export.write import with_metadata, write_atomic
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import ArtifactError, ArtifactMetadata, Preprocessing
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.session import (
    ARTIFACT_FILES,
    CPU,
    CUDA,
    ModelLoadError,
    OnnxClassifier,
    SessionOptions,
    choose_artifact,
    why_chosen,
)
from vitserve.service.settings import Settings, SettingsError

TINY = ViTConfig(image_size=32, patch_size=8, num_classes=5, dim=32, depth=2, num_heads=2)
LABELS = tuple(f"class{i}" for i in range(TINY.num_classes))
PREPROCESSING = Preprocessing(image_size=32, mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3))
CPU_ONLY = SessionOptions(device="cpu", intra_op_threads=1)


# --- choose_artifact -----------------------------------------------------------------------------------


def model_dir(tmp_path: Path, *precisions: str) -> Path:
    """A directory with (empty) artifact files: choose_artifact only looks at which files exist."""
    for precision in precisions:
        (tmp_path / ARTIFACT_FILES[precision]).touch()
    return tmp_path


@pytest.mark.parametrize(
    ("present", "use_cuda", "chosen"),
    [
        (("fp32", "fp16", "int8"), False, "int8"),
        (("fp32", "fp16"), False, "fp32"),  # auto never picks FP16 for a CPU
        (("fp32",), False, "fp32"),
        (("fp32", "fp16", "int8"), True, "fp16"),
        (("fp32", "int8"), True, "fp32"),  # nor INT8 for a GPU
        (("fp32",), True, "fp32"),
    ],
)
def test_auto_prefers_the_fast_artifact_for_the_device(
    tmp_path: Path, present: tuple[str, ...], use_cuda: bool, chosen: str
) -> None:
    folder = model_dir(tmp_path, *present)
    assert choose_artifact(folder, "auto", use_cuda) == folder / ARTIFACT_FILES[chosen]


@pytest.mark.parametrize(("present", "use_cuda"), [(("fp16",), False), (("int8",), True), ((), False)])
def test_auto_without_a_usable_artifact_raises(
    tmp_path: Path, present: tuple[str, ...], use_cuda: bool
) -> None:
    with pytest.raises(ModelLoadError, match="no artifact"):
        choose_artifact(model_dir(tmp_path, *present), "auto", use_cuda)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_explicit_precision_is_honoured_even_when_auto_would_choose_otherwise(
    tmp_path: Path, precision: str
) -> None:
    folder = model_dir(tmp_path, "fp32", "fp16", "int8")
    for use_cuda in (False, True):
        assert choose_artifact(folder, precision, use_cuda) == folder / ARTIFACT_FILES[precision]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_explicit_precision_that_is_missing_raises_and_does_not_fall_back(
    tmp_path: Path, precision: str
) -> None:
    folder = model_dir(tmp_path, "fp32")
    with pytest.raises(ModelLoadError, match=ARTIFACT_FILES[precision].replace(".", r"\.")):
        choose_artifact(folder, precision, use_cuda=False)


def test_unknown_precision_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown precision 'bf16'"):
        choose_artifact(model_dir(tmp_path, "fp32"), "bf16", use_cuda=False)


def test_a_directory_named_like_an_artifact_is_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / ARTIFACT_FILES["int8"]).mkdir()
    (tmp_path / ARTIFACT_FILES["fp32"]).touch()
    assert choose_artifact(tmp_path, "auto", use_cuda=False) == tmp_path / ARTIFACT_FILES["fp32"]


def test_cpu_budget_is_within_the_affinity_mask() -> None:
    assert 1 <= cpu_budget() <= len(os.sched_getaffinity(0))


# --- OnnxClassifier on a real artifact -----------------------------------------------------------------


def tiny_vit() -> ViT:
    torch.manual_seed(0)
    vit = ViT(TINY).eval()
    with torch.no_grad():
        vit.head.weight.mul_(20.0)  # decisive logits, so a wrong computation cannot hide in near-ties
    return vit


def metadata(precision: str = "fp32") -> ArtifactMetadata:
    return ArtifactMetadata(
        model_name="tiny-vit",
        model_version="0.0.1",
        labels=LABELS,
        preprocessing=PREPROCESSING,
        precision=precision,
        fused_attention=TINY.depth,
        depth=TINY.depth,
        source_sha256="0" * 64,
        exporter_version="test",
    )


@pytest.fixture(scope="module")
def exported() -> onnx.ModelProto:
    """The tiny ViT through the real exporter: uint8 NHWC "pixels" in, float32 "logits" out."""
    return export_onnx(tiny_vit(), PREPROCESSING)


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, exported: onnx.ModelProto) -> Path:
    folder = tmp_path_factory.mktemp("artifact")
    write_atomic(with_metadata(exported, metadata()), folder / ARTIFACT_FILES["fp32"])
    return folder


@pytest.fixture(scope="module")
def classifier(artifact_dir: Path) -> OnnxClassifier:
    return OnnxClassifier(artifact_dir, CPU_ONLY)


def random_pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_cpu_session_runs_on_the_cpu_provider_only(classifier: OnnxClassifier) -> None:
    assert classifier.providers == (CPU,)
    assert classifier.path.name == ARTIFACT_FILES["fp32"]
    assert classifier.intra_op_threads == 1


def test_metadata_is_read_from_the_artifact(classifier: OnnxClassifier) -> None:
    assert classifier.metadata == metadata()
    assert classifier.input_shape == (32, 32, 3)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_predict_batch_shape_dtype_and_values(classifier: OnnxClassifier, n: int) -> None:
    pixels = random_pixels(n, seed=n)
    logits = classifier.predict_batch(pixels)
    assert logits.shape == (n, len(LABELS)) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    # The same computation in PyTorch: normalisation with the artifact's own mean/std, then the ViT.
    with torch.inference_mode():
        expected = PixelClassifier(tiny_vit(), PREPROCESSING)(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert (logits.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_a_batch_gives_the_same_logits_as_its_images_one_by_one(classifier: OnnxClassifier) -> None:
    pixels = random_pixels(5, seed=42)
    batched = classifier.predict_batch(pixels)
    single = np.concatenate([classifier.predict_batch(pixels[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_predict_batch_does_not_modify_its_input(classifier: OnnxClassifier) -> None:
    pixels = random_pixels(3)
    before = pixels.copy()
    classifier.predict_batch(pixels)
    np.testing.assert_array_equal(pixels, before)


def test_warm_up_runs_each_batch_size(classifier: OnnxClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    run_shapes: list[tuple[int, ...]] = []
    real = classifier.predict_batch

    # Records each batch it is handed, then runs it on the real session.
    def recording(pixels: np.ndarray) -> np.ndarray:
        run_shapes.append(pixels.shape)
        logits = real(pixels)
        assert logits.shape == (len(pixels), TINY.num_classes)
        return logits

    monkeypatch.setattr(classifier, "predict_batch", recording)
    classifier.warm_up([1, 2, 4, 8])
    assert run_shapes == [(n, *classifier.input_shape) for n in (1, 2, 4, 8)]
    classifier.warm_up([])
    assert len(run_shapes) == 4


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((32, 32, 3), np.uint8),  # no batch axis
        ((1, 32, 32), np.uint8),  # no channel axis
        ((1, 32, 32, 4), np.uint8),  # RGBA
        ((1, 3, 32, 32), np.uint8),  # NCHW instead of NHWC
        ((1, 64, 64, 3), np.uint8),  # not resized to the model's size
        ((1, 32, 32, 3), np.float32),  # already normalised floats
        ((1, 32, 32, 3), np.int64),
    ],
)
def test_wrong_input_raises_value_error(
    classifier: OnnxClassifier, shape: tuple[int, ...], dtype: type
) -> None:
    with pytest.raises(ValueError, match="expected uint8"):
        classifier.predict_batch(np.zeros(shape, dtype=dtype))


def test_zero_threads_means_the_cpu_budget(artifact_dir: Path) -> None:
    loaded = OnnxClassifier(artifact_dir, SessionOptions(device="cpu", intra_op_threads=0))
    assert loaded.intra_op_threads == cpu_budget()


@pytest.mark.parametrize(
    ("mode", "allow_spinning", "stop_after_run"),
    [("run", "1", "1"), ("always", "1", "0"), ("never", "0", "0")],
)
def test_the_spin_mode_reaches_the_session(
    artifact_dir: Path, mode: str, allow_spinning: str, stop_after_run: str
) -> None:
    loaded = OnnxClassifier(artifact_dir, SessionOptions(device="cpu", spin=mode))
    assert isinstance(loaded.session, ort.InferenceSession)
    options = loaded.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow_spinning
    assert options.get_session_config_entry("session.force_spinning_stop") == stop_after_run


def test_an_unknown_spin_mode_is_refused_by_the_settings() -> None:
    with pytest.raises(SettingsError, match="VITSERVE_ORT_SPIN must be never, run or always"):
        Settings.from_env({"VITSERVE_ORT_SPIN": "1"})


def test_auto_picks_int8_on_the_cpu_and_reads_its_own_metadata(
    tmp_path: Path, exported: onnx.ModelProto
) -> None:
    """Two artifacts side by side: auto on a CPU loads the INT8 file (here the same graph, labelled int8)."""
    write_atomic(with_metadata(exported, metadata("fp32")), tmp_path / ARTIFACT_FILES["fp32"])
    write_atomic(with_metadata(exported, metadata("int8")), tmp_path / ARTIFACT_FILES["int8"])
    loaded = OnnxClassifier(tmp_path, SessionOptions(precision="auto", device="cpu", intra_op_threads=1))
    assert loaded.path.name == ARTIFACT_FILES["int8"] and loaded.metadata.precision == "int8"
    fp32 = OnnxClassifier(tmp_path, SessionOptions(precision="fp32", device="cpu", intra_op_threads=1))
    assert fp32.path.name == ARTIFACT_FILES["fp32"] and fp32.metadata.precision == "fp32"


def test_explicit_precision_missing_raises_model_load_error(artifact_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="int8"):
        OnnxClassifier(artifact_dir, SessionOptions(precision="int8", device="cpu"))


def test_auto_device_reports_the_provider_it_really_got(artifact_dir: Path) -> None:
    loaded = OnnxClassifier(artifact_dir, SessionOptions(device="auto", intra_op_threads=1))
    assert loaded.providers[-1] == CPU
    assert list(loaded.providers) == host_providers()  # asked of ORT by a probe of the test's own


def test_required_cuda_without_a_gpu_raises_instead_of_running_on_the_cpu(artifact_dir: Path) -> None:
    if host_providers()[0] == CUDA:
        loaded = OnnxClassifier(artifact_dir, SessionOptions(device="cuda", intra_op_threads=1))
        assert loaded.providers[0] == CUDA
        assert loaded.predict_batch(random_pixels(2)).shape == (2, len(LABELS))
    else:
        # ORT would silently fall back to the CPU; the classifier must notice and refuse.
        with pytest.raises(ModelLoadError, match="CUDA was required"):
            OnnxClassifier(artifact_dir, SessionOptions(device="cuda", intra_op_threads=1))


def test_a_corrupt_artifact_raises_model_load_error(tmp_path: Path) -> None:
    (tmp_path / ARTIFACT_FILES["fp32"]).write_bytes(b"not a protobuf \x00\xff" * 10)
    with pytest.raises(ModelLoadError, match="cannot load"):
        OnnxClassifier(tmp_path, CPU_ONLY)


def test_an_onnx_file_without_vitserve_metadata_raises_artifact_error(
    tmp_path: Path, exported: onnx.ModelProto
) -> None:
    write_atomic(exported, tmp_path / ARTIFACT_FILES["fp32"])
    with pytest.raises(ArtifactError, match="vitserve export"):
        OnnxClassifier(tmp_path, CPU_ONLY)


def test_the_artifact_file_can_be_moved_after_loading(tmp_path: Path, artifact_dir: Path) -> None:
    """A self-contained artifact: the session keeps working when the file goes away (rolling deploys)."""
    shutil.copytree(artifact_dir, tmp_path / "m")
    loaded = OnnxClassifier(tmp_path / "m", CPU_ONLY)
    shutil.rmtree(tmp_path / "m")
    assert loaded.predict_batch(random_pixels(1)).shape == (1, len(LABELS))


@pytest.mark.parametrize(
    ("present", "precision", "use_cuda", "why"),
    [
        (
            ("fp32",),
            "auto",
            False,
            "auto on the CPU serves the first of model.int8.onnx, model.onnx in the "
            "folder; it has no model.int8.onnx",
        ),
        (
            ("fp32", "int8"),
            "auto",
            False,
            "auto on the CPU serves the first of model.int8.onnx, model.onnx in the folder",
        ),
        (
            ("fp32", "fp16"),
            "auto",
            True,
            "auto on a GPU serves the first of model.fp16.onnx, model.onnx in the folder",
        ),
        (("fp32", "int8"), "fp32", False, "precision fp32 was asked for"),
    ],
)
def test_why_an_artifact_serves_is_said(
    tmp_path: Path, present: tuple[str, ...], precision: str, use_cuda: bool, why: str
) -> None:
    folder = model_dir(tmp_path, *present)
    assert why_chosen(choose_artifact(folder, precision, use_cuda), precision, use_cuda) == why


def test_an_artifact_from_before_the_batch_gate_is_served_with_a_warning(
    tmp_path: Path, exported: onnx.ModelProto, caplog: pytest.LogCaptureFixture
) -> None:
    write_atomic(with_metadata(exported, metadata()), tmp_path / ARTIFACT_FILES["fp32"])
    with caplog.at_level("WARNING", logger="vitserve.runtime.session"):
        old = OnnxClassifier(tmp_path, CPU_ONLY)
    assert old.metadata.batch_max_abs_logit is None
    assert "predates the export's batch-invariance gate" in caplog.text
    caplog.clear()
    gated = replace(metadata(), extra={"gate_batch_max_abs_logit": "0"})
    write_atomic(with_metadata(exported, gated), tmp_path / ARTIFACT_FILES["fp32"])
    with caplog.at_level("WARNING", logger="vitserve.runtime.session"):
        new = OnnxClassifier(tmp_path, CPU_ONLY)
    assert new.metadata.batch_max_abs_logit == 0.0 and "predates" not in caplog.text
