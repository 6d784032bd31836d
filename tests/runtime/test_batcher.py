"""Greedy batching: alone when idle, everything queued in the next batch, answers to the right callers.

Most tests drive the batcher with a model function they can hold (a threading.Event), so that what
queues while a batch runs is decided by the test, never by the machine's speed. The last one runs the
shipped model's real ONNX Runtime session.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from vitserve.runtime.batcher import Batcher, BatcherClosed, DeadlineExceeded, warm_up_sizes
from vitserve.runtime.session import OnnxClassifier, SessionOptions

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "digits-vit"
SHAPE = (2, 2, 3)


def images(*ids: int) -> np.ndarray:
    """Tiny images whose first pixel carries an id, so a result can be traced back to its image."""
    pixels = np.zeros((len(ids), *SHAPE), dtype=np.uint8)
    pixels[:, 0, 0, 0] = ids
    return pixels


class HeldModel:
    """A model function that records each batch's ids and, while `hold` is clear, blocks in its thread."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []
        self.fail_next = False

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.hold.wait(timeout=30)
        ids = [int(i) for i in pixels[:, 0, 0, 0]]
        self.batches.append(ids)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the model failed")
        return np.asarray(ids, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)


class Sizes:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.waits: list[float] = []

    def batch_done(self, size: int, run_s: float, queue_waits_s: Sequence[float]) -> None:
        assert run_s >= 0
        self.sizes.append(size)
        self.waits.extend(queue_waits_s)


async def until_running(model: HeldModel) -> None:
    """Wait, without a fixed sleep, until the model's thread has started a batch."""
    while not model.entered.is_set():
        await asyncio.sleep(0.001)


def ids_of(logits: np.ndarray) -> list[int]:
    return [int(v) for v in logits[:, 0]]


def test_an_idle_batcher_runs_a_request_at_once_and_alone() -> None:
    model, observed = HeldModel(), Sizes()
    batcher = Batcher(model, max_batch_size=8, deadline_s=10, observer=observed)

    async def go() -> list[int]:
        return ids_of(await batcher.infer(images(7)))

    assert asyncio.run(go()) == [7]
    assert model.batches == [[7]]
    assert observed.sizes == [1] and len(observed.waits) == 1


def test_what_queues_during_a_batch_rides_in_the_next_one() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=8, deadline_s=10)

    async def go() -> list[list[int]]:
        model.hold.clear()
        first = asyncio.create_task(batcher.infer(images(1)))
        await until_running(model)  # batch [1] is in the model; the next five queue behind it
        rest = [asyncio.create_task(batcher.infer(images(i))) for i in range(2, 7)]
        await asyncio.sleep(0)
        model.hold.set()
        return [ids_of(r) for r in await asyncio.gather(first, *rest)]

    assert asyncio.run(go()) == [[1], [2], [3], [4], [5], [6]]
    assert model.batches == [[1], [2, 3, 4, 5, 6]]


def test_the_next_batch_stops_at_max_batch_size() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=3, deadline_s=10)

    async def go() -> None:
        model.hold.clear()
        first = asyncio.create_task(batcher.infer(images(0)))
        await until_running(model)
        rest = [asyncio.create_task(batcher.infer(images(i))) for i in range(1, 8)]
        await asyncio.sleep(0)
        model.hold.set()
        await asyncio.gather(first, *rest)

    asyncio.run(go())
    assert model.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_a_request_larger_than_a_batch_is_split_and_answered_in_order() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=4, deadline_s=10)
    ids = list(range(10, 20))
    assert ids_of(asyncio.run(batcher.infer(images(*ids)))) == ids
    assert all(len(b) <= 4 for b in model.batches)


def test_requests_arriving_together_share_a_batch_even_without_a_wait() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=8, deadline_s=10)

    async def go() -> list[list[int]]:
        results = await asyncio.gather(*(batcher.infer(images(i)) for i in range(4)))
        return [ids_of(r) for r in results]

    assert asyncio.run(go()) == [[0], [1], [2], [3]]
    assert model.batches == [[0, 1, 2, 3]]


def test_the_optional_window_holds_a_lone_image_for_company() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=8, deadline_s=10, max_wait_s=5.0)

    async def go() -> None:
        first = asyncio.create_task(batcher.infer(images(1)))
        await asyncio.sleep(0.01)  # the window is open: the first image waits
        assert model.batches == []
        # Filling the batch closes the window at once, long before its 5 s are up.
        await asyncio.gather(first, *(batcher.infer(images(i)) for i in range(2, 9)))

    asyncio.run(go())
    assert model.batches == [[1, 2, 3, 4, 5, 6, 7, 8]]


def test_a_model_failure_fails_its_batch_only() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=8, deadline_s=10)

    async def go() -> None:
        model.fail_next = True
        with pytest.raises(RuntimeError, match="the model failed"):
            await batcher.infer(images(1))
        assert ids_of(await batcher.infer(images(2))) == [2]

    asyncio.run(go())


def test_images_queued_past_the_deadline_are_dropped_unrun() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=8, deadline_s=0.05)

    async def go() -> None:
        model.hold.clear()
        first = asyncio.create_task(batcher.infer(images(1)))
        await until_running(model)
        late = asyncio.create_task(batcher.infer(images(2)))
        await asyncio.sleep(0.1)  # the queued image is now older than the deadline
        model.hold.set()
        assert ids_of(await first) == [1]
        with pytest.raises(DeadlineExceeded):
            await late

    asyncio.run(go())
    assert model.batches == [[1]]


