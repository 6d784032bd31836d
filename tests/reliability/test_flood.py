"""A flood of clients resending at once cannot starve admitted requests: each overload refusal is held
VITSERVE_SHED_DELAY_MS before it goes out, so a connection costs one refusal per delay, however fast it
resends. Asserted by counts and states (every answer a 200 or a held 429, every 429 with Retry-After,
the server's counters equal to what the clients saw), and by a lower bound the delay guarantees."""

from __future__ import annotations

import http.client
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from urllib.parse import urlsplit

from tests.support import SAMPLES_DIR, running_server
from vitserve.harness.metrics import metric

SHED_DELAY_S = 0.5
HAMMERS, REQUESTS_EACH = 24, 5
POLITE_REQUESTS, POLITE_ATTEMPTS = 8, 200
IMAGE = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()


def send(connection: http.client.HTTPConnection) -> tuple[int, str | None, float]:
    """One request on a keep-alive connection: status, Retry-After, seconds until the answer."""
    started = perf_counter()
    connection.request("POST", "/classify", IMAGE, {"Content-Type": "image/png"})
    response = connection.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After"), perf_counter() - started


def test_immediate_resenders_get_held_refusals_and_admitted_requests_complete() -> None:
    env = {"VITSERVE_MAX_IN_FLIGHT": "2", "VITSERVE_SHED_DELAY_MS": str(int(1000 * SHED_DELAY_S))}
    with running_server(env=env) as server:
        port = urlsplit(server.url).port

        def hammer(_: int) -> list[tuple[int, str | None, float]]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                return [
                    send(connection) for _ in range(REQUESTS_EACH)
                ]  # each as soon as the last is answered
            finally:
                connection.close()

        def polite() -> list[tuple[int, str | None, float]]:
            """Retries at once too; stops after POLITE_REQUESTS 200s (or gives up, failing below)."""
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            answers: list[tuple[int, str | None, float]] = []
            while sum(a[0] == 200 for a in answers) < POLITE_REQUESTS and len(answers) < POLITE_ATTEMPTS:
                answers.append(send(connection))
            connection.close()
            return answers

        with ThreadPoolExecutor(HAMMERS + 1) as pool:
            hammered = pool.map(hammer, range(HAMMERS))
            polite_answers = pool.submit(polite)
            answers = [a for connection in hammered for a in connection] + polite_answers.result()
        statuses = Counter(status for status, _, _ in answers)
        served = metric(server.url, 'vitserve_requests_total{code="200",route="/classify"}')
        shed = metric(server.url, 'vitserve_requests_total{code="429",route="/classify"}')

    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0, "2 places for 25 connections: the door must have refused some"
    assert sum(status == 200 for status, _, _ in polite_answers.result()) == POLITE_REQUESTS
    refusals = [(retry_after, seconds) for status, retry_after, seconds in answers if status == 429]
    assert all(retry_after == "1" for retry_after, _ in refusals)
    # Held, not answered at once: the bound that keeps a resending connection off the event loop. The
    # event loop's timers run on a clock it reads once per turn, so one may fire a little early.
    assert min(seconds for _, seconds in refusals) >= 0.9 * SHED_DELAY_S
    assert (served, shed) == (statuses[200], statuses[429])
