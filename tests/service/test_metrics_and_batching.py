"""Concurrent requests really batch, and every metric vitserve declares appears on /metrics and counts."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time

import httpx

from tests.support import SAMPLES_DIR, host_providers, running_server
from vitserve.harness.metrics import metric, scrape, value
from vitserve.harness.procs import worker_pids

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
    answer = httpx.post(f"{vitserve_server}/classify", files={"image": ("p.jpg", photo)})
    assert answer.status_code == 200
    digit = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    batch = httpx.post(f"{vitserve_server}/classify_batch", files=[("images", ("d.png", digit))] * 3)
    assert batch.status_code == 200
    after = scrape(vitserve_server)

    def grew(series: str) -> float:
        return value(after, series) - value(before, series)

    # The front door's own series, the only request rate and latency the classify routes have.
    assert grew(r'vitserve_requests_total\{code="200",route="/classify"\}') == 9
    assert grew(r'vitserve_requests_total\{code="415",route="/classify"\}') == 1
    assert grew(r'vitserve_requests_total\{code="200",route="/classify_batch"\}') == 1
    assert grew(r"vitserve_requests_total\{.*\}") == 11
    assert grew(r'vitserve_request_seconds_count\{route="/classify"\}') == 10
    assert grew(r'vitserve_request_seconds_count\{route="/classify_batch"\}') == 1
    assert grew(r'vitserve_request_seconds_bucket\{le="\+Inf",route="/classify"\}') == 10
    assert grew(r'vitserve_request_seconds_sum\{route="/classify"\}') > 0
    # The burst's digit 8 times and in the batch 3 times, the photo once: each under its own label.
    digit_label = batch.json()["results"][0]["label"]
    photo_label = answer.json()["label"]
    digits = [str(d) for d in range(10)]
    classified = {label: grew(rf'vitserve_images_classified_total\{{label="{label}"\}}') for label in digits}
    expected = dict.fromkeys(digits, 0.0)
    expected[digit_label] += 11
    expected[photo_label] += 1
    assert classified == expected

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

    assert decoded("loop") == 12  # the 11 small PNGs and the bytes that are no image
    assert decoded("pool") == 1  # the photo

    rejected = r'vitserve_requests_rejected_total\{reason="unsupported_media_type"\}'
    assert value(after, rejected) - value(before, rejected) == 1
    assert 'vitserve_requests_rejected_total{reason="overloaded"}' in after  # pre-created at 0
    assert value(after, "vitserve_in_flight_images") == 0  # nothing in flight between requests
    info = [k for k, v in after.items() if k.startswith("vitserve_model_info{") and v == 1]
    assert len(info) == 1 and f'provider="{host_providers()[0]}"' in info[0]
    # BentoML's own request metrics are still there beside ours.
    assert any(k.startswith("bentoml_") for k in after)


def test_in_flight_gauge_counts_admitted_images_until_answered_never_over_the_limit() -> None:
    limit, sent = 3, 12
    # Two API workers put the model in a server of its own: stopping it holds admitted images in
    # flight for as long as the test looks; the long request timeout keeps them from being timed out.
    env = {
        "VITSERVE_API_WORKERS": "2",
        "VITSERVE_MAX_IN_FLIGHT": str(limit),
        "VITSERVE_REQUEST_TIMEOUT_S": "600",
    }
    data = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    with running_server(env=env) as server:
        assert server.proc is not None
        (model_server,) = worker_pids(server.proc.pid, "vitserve-model")
        assert metric(server.url, "vitserve_in_flight_images") == 0
        before = scrape(server.url)
        with concurrent.futures.ThreadPoolExecutor(sent) as pool:
            os.kill(model_server, signal.SIGSTOP)
            # Resumed before the pool's exit waits for the calls, whatever an assertion does.
            try:
                url = f"{server.url}/classify"
                calls = [
                    pool.submit(lambda: httpx.post(url, files={"image": ("d.png", data)}, timeout=600))
                    for _ in range(sent)
                ]
                # Wait for the state where every request is either refused or admitted and held.
                give_up = time.monotonic() + 120
                while True:
                    refused = [c.result().status_code for c in calls if c.done()]
                    in_flight = metric(server.url, "vitserve_in_flight_images")
                    if in_flight + len(refused) == sent or time.monotonic() > give_up:
                        break
                    time.sleep(0.1)
            finally:
                os.kill(model_server, signal.SIGCONT)
            statuses = [c.result().status_code for c in calls]
        assert refused == [429] * len(refused), "an answer came while the model was stopped"
        assert in_flight + len(refused) == sent, f"{in_flight} in flight, {len(refused)} refused"
        # Each of the two workers holds at most its limit; the gauge sums over workers.
        assert 0 < in_flight <= 2 * limit
        after = scrape(server.url)
    assert statuses.count(200) == in_flight and statuses.count(429) == len(refused)
    assert value(after, "vitserve_in_flight_images") == 0  # every admitted image released
    assert value(after, r'vitserve_requests_total\{code="429",route="/classify"\}') - value(
        before, r'vitserve_requests_total\{code="429",route="/classify"\}'
    ) == len(refused)
