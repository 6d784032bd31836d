"""How LocalModel lays the model out on the CPUs: batch runners chosen from a timed batch of one."""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.support import DEFAULT_MODEL_DIR, REPO, SAMPLES_DIR, write_random_vit
from vitserve.models.vit import ViTConfig
from vitserve.runtime.artifact import ARTIFACT_FILES, Preprocessing
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.decode import DecodeLimits, decode_opened, open_image
from vitserve.runtime.predictions import softmax
from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.model.gil import CHEAP_MODEL_MS
from vitserve.service.model.local import LocalModel, runners_for
from vitserve.service.settings import Settings


def alone_and_together(model: LocalModel, pixels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first image's scores alone (the session with every CPU), then every image's beside the others."""

    async def go() -> tuple[np.ndarray, list[np.ndarray]]:
        alone = await model.infer(pixels[:1])  # nothing else running: the session with every CPU
        together = await asyncio.gather(*(model.infer(pixels[i : i + 1]) for i in range(len(pixels))))
        return alone, together

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("probe_ms", "cpus", "per_run", "runners"),
    [
        (CHEAP_MODEL_MS / 2, 2, 1, 1),  # cheap: the loop is the cost, one runner
        (CHEAP_MODEL_MS, 2, 1, 2),  # costly: a single-threaded runner per CPU
        (25.0, 16, 1, 16),
        (25.0, 16, 4, 4),  # VITSERVE_INTRA_OP_THREADS=4: runners of 4 threads
        (25.0, 3, 2, 1),
    ],
)
def test_runners_follow_the_cost_of_a_batch_of_one(
    probe_ms: float, cpus: int, per_run: int, runners: int
) -> None:
    assert runners_for(probe_ms, cpus, per_run) == runners


def test_by_default_the_runners_are_chosen_by_the_rule_from_what_the_probe_measured() -> None:
    cpus = cpu_budget()
    model = LocalModel(Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu"))
    try:
        info = model.info()
    finally:
        model.close()
    artifact = DEFAULT_MODEL_DIR / str(info["artifact"])
    assert info["artifact_mib"] == round(artifact.stat().st_size / 2**20, 1)
    # Resident growth; the heap given back after loading may leave less than before, never None on Linux.
    assert isinstance(info["memory_mib"], float)
    if cpus < 2:
        assert (info["runners_probe_ms"], info["batch_runners"], info["intra_op_threads"]) == (None, 1, 1)
        assert info["alone_intra_op_threads"] is None
        assert info["weights_shared"] is False
        return
    probe_ms = info["runners_probe_ms"]
    assert isinstance(probe_ms, float) and probe_ms > 0
    runners = runners_for(probe_ms, cpus, 1)
    assert info["batch_runners"] == runners
    # A runner per CPU runs single-threaded, beside a session with every CPU for a batch alone; one
    # runner gets every CPU.
    assert info["intra_op_threads"] == (1 if runners > 1 else cpus)
    assert info["alone_intra_op_threads"] == (cpus if runners > 1 else None)
    # Two sessions of a large model read one copy of the weights; the digits model is far too small.
    assert info["weights_shared"] is False


def test_set_runners_are_kept_and_share_the_cpus() -> None:
    cpus = cpu_budget()
    model = LocalModel(Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu", batch_runners=2, max_batch_size=8))
    try:
        info = model.info()
        assert model.batcher.run_size == 4
    finally:
        model.close()
    assert (info["batch_runners"], info["intra_op_threads"], info["runners_probe_ms"]) == (
        2,
        max(1, cpus // 2),
        None,
    )
    assert info["weights_shared"] is False


def test_a_costly_model_gets_a_runner_per_cpu_and_a_session_for_batches_alone_that_answer_alike() -> None:
    cpus = cpu_budget()
    if cpus < 2:
        pytest.skip("one CPU: there is nothing to lay out")
    # Every model counts as costly from 0 ms: the digits model takes the path a ViT-B would.
    settings = Settings(model_dir=DEFAULT_MODEL_DIR, device="cpu", precision="fp32")
    model = LocalModel(settings, costly_ms=0.0)
    try:
        info = model.info()
        assert (info["batch_runners"], info["intra_op_threads"], info["alone_intra_op_threads"]) == (
            cpus,
            1,
            cpus,
        )
        assert info["weights_shared"] is False  # the digits model: a copy costs less than sharing
        assert model.batcher.run_size == -(-settings.max_batch_size // cpus)
        assert info["batch_one_ms"] == info["runners_probe_ms"]  # the probe's session serves: timed once
        pre = model.metadata.preprocessing
        samples = sorted(SAMPLES_DIR.glob("*.png"))[:6]
        pixels = np.stack([decode_opened(open_image(p.read_bytes(), DecodeLimits()), pre) for p in samples])

        alone, together = alone_and_together(model, pixels)
    finally:
        model.close()
    # FP32: the same image scores the same on either session, alone or among others.
    np.testing.assert_allclose(alone[0], together[0][0], rtol=1e-5, atol=1e-6)
    reference = OnnxClassifier(DEFAULT_MODEL_DIR, SessionOptions(precision="fp32", device="cpu"))
    assert [int(np.argmax(t[0])) for t in together] == list(
        np.argmax(reference.predict_batch(pixels), axis=1)
    )


# A ViT whose weights (about 72 MiB in FP32) dwarf everything else a session allocates for 32x32 images:
# a second copy of them cannot hide in the noise of resident memory.
WIDE = ViTConfig(image_size=32, patch_size=8, num_classes=5, dim=512, depth=6, num_heads=8)
WIDE_PREPROCESSING = Preprocessing(image_size=32)

# Run in a fresh interpreter: resident memory before and after loading, nothing else loaded in between.
RESIDENT_GROWTH = """
import json, sys
from pathlib import Path
from vitserve.runtime.batcher import warm_up_sizes
from vitserve.runtime.memory import release_free_heap, resident_mib
from vitserve.runtime.ort_capi import c_api
from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.model.local import LocalModel
from vitserve.service.settings import Settings

model_dir, how = Path(sys.argv[1]), sys.argv[2]
if how == "served":
    c_api()  # the C library: a cost per process (docs/latency.md), whatever the weights
before = resident_mib()
if how == "one session":
    classifier = OnnxClassifier(model_dir, SessionOptions(device="cpu", precision="fp32"))
    classifier.warm_up(warm_up_sizes(32))
    classifier.release_arena()
    release_free_heap()
    runners, shared = 1, False
else:
    model = LocalModel(Settings(model_dir=model_dir, device="cpu", precision="fp32"), costly_ms=0.0)
    runners, shared = model.batcher.runners, model.info()["weights_shared"]
module = "onnxruntime" in sys.modules or "pybind11_state" in Path("/proc/self/maps").read_text()
growth = resident_mib() - before
print(json.dumps({"growth_mib": growth, "runners": runners, "shared": shared, "module": module}))
"""


def resident_growth(model_dir: Path, how: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", RESIDENT_GROWTH, str(model_dir), how],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_vit(WIDE, tmp_path_factory.mktemp("wide-vit"), "wide-vit")


def test_the_two_sessions_of_a_costly_model_hold_one_copy_of_the_weights(wide_model_dir: Path) -> None:
    if cpu_budget() < 2:
        pytest.skip("one CPU: one runner, nothing to share")
    weights_mib = (wide_model_dir / ARTIFACT_FILES["fp32"]).stat().st_size / 2**20
    one = resident_growth(wide_model_dir, "one session")
    served = resident_growth(wide_model_dir, "served")
    assert (served["runners"], served["shared"]) == (cpu_budget(), True)
    # Every session went through the C library: ONNX Runtime's Python module, a second copy, never loaded.
    assert served["module"] is False and one["module"] is True
    # A second copy would add the whole weights again.
    assert served["growth_mib"] < one["growth_mib"] + weights_mib / 2, (served, one, weights_mib)


def test_the_shared_sessions_of_a_large_model_answer_as_one_python_session(wide_model_dir: Path) -> None:
    cpus = cpu_budget()
    if cpus < 2:
        pytest.skip("one CPU: one runner, nothing to share")
    model = LocalModel(Settings(model_dir=wide_model_dir, device="cpu", precision="fp32"), costly_ms=0.0)
    try:
        assert model.info()["weights_shared"] is True
        assert model.alone is not None and model.alone.weights_shared and model.classifier.weights_shared
        pixels = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)

        alone, together = alone_and_together(model, pixels)
    finally:
        model.close()
    reference = softmax(OnnxClassifier(wide_model_dir, SessionOptions(device="cpu")).predict_batch(pixels))
    # Bitwise: either shared session, alone or among others, answers as the Python session does.
    assert np.array_equal(alone[0], reference[0])
    assert all(np.array_equal(t[0], reference[i]) for i, t in enumerate(together))


def test_without_room_for_the_raw_weights_each_session_keeps_its_own_copy_and_serves(
    wide_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if cpu_budget() < 2:
        pytest.skip("one CPU: one runner, nothing to share")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full_disk)
    model = LocalModel(Settings(model_dir=wide_model_dir, device="cpu", precision="fp32"), costly_ms=0.0)
    try:
        assert model.info()["weights_shared"] is False
        assert model.alone is not None and not model.alone.weights_shared
        pixels = np.random.default_rng(1).integers(0, 256, size=(1, 32, 32, 3), dtype=np.uint8)
        answer = asyncio.run(model.infer(pixels))
    finally:
        model.close()
    reference = softmax(OnnxClassifier(wide_model_dir, SessionOptions(device="cpu")).predict_batch(pixels))
    assert np.array_equal(answer[0], reference[0])


def test_share_weights_off_keeps_a_copy_per_session(wide_model_dir: Path) -> None:
    if cpu_budget() < 2:
        pytest.skip("one CPU: one runner, nothing to share")
    settings = Settings(model_dir=wide_model_dir, device="cpu", precision="fp32", share_weights=False)
    model = LocalModel(settings, costly_ms=0.0)
    try:
        assert model.info()["weights_shared"] is False and model.alone is not None
        assert not model.alone.weights_shared and not model.classifier.weights_shared
    finally:
        model.close()
