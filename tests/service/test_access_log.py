"""The classify access log on a real server: one line per request, written by a thread off the event
loop (service/observe/logs.py), in BentoML's format; none with VITSERVE_ACCESS_LOG=0. And the thread switch
interval each server chose (service/model/gil.py), which its start-up log line reports."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.support import SAMPLES_DIR, running_server
from vitserve.service.model.gil import switch_interval_us

LINE = re.compile(r"\(scheme=http,method=POST,path=/classify\) \(status=(\d{3})\) [\d.]+ms")
IMAGE = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()


def access_lines(log: Path) -> list[str]:
    return LINE.findall(log.read_text(errors="replace"))


def wait_for_lines(log: Path, count: int, timeout_s: float = 60) -> list[str]:
    """The writer thread's lines, once `count` of them are in the log (polls; the bound only stops a hang)."""
    deadline = time.monotonic() + timeout_s
    while len(lines := access_lines(log)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


def test_each_classify_request_gets_one_line_with_its_status(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    # A switch interval of its own too: the server runs and answers with it.
    with running_server(env={"VITSERVE_GIL_SWITCH_US": "2000"}, log_path=log) as server:
        for _ in range(3):
            assert httpx.post(f"{server.url}/classify", files={"image": ("d.png", IMAGE)}).status_code == 200
        bad = httpx.post(f"{server.url}/classify", content=b"x", headers={"content-type": "text/plain"})
        assert bad.status_code == 415
        lines = wait_for_lines(log, 4)
    assert sorted(lines) == ["200", "200", "200", "415"]
    assert "thread switch interval 2000 µs" in log.read_text(errors="replace")  # the setting, applied


def test_no_line_when_the_access_log_is_off(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with running_server(env={"VITSERVE_ACCESS_LOG": "0"}, log_path=log) as server:
        assert httpx.post(f"{server.url}/classify", files={"image": ("d.png", IMAGE)}).status_code == 200
        assert httpx.get(f"{server.url}/model").status_code == 200
    # Stopped: anything a writer thread held has been written by now. BentoML's own access line for
    # /model shows the log was captured, so the absence of classify lines means something.
    text = log.read_text(errors="replace")
    assert "method=GET,path=/model" in text
    assert access_lines(log) == []
    # No switch interval set: the one the model's measured batch of one calls for (service/model/gil.py).
    chosen = re.search(r"thread switch interval (\d+) µs \(a batch of one: ([\d.]+) ms\)", text)
    assert chosen is not None, "the worker did not report its switch interval"
    assert int(chosen[1]) == switch_interval_us(0, float(chosen[2]))
