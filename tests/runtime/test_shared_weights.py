"""Sessions on shared weights (C API): the Python session's answers, and one copy of the weights."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.support import write_random_vit
from vitserve.models.vit import ViTConfig
from vitserve.runtime.artifact import ARTIFACT_FILES, Preprocessing
from vitserve.runtime.memory import MIB, release_free_heap, resident_mib
from vitserve.runtime.ort_capi import ORT_API_VERSION, CSession, OrtApiError, c_api
from vitserve.runtime.session import ModelLoadError, OnnxClassifier, SessionOptions
from vitserve.runtime.shared_weights import SharedWeights

# Wide enough that a copy of its weights (about 40 MiB) stands far above the noise of resident memory,
# small enough to export and load in seconds.
MID = ViTConfig(image_size=32, patch_size=8, num_classes=10, dim=384, depth=6, num_heads=6)
PREPROCESSING = Preprocessing(image_size=32)


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_vit(MID, tmp_path_factory.mktemp("mid"), "mid-vit")


def initializer_bytes(path: Path) -> int:
    return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_the_c_api_table_is_the_wheels_own() -> None:
    api = c_api()  # checks entries with known answers (a status round trip, the provider list) on load
    assert api.version == ort.__version__
    assert int(ort.__version__.split(".")[1]) == ORT_API_VERSION


@pytest.mark.parametrize("threads", [1, 2])
def test_a_session_on_shared_weights_answers_bitwise_as_the_python_session(
    artifact_dir: Path, threads: int
) -> None:
    options = SessionOptions(device="cpu", intra_op_threads=threads)
    weights = SharedWeights(artifact_dir / ARTIFACT_FILES["fp32"])
    shared = OnnxClassifier(artifact_dir, options, weights)
    plain = OnnxClassifier(artifact_dir, options)
    assert shared.weights_shared and not plain.weights_shared
    assert (shared.providers, shared.metadata, shared.input_shape) == (
        plain.providers,
        plain.metadata,
        plain.input_shape,
    )
    for n in (1, 3, 8):
        batch = pixels(n, seed=n)
        assert np.array_equal(shared.predict_batch(batch), plain.predict_batch(batch))
    weights.drop_resident_raw()  # what runs still read comes back from the file, unchanged
    batch = pixels(4, seed=7)
    assert np.array_equal(shared.predict_batch(batch), plain.predict_batch(batch))
    shared.release_arena()
    assert np.array_equal(shared.predict_batch(batch), plain.predict_batch(batch))


def test_an_image_scores_the_same_alone_or_in_a_batch_on_either_shared_session(artifact_dir: Path) -> None:
    weights = SharedWeights(artifact_dir / ARTIFACT_FILES["fp32"])
    runner = OnnxClassifier(artifact_dir, SessionOptions(device="cpu", intra_op_threads=1), weights)
    alone = OnnxClassifier(artifact_dir, SessionOptions(device="cpu", intra_op_threads=2), weights)
    batch = pixels(6, seed=3)
    together = runner.predict_batch(batch)
    for i in range(len(batch)):
        assert np.array_equal(alone.predict_batch(batch[i : i + 1])[0], together[i])
        assert np.array_equal(runner.predict_batch(batch[i : i + 1])[0], together[i])


def test_a_second_session_on_shared_weights_holds_no_second_copy(artifact_dir: Path) -> None:
    path = artifact_dir / ARTIFACT_FILES["fp32"]
    weights_mib = initializer_bytes(path) / MIB
    batch = pixels(1)
    held: list[OnnxClassifier] = []

    def growth(load: Callable[[], OnnxClassifier]) -> float:
        """What loading one more session and running it once adds to resident memory, in MiB."""
        release_free_heap()
        before = resident_mib()
        held.append(load())
        held[-1].predict_batch(batch)
        release_free_heap()
        after = resident_mib()
        assert before is not None and after is not None
        return after - before

    one = SessionOptions(device="cpu", intra_op_threads=1)
    two = SessionOptions(device="cpu", intra_op_threads=2)
    # The measure sees a copy: a second Python session packs the weights again.
    growth(lambda: OnnxClassifier(artifact_dir, one))
    assert growth(lambda: OnnxClassifier(artifact_dir, two)) > 0.5 * weights_mib
    weights = SharedWeights(path)
    growth(lambda: OnnxClassifier(artifact_dir, one, weights))
    assert growth(lambda: OnnxClassifier(artifact_dir, two, weights)) < 0.2 * weights_mib
    # The raw copies leave memory once the sessions are built: one packed copy is what stays.
    before = resident_mib()
    weights.drop_resident_raw()
    after = resident_mib()
    assert before is not None and after is not None and before - after > 0.5 * weights_mib


def test_a_session_on_a_missing_file_raises_with_onnx_runtimes_message(tmp_path: Path) -> None:
    missing = tmp_path / "model.onnx"
    with pytest.raises(OrtApiError, match=re.escape(str(missing))):
        CSession(
            missing,
            intra_op_threads=1,
            inter_op_threads=1,
            config={},
            initializers=[],
            container=c_api().out("CreatePrepackedWeightsContainer"),
            owner=None,
        )
    with pytest.raises(ModelLoadError, match="cannot read the weights"):
        SharedWeights(missing)


def test_an_artifact_onnx_runtime_cannot_load_raises_model_load_error(
    artifact_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(artifact_dir / ARTIFACT_FILES["fp32"], tmp_path / ARTIFACT_FILES["fp32"])
    weights = SharedWeights(tmp_path / ARTIFACT_FILES["fp32"])
    (tmp_path / ARTIFACT_FILES["fp32"]).write_bytes(b"not a model")  # replaced after its weights were read
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*(?i:protobuf)"):
        OnnxClassifier(tmp_path, SessionOptions(device="cpu", intra_op_threads=1), weights)