def test_a_cancelled_caller_costs_the_model_nothing() -> None:
    model = HeldModel()
    batcher = Batcher(model, max_batch_size=8, deadline_s=10)

    async def go() -> None:
        model.hold.clear()
        first = asyncio.create_task(batcher.infer(images(1)))
        await until_running(model)
        gone = asyncio.create_task(batcher.infer(images(2)))
        kept = asyncio.create_task(batcher.infer(images(3)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        model.hold.set()
        await asyncio.gather(first, kept)

    asyncio.run(go())
    assert model.batches == [[1], [3]]


def test_a_closed_batcher_refuses_new_work() -> None:
    batcher = Batcher(HeldModel(), max_batch_size=8, deadline_s=10)
    batcher.close()
    with pytest.raises(BatcherClosed):
        asyncio.run(batcher.infer(images(1)))


def test_warm_up_sizes_double_up_to_the_largest_batch() -> None:
    assert warm_up_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert warm_up_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert warm_up_sizes(1) == [1]


def test_concurrent_callers_get_what_the_real_session_gives_each_image_alone() -> None:
    # FP32: its results do not depend on batch-mates (INT8's activation scales do, slightly).
    classifier = OnnxClassifier(MODEL_DIR, SessionOptions(precision="fp32", device="cpu", intra_op_threads=1))
    batcher = Batcher(classifier.predict_batch, max_batch_size=4, deadline_s=10)
    pixels = np.random.default_rng(0).integers(0, 256, (10, *classifier.input_shape), dtype=np.uint8)
    alone = [classifier.predict_batch(p[None])[0] for p in pixels]

    async def go() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.infer(p[None]) for p in pixels))

    for got, expected in zip(asyncio.run(go()), alone, strict=True):
        np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-5)
    batcher.close()


class GatedModel:
    """A model function whose n-th call records its ids on entry, then blocks until gate n opens."""

    def __init__(self, calls: int) -> None:
        self.gates = [threading.Event() for _ in range(calls)]
        self.batches: list[list[int]] = []
        self._lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            gate = self.gates[len(self.batches)]
            self.batches.append([int(i) for i in pixels[:, 0, 0, 0]])
        gate.wait(timeout=30)
        return pixels[:, 0, 0, :1].astype(np.float32) * np.ones((1, 3), dtype=np.float32)


async def until_entered(model: GatedModel, calls: int) -> None:
    while len(model.batches) < calls:
        await asyncio.sleep(0.001)


def test_with_two_runners_a_second_batch_runs_beside_the_first_and_the_rest_queue() -> None:
    model = GatedModel(calls=3)
    batcher = Batcher(model, max_batch_size=8, deadline_s=10, runners=2)

    async def go() -> list[list[int]]:
        first = asyncio.ensure_future(batcher.infer(images(1)))
        await until_entered(model, 1)
        second = asyncio.ensure_future(batcher.infer(images(2)))
        # With one runner this would wait for the first batch, whose gate stays shut: two run at once.
        await asyncio.wait_for(until_entered(model, 2), timeout=30)
        rest = [asyncio.ensure_future(batcher.infer(images(i))) for i in (3, 4)]
        await asyncio.sleep(0)  # both runners busy: 3 and 4 queue
        model.gates[1].set()  # the second batch ends first; its runner takes everything queued
        assert ids_of(await second) == [2]
        model.gates[2].set()
        answers = [ids_of(await r) for r in rest]
        model.gates[0].set()
        assert ids_of(await first) == [1]
        return answers

    assert asyncio.run(go()) == [[3], [4]]
    assert model.batches == [[1], [2], [3, 4]]
    batcher.close()


def test_runners_share_a_round_of_images_each_taking_at_most_its_part_of_the_batch_size() -> None:
    model = GatedModel(calls=5)
    batcher = Batcher(model, max_batch_size=4, deadline_s=10, runners=2)
    assert batcher.run_size == 2

    async def go() -> list[list[int]]:
        first = asyncio.ensure_future(batcher.infer(images(1)))
        await until_entered(model, 1)
        second = asyncio.ensure_future(batcher.infer(images(2)))
        await asyncio.wait_for(until_entered(model, 2), timeout=30)
        # Queued while both run: a request of three images (split into parts of two) and two of one.
        rest = [asyncio.ensure_future(batcher.infer(images(*ids))) for ids in ((3, 4, 5), (6,), (7,))]
        await asyncio.sleep(0)
        for gate in model.gates[1:]:  # the first runner stays busy: the second takes it all, 2 at a time
            gate.set()
        answers = [ids_of(await r) for r in rest]
        model.gates[0].set()
        await first, await second
        return answers

    assert asyncio.run(go()) == [[3, 4, 5], [6], [7]]
    assert model.batches == [[1], [2], [3, 4], [5, 6], [7]]
    batcher.close()


def test_a_batch_that_runs_alone_goes_to_run_alone_and_one_beside_another_to_run() -> None:
    wide, narrow = GatedModel(calls=2), GatedModel(calls=1)
    batcher = Batcher(narrow, max_batch_size=8, deadline_s=10, runners=2, run_alone=wide)

    async def go() -> None:
        first = asyncio.ensure_future(batcher.infer(images(1)))  # nothing else anywhere: alone
        await until_entered(wide, 1)
        second = asyncio.ensure_future(batcher.infer(images(2)))  # beside the first: a runner's batch
        await asyncio.wait_for(until_entered(narrow, 1), timeout=30)
        narrow.gates[0].set()
        assert ids_of(await second) == [2]
        wide.gates[0].set()
        assert ids_of(await first) == [1]
        wide.gates[1].set()
        assert ids_of(await batcher.infer(images(3))) == [3]  # alone again

    asyncio.run(go())
    assert (wide.batches, narrow.batches) == ([[1], [3]], [[2]])
    batcher.close()


def test_runners_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="runners must be >= 1"):
        Batcher(HeldModel(), max_batch_size=8, deadline_s=10, runners=0)
