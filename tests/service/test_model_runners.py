"""How LocalModel lays the model out on the CPUs: batch runners chosen from a timed batch of one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.support import DEFAULT_MODEL_DIR, SAMPLES_DIR
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.decode import DecodeLimits, decode_opened, open_image
from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.model.gil import CHEAP_MODEL_MS
from vitserve.service.model.local import LocalModel, runners_for
from vitserve.service.settings import Settings


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
    # Two sessions read one copy of the weights; one session has nothing to share.
    assert info["weights_shared"] is (runners > 1)


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
        assert info["weights_shared"] is True
        assert model.alone is not None and model.alone.weights_shared and model.classifier.weights_shared
        assert model.batcher.run_size == -(-settings.max_batch_size // cpus)
        assert info["batch_one_ms"] == info["runners_probe_ms"]  # the probe's session serves: timed once
        pre = model.metadata.preprocessing
        samples = sorted(SAMPLES_DIR.glob("*.png"))[:6]
        pixels = np.stack([decode_opened(open_image(p.read_bytes(), DecodeLimits()), pre) for p in samples])

        async def go() -> tuple[np.ndarray, list[np.ndarray]]:
            alone = await model.infer(pixels[:1])  # nothing else running: the session with every CPU
            together = await asyncio.gather(*(model.infer(pixels[i : i + 1]) for i in range(len(pixels))))
            return alone, together

        alone, together = asyncio.run(go())
    finally:
        model.close()
    # FP32: the same image scores the same on either session, alone or among others.
    np.testing.assert_allclose(alone[0], together[0][0], rtol=1e-5, atol=1e-6)
    reference = OnnxClassifier(DEFAULT_MODEL_DIR, SessionOptions(precision="fp32", device="cpu"))
    assert [int(np.argmax(t[0])) for t in together] == list(
        np.argmax(reference.predict_batch(pixels), axis=1)
    )
