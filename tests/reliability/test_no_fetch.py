"""The service never fetches anything on a client's behalf: URLs are refused, and no connection leaves it.

A listener of our own stands in for an internal host (think 169.254.169.254); every way of smuggling
its URL into a request is tried, and the listener must see no connection at all.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx

from tests.support import SAMPLES_DIR, ServerProcess, free_port
from vitserve.harness.procs import tcp_peers


class Listener(threading.Thread):
    """Accepts and counts connections on a loopback port until closed."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.connections = 0

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_urls_are_refused_and_nothing_is_fetched(hardened_server: ServerProcess) -> None:
    listener = Listener()
    listener.start()
    url = f"http://127.0.0.1:{listener.port}/digit.png"
    digit = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    svg = f'<svg xmlns="http://www.w3.org/2000/svg"><image href="{url}"/></svg>'.encode()
    attempts: dict[str, tuple[str, dict[str, Any], int]] = {
        # name: (path, request kwargs, expected status)
        "url-as-form-field": ("/classify", dict(files={"image": (None, url)}), 400),
        "url-as-batch-field": ("/classify_batch", dict(files=[("images", (None, url))]), 400),
        "url-as-raw-body": (
            "/classify",
            dict(content=url.encode(), headers={"Content-Type": "image/png"}),
            415,
        ),
        "url-as-uploaded-file": ("/classify", dict(files={"image": ("u.png", url.encode())}), 415),
        "url-in-json": ("/classify", dict(json={"image": url, "url": url}), 415),
        "url-in-urlencoded-form": ("/classify", dict(data={"image": url}), 415),
        "url-as-text-plain": (
            "/classify",
            dict(content=url.encode(), headers={"Content-Type": "text/uri-list"}),
            415,
        ),
        "svg-with-external-image": ("/classify", dict(files={"image": ("x.svg", svg, "image/svg+xml")}), 415),
        "url-in-query-beside-image": (
            "/classify",
            dict(params={"url": url}, files={"image": ("d.png", digit)}),
            422,
        ),
    }
    try:
        with httpx.Client(base_url=hardened_server.url, timeout=30) as client:
            for name, (path, kwargs, status) in attempts.items():
                response = client.post(path, **kwargs)
                assert response.status_code == status, (name, response.text)
                if status == 400:
                    assert response.json()["error"] == "url_not_allowed", (name, response.text)
            assert hardened_server.proc is not None
            outbound = [
                (local, remote)
                for local, remote in tcp_peers(hardened_server.proc.pid)
                if local != hardened_server.port
            ]
    finally:
        listener.close()
    assert listener.connections == 0, f"the server connected to {url} {listener.connections} time(s)"
    assert outbound == [], f"the server holds outbound TCP connections: {outbound}"
