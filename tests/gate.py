"""A gated HTTP forwarder in front of a real server, so tests stop a client at a point they choose.

Tests that interrupt a client mid-run (Ctrl-C, kill -9, a server crash) used to wait for a few results
and hope the rest were still to come: on a fast machine the run finished first. Through the gate, only
the requests the test lets pass reach the server; the rest wait in the gate, so the client is provably
mid-run, with exactly the answers the test allowed, for as long as the test needs.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Hop-by-hop headers belong to one connection and are not forwarded (RFC 9110, section 7.6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)


class Gate:
    """Counts requests through; with a budget set, the ones past it wait until the budget grows."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._budget: int | None = None  # None: open
        self.passed = 0
        self.waiting = 0

    def enter(self) -> None:
        with self._cond:
            self.waiting += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._budget is None or self._budget > 0)
            self.waiting -= 1
            if self._budget is not None:
                self._budget -= 1
            self.passed += 1

    def let_through(self, requests: int) -> None:
        """From now on, let `requests` more requests pass, then hold the rest."""
        with self._cond:
            self._budget = requests
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._budget = None
            self._cond.notify_all()

    def wait_until_waiting(self, at_least: int = 1, timeout_s: float = 120) -> None:
        """Block until `at_least` requests are held at the gate."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.waiting >= at_least, timeout=timeout_s):
                raise TimeoutError(f"{self.waiting} requests held after {timeout_s}s, wanted {at_least}")


class GatedProxy:
    """Forwards HTTP/1.1 requests to `upstream`, POSTs (the classify calls) through a Gate and GETs
    (/model, probes) freely. When upstream cannot be reached, the client's connection is dropped
    without an answer, as a crashed server's would be."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.gate = Gate()
        self.dropped = 0  # requests upstream could not answer, whose client connection was dropped
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "POST":
                    proxy.gate.enter()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=300)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                except OSError:
                    with proxy._lock:
                        proxy.dropped += 1
                    self.close_connection = True  # no answer at all: the client sees a dropped connection
                    return
                finally:
                    upstream.close()
                self.send_response_only(reply.status, reply.reason)
                for name, value in reply.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the client went away while it waited

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

        return Forward

    def __enter__(self) -> GatedProxy:
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.open()  # release anything still held so its thread can end
        self._server.shutdown()
        self._server.server_close()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120, poll_s: float = 0.02) -> None:
    """Poll `condition()` until true. The timeout only bounds a broken run; passing never depends on it."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s}s")
        time.sleep(poll_s)
