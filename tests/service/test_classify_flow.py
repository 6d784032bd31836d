"""The classify flow without BentoML or HTTP: real images, the real session behind the real batcher."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import SETTINGS, flow_with
from tests.support import SAMPLES_DIR
from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.runtime.predictions import softmax, top_k_predictions
from vitserve.service.flow.classify import INLINE_MAX_BYTES, ItemResult
from vitserve.service.flow.errors import ApiError
from vitserve.service.model.local import LocalModel
from vitserve.service.observe.metrics import ServiceMetrics


def samples() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLES_DIR.glob("*.png"))[:3]]


def test_a_request_gets_one_result_per_image_in_order_bad_ones_isolated(
    model: LocalModel, metrics: ServiceMetrics
) -> None:
    flow, gauge = flow_with(model, metrics)
    good = samples()
    images = (good[0], b"not an image", good[1], good[2])
    results = asyncio.run(flow.classify(images, top_k=3))
    assert [r.error.code if r.error else None for r in results] == [
        None,
        "unsupported_media_type",
        None,
        None,
    ]
    for result, data in zip([results[0], *results[2:]], good, strict=True):
        pixels = decode_image(data, model.metadata.preprocessing, DecodeLimits())
        (expected,) = top_k_predictions(
            model.classifier.predict_batch(pixels[None]), model.metadata.labels, 3
        )
        assert result.prediction is not None
        assert result.prediction.label == expected.label
        assert result.prediction.score == pytest.approx(expected.score, abs=1e-6)
        assert len(result.prediction.top_k) == 3
    assert gauge.value == 0  # every image admitted was released


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(
    model: LocalModel, metrics: ServiceMetrics
) -> None:
    flow, _ = flow_with(model, metrics)
    data = samples()
    before = next(iter(metrics.batch_size.collect())).samples

    async def go() -> list[str]:
        results = await asyncio.gather(*(flow.classify((data[i % 3],), top_k=1) for i in range(24)))
        return [r[0].prediction.label for r in results]  # type: ignore[union-attr]

    labels = asyncio.run(go())
    alone = [asyncio.run(flow.classify((d,), top_k=1))[0].prediction.label for d in data]  # type: ignore[union-attr]
    assert labels == [alone[i % 3] for i in range(24)]
    after = next(iter(metrics.batch_size.collect())).samples
    count = {s.name: s.value for s in after}["vitserve_batch_size_count"] - {s.name: s.value for s in before}[
        "vitserve_batch_size_count"
    ]
    assert count < 24 + 3, "24 concurrent requests never shared a batch"


def test_a_full_worker_refuses_with_retry_after_and_admits_nothing(
    model: LocalModel, metrics: ServiceMetrics
) -> None:
    flow, gauge = flow_with(model, metrics, limit=2)
    assert flow.refusal(requests_in_progress=0) is None
    assert flow.refusal(requests_in_progress=2) is not None  # two requests in progress: no room
    assert flow.admission.try_acquire(2)
    assert gauge.value == 2
    rejected_before = rejected_overloaded(metrics)
    refused = flow.refusal(requests_in_progress=0)
    assert refused is not None and refused.status == 429 and refused.headers == {"Retry-After": "3"}
    body = json.loads(refused.content())
    assert body["error"] == "overloaded" and "limit of 2 images in flight" in body["message"]
    assert flow.refusal(requests_in_progress=0) == refused  # rendered once, the same answer each time
    assert rejected_overloaded(metrics) == rejected_before + 2  # but every refusal counted
    with pytest.raises(ApiError) as raised:
        asyncio.run(flow.classify((samples()[0],), top_k=1))
    assert raised.value.code == "overloaded"
    flow.admission.release(2)
    assert gauge.value == 0


def rejected_overloaded(metrics: ServiceMetrics) -> float:
    return sum(
        sample.value
        for family in metrics.requests_rejected.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("reason") == "overloaded"
    )


def test_one_request_larger_than_the_limit_is_still_served_alone(
    model: LocalModel, metrics: ServiceMetrics
) -> None:
    flow, gauge = flow_with(model, metrics, limit=2)
    results = asyncio.run(flow.classify(tuple(samples()), top_k=1))
    assert all(r.prediction is not None for r in results)
    assert gauge.peak == 3 and gauge.value == 0


def test_the_gauge_counts_admitted_images_and_never_passes_the_limit(
    model: LocalModel, metrics: ServiceMetrics
) -> None:
    flow, gauge = flow_with(model, metrics, limit=4)
    data = samples()

    async def flood() -> list[list[ItemResult] | BaseException]:
        calls = (flow.classify((data[i % 3],), top_k=1) for i in range(12))
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(flood())
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert all(isinstance(o, list) for o in outcomes if o not in refused)
    assert refused and all(e.code == "overloaded" for e in refused)
    # 12 requests started at once, room for 4: the gauge rose, to the limit at most, and came back.
    assert 0 < gauge.peak <= 4
    assert gauge.value == 0


def test_the_runtime_facts_come_from_the_session(model: LocalModel) -> None:
    info = model.info()
    assert info["providers"] == list(model.classifier.providers)
    assert info["artifact"] == "model.onnx" and info["precision"] == "fp32"
    assert info["max_batch_size"] == SETTINGS.max_batch_size


def test_pixels_of_every_image_reach_the_model_unchanged(model: LocalModel) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (5, *model.classifier.input_shape), dtype=np.uint8)
    got = asyncio.run(model.infer(pixels))  # probabilities: softmax runs in the model's thread
    np.testing.assert_allclose(got, softmax(model.classifier.predict_batch(pixels)), rtol=1e-5, atol=1e-7)


def test_images_decoded_on_the_loop_and_in_the_pool_give_what_decode_image_gives(
    model: LocalModel, metrics: ServiceMetrics
) -> None:
    flow, _ = flow_with(model, metrics)
    small = samples()[0]  # 28x28: decoded on the loop
    # Few bytes but 280x280 pixels: the header is read on the loop, the rest decoded in the pool.
    photo = next(SAMPLES_DIR.glob("*.jpg")).read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, format="PNG")  # over 64 KiB: all of it in the pool
    assert len(big.getvalue()) > INLINE_MAX_BYTES
    # Each path's failure: a header and no pixels, small (on the loop) and large (in the pool).
    images = (small, small[:60], photo, big.getvalue(), big.getvalue()[: INLINE_MAX_BYTES + 100])
    results = asyncio.run(flow.classify(images, top_k=2))
    codes = [r.error.code if r.error else None for r in results]
    assert codes == [None, "invalid_image", None, None, "invalid_image"]
    for result, data in zip(results[:1] + results[2:4], (small, photo, big.getvalue()), strict=True):
        pixels = decode_image(data, model.metadata.preprocessing, DecodeLimits())
        logits = model.classifier.predict_batch(pixels[None])
        (expected,) = top_k_predictions(logits, model.metadata.labels, 2)
        assert result.prediction is not None
        assert result.prediction.label == expected.label
        assert result.prediction.score == pytest.approx(expected.score, abs=1e-6)
