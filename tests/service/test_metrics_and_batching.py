"""Concurrent requests really batch, and every metric vitserve declares appears on /metrics and counts."""

from __future__ import annotations

import concurrent.futures
import re

import httpx

from tests.metrics import scrape, value
from tests.support import SAMPLES_DIR, host_providers

# Each histogram with the labels its series carry (a regular expression).
HISTOGRAMS = {
    "vitserve_decode_seconds": r'where="(loop|pool)"',
    "vitserve_queue_wait_seconds": "",
    "vitserve_inference_seconds": "",
    "vitserve_batch_size": "",
}


def burst(url: str, n: int, concurrency: int) -> list[int]:
    data = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()

    def send(_: int) -> int:
        return httpx.post(f"{url}/classify", files={"image": ("d.png", data)}, timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(send, range(n)))


def test_concurrent_requests_are_inferred_together(vitserve_server: str) -> None:
    before = scrape(vitserve_server)
    assert burst(vitserve_server, 96, 24) == [200] * 96
    after = scrape(vitserve_server)
    images = value(after, "vitserve_batch_size_sum") - value(before, "vitserve_batch_size_sum")
    batches = value(after, "vitserve_batch_size_count") - value(before, "vitserve_batch_size_count")
    singles = value(after, r'vitserve_batch_size_bucket\{le="1.0"\}') - value(
        before, r'vitserve_batch_size_bucket\{le="1.0"\}'
    )
    assert images == 96
    assert batches < 96, "every image ran alone: adaptive batching never formed a batch"
    assert batches - singles >= 1, "no batch larger than one image was recorded"


def test_every_declared_metric_appears_and_counts(vitserve_server: str) -> None:
    before = scrape(vitserve_server)
    assert burst(vitserve_server, 8, 4) == [200] * 8
    bad = httpx.post(f"{vitserve_server}/classify", files={"image": ("x.png", b"not an image")})
    assert bad.status_code == 415
    # 280x280: more pixels than the event loop decodes itself, so it goes to the decoding pool.
    photo = next(SAMPLES_DIR.glob("*.jpg")).read_bytes()
    assert httpx.post(f"{vitserve_server}/classify", files={"image": ("p.jpg", photo)}).status_code == 200
    after = scrape(vitserve_server)

    for name, labels in HISTOGRAMS.items():
        series = f"{name}_count" + (rf"\{{{labels}\}}" if labels else "")
        assert any(re.fullmatch(series, k) for k in after), f"{series} missing from /metrics"
        assert value(after, series) > value(before, series), f"{name} did not count"
        # The exposition may write `le` before or after the other labels (multiprocess mode sorts them).
        every = (
            rf'{name}_bucket\{{({labels},)?le="\+Inf"(,{labels})?\}}'
            if labels
            else rf'{name}_bucket\{{le="\+Inf"\}}'
        )
        assert value(after, every) == value(after, series)

    def decoded(where: str) -> float:
        series = rf'vitserve_decode_seconds_count\{{where="{where}"\}}'
        return value(after, series) - value(before, series)

    assert decoded("loop") == 9  # the 8 small PNGs and the bytes that are no image
    assert decoded("pool") == 1  # the photo

    classified = r'vitserve_images_classified_total\{label="\d"\}'
    assert value(after, classified) - value(before, classified) >= 8
    rejected = r'vitserve_requests_rejected_total\{reason="unsupported_media_type"\}'
    assert value(after, rejected) - value(before, rejected) == 1
    assert 'vitserve_requests_rejected_total{reason="overloaded"}' in after  # pre-created at 0
    assert value(after, "vitserve_in_flight_images") == 0  # nothing in flight between requests
    info = [k for k, v in after.items() if k.startswith("vitserve_model_info{") and v == 1]
    assert len(info) == 1 and f'provider="{host_providers()[0]}"' in info[0]
    # BentoML's own request metrics are still there beside ours.
    assert any(k.startswith("bentoml_") for k in after)
