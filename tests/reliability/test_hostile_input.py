"""Hostile uploads through a real server: every one gets its 4xx (or 200 for odd-but-real images),
never a 5xx, no worker dies and the server's memory stays bounded."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support import SAMPLES_DIR, ServerProcess, running_server
from vitserve.bench.processes import tree_rss_mib
from vitserve.harness.hostile import Hostile, corpus
from vitserve.harness.metrics import metric
from vitserve.harness.mutations import mutated_image
from vitserve.harness.procs import RssSampler, worker_pids

# The server's whole process tree (supervisor, API worker holding the model) may grow by this much while
# it refuses the corpus: a decoded bomb alone would take gigabytes.
RSS_GROWTH_LIMIT_MIB = 300


def good_digit() -> bytes:
    return sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()


def check(response: httpx.Response, item: Hostile, how: str) -> None:
    assert response.status_code < 500, f"{item.name} ({how}): {response.status_code} {response.text}"
    assert response.status_code in item.statuses, (
        f"{item.name} ({how}): {response.status_code} {response.text}"
    )
    if response.status_code != 200:
        body = response.json()
        assert body["error"] in item.codes, f"{item.name} ({how}): {body}"
        assert len(body["message"]) > 10, f"{item.name} ({how}): message too thin: {body}"


def test_every_corpus_entry_gets_its_status_and_memory_stays_bounded(hardened_server: ServerProcess) -> None:
    assert hardened_server.proc is not None
    root = hardened_server.proc.pid
    workers = {name: worker_pids(root, name) for name in ("vitserve",)}  # the API worker holds the model
    baseline = tree_rss_mib(root)
    items = corpus()
    with (
        RssSampler(root, interval_s=0.05) as rss,
        httpx.Client(base_url=hardened_server.url, timeout=60) as client,
    ):
        for item in items:
            multipart = client.post(
                "/classify", files={"image": (item.filename, item.data, item.content_type)}
            )
            check(multipart, item, "multipart")
            raw = client.post("/classify", content=item.data, headers={"Content-Type": item.content_type})
            check(raw, item, "raw body")
    assert {name: worker_pids(root, name) for name in workers} == workers, "a worker died or was replaced"
    assert rss.peak_mib - baseline < RSS_GROWTH_LIMIT_MIB, (
        f"RSS {baseline:.0f} -> peak {rss.peak_mib:.0f} MiB"
    )
    assert (
        httpx.post(f"{hardened_server.url}/classify", files={"image": ("d.png", good_digit())}).status_code
        == 200
    )


def test_the_whole_corpus_in_one_batch_request_isolates_every_item(hardened_server: ServerProcess) -> None:
    items = [i for i in corpus() if len(i.data) < 2 << 20][:40]
    files = [("images", (i.filename, i.data, i.content_type)) for i in items]
    response = httpx.post(f"{hardened_server.url}/classify_batch", files=files, timeout=60)
    assert response.status_code == 200, response.text
    for item, result in zip(items, response.json()["results"], strict=True):
        if "error" in result and result["error"] is not None:
            assert result["error"] in item.codes, (item.name, result)
        else:
            assert 200 in item.statuses, (item.name, result)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated_image())
def test_fuzzed_uploads_never_get_a_5xx(hardened_server: ServerProcess, data: bytes) -> None:
    response = httpx.post(
        f"{hardened_server.url}/classify", content=data, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.status_code in (200, 400, 413, 415), response.text


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(hardened_server: ServerProcess) -> None:
    def chunks():  # no Content-Length: the limit must hold on the streamed bytes
        for _ in range(22):
            yield bytes(1 << 20)

    response = httpx.post(
        f"{hardened_server.url}/classify", content=chunks(), headers={"Content-Type": "image/png"}, timeout=60
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_a_lying_content_length_is_refused(hardened_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", hardened_server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 99999999999\r\n\r\n"
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply


class Trickler(threading.Thread):
    """Sends a request's headers, then one body byte every `interval_s`, and records the reply."""

    def __init__(self, port: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port, self.interval_s = port, interval_s
        self.reply = b""
        self.elapsed_s = 0.0
        self.trickling = threading.Event()  # headers and a first body byte are out, or an answer came
        self.stop = threading.Event()  # set to hang up before the server answers

    def run(self) -> None:
        body = good_digit()
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.interval_s) as sock:
            sock.sendall(
                b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            for i, byte in enumerate(body):
                if i == 1:
                    self.trickling.set()
                if self.stop.is_set():
                    return
                try:
                    self.reply = sock.recv(4096)
                    self.trickling.set()  # no more to wait for
                    break
                except TimeoutError:
                    pass
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
            sock.settimeout(10)
            if not self.reply:
                self.reply = sock.recv(4096)
            self.elapsed_s = time.monotonic() - started
            while b"}" not in self.reply and (more := sock.recv(4096)):  # the JSON body may follow later
                self.reply += more


def test_slow_bodies_get_408_at_the_body_deadline(hardened_server: ServerProcess) -> None:
    tricklers = [Trickler(hardened_server.port) for _ in range(12)]
    for t in tricklers:
        t.start()
    for t in tricklers:
        t.join(timeout=60)
        assert t.reply.startswith(b"HTTP/1.1 408"), t.reply[:200]
        assert b"request_timeout" in t.reply
        # Refused at the body deadline, not before; the event loop's timer may fire a hair early.
        assert t.elapsed_s >= 0.95 * 3


def test_slow_bodies_do_not_block_other_clients() -> None:
    # A body deadline no test outlasts: the tricklers are still sending when the good request is served,
    # however slow the machine.
    env = {
        "VITSERVE_BODY_TIMEOUT_S": "300",
        "VITSERVE_REQUEST_TIMEOUT_S": "600",
        "VITSERVE_MAX_IN_FLIGHT": "8",
    }
    with running_server(env=env) as server:
        # More tricklers than the 8 admission slots: if they held slots, the good request would be shed.
        tricklers = [Trickler(server.port) for _ in range(12)]
        for t in tricklers:
            t.start()
        try:
            for t in tricklers:
                assert t.trickling.wait(timeout=60), "a trickler could not start sending"
            assert not any(t.reply for t in tricklers), [t.reply[:20] for t in tricklers]
            good = httpx.post(f"{server.url}/classify", files={"image": ("d.png", good_digit())}, timeout=60)
            assert good.status_code == 200, good.text
            assert not any(t.reply for t in tricklers), "a trickler was answered before its body was in"
            assert metric(server.url, "vitserve_in_flight_images") == 0  # they hold no image places
        finally:
            for t in tricklers:
                t.stop.set()
            for t in tricklers:
                t.join(timeout=60)


def test_idle_and_half_sent_connections_do_not_block_other_clients(hardened_server: ServerProcess) -> None:
    assert hardened_server.proc is not None
    before = tree_rss_mib(hardened_server.proc.pid)
    sockets = []
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", hardened_server.port), timeout=5)
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
            sockets.append(sock)
        good = httpx.post(
            f"{hardened_server.url}/classify", files={"image": ("d.png", good_digit())}, timeout=30
        )
        assert good.status_code == 200
        assert tree_rss_mib(hardened_server.proc.pid) - before < 100
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("path", ["/classify", "/classify_batch"])
def test_garbage_http_on_the_api_gets_a_4xx(hardened_server: ServerProcess, path: str) -> None:
    with socket.create_connection(("127.0.0.1", hardened_server.port), timeout=10) as sock:
        sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        reply = sock.recv(4096)
    assert reply[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 422"), reply
