"""Scoring folders against the real server: outputs, resuming after Ctrl-C / kill -9, a server
restart mid-run, and overload answered with 429 + Retry-After."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import digit_image
from tests.gate import GatedProxy, wait_for
from tests.support import SAMPLES_DIR, ServerProcess
from vitserve.client import Client, Progress, ResultsFileError
from vitserve.client.progress import ProgressBar, format_progress


def make_images(root: Path, count: int, layout: Callable[[int], str] | None = None) -> list[str]:
    """`count` digit images in PNG, JPEG and WebP spread over nested folders; their relative paths."""
    encoded = {(d, fmt): digit_image(d, fmt) for d in range(10) for fmt in ("PNG", "JPEG", "WEBP")}
    paths = []
    for i in range(count):
        fmt = ("PNG", "JPEG", "WEBP")[i % 3]
        relative = (layout or (lambda i: f"d{i % 4}/e{i % 3}/{i:05d}"))(i) + "." + fmt.lower()
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded[(i % 10, fmt)])
        paths.append(relative)
    return paths


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file, parsed with nothing but the standard library."""
    if path.suffix == ".csv":
        with path.open(newline="") as file:
            return list(csv.DictReader(file))
    return [json.loads(line) for line in path.read_text().splitlines()]


def score_command(url: str, root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vitserve", "score", str(root), "--url", url, "--out", str(out), *extra]


def wait_for_rows(out: Path, at_least: int, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= at_least:
            return
        assert process.poll() is None, f"finished before {at_least} rows: {process.communicate()}"
        time.sleep(0.02)
    raise TimeoutError(f"fewer than {at_least} rows after {timeout_s}s")


def assert_exactly_once(out: Path, expected: list[str]) -> list[dict[str, Any]]:
    rows = read_rows(out)
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a file was scored twice"
    assert sorted(paths) == sorted(expected)
    return rows


def test_a_tree_with_junk_gives_one_row_per_image_in_jsonl_and_csv(
    vitserve_server: str, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    images = make_images(root, 30)
    (root / "d0" / "corrupt.png").write_bytes(digit_image(3, "PNG")[:60])  # truncated
    (root / "d1" / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    (root / "d2" / "README").write_text("no extension")
    (root / ".cache").mkdir()
    (root / ".cache" / "hidden.png").write_bytes(digit_image(1))
    bad = ["d0/corrupt.png", "d1/empty.jpg"]

    out = tmp_path / "results.jsonl"
    result = subprocess.run(
        score_command(vitserve_server, root, out, "--top-k", "3"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr  # some files failed
    assert "scored 30, failed 2, skipped 0" in result.stderr
    assert "\r" not in result.stderr  # not a terminal: no progress bar
    rows = assert_exactly_once(out, images + bad)
    for row in rows:
        if row["path"] in bad:
            assert row["error"] in ("invalid_image", "unsupported_media_type") and row["message"]
            assert row["label"] is None
        else:
            assert row["error"] is None and len(row["top_k"]) == 3
            assert row["label"] == row["top_k"][0]["label"] and 0 < row["score"] <= 1
            assert row["model"]

    # The same through the SDK, into CSV, with a progress callback.
    seen: list[Progress] = []
    csv_out = tmp_path / "results.csv"
    with Client(vitserve_server) as client:
        summary = client.score_folder(
            root, csv_out, top_k=2, concurrency=3, batch_size=4, progress=seen.append
        )
    assert (summary.scored, summary.failed, summary.skipped, summary.ok) == (30, 2, 0, False)
    assert summary.images_per_s > 0 and seen[-1].done == 32 and seen[-1].total == 32
    table = assert_exactly_once(csv_out, images + bad)
    good = next(r for r in table if r["path"] == images[0])
    assert len(json.loads(good["top_k"])) == 2 and float(good["score"]) > 0
    assert {r["label"] for r in table if r["path"] in bad} == {""}

    # Rerunning skips everything, writes nothing and still reports the failures.
    before = out.read_bytes()
    again = subprocess.run(
        score_command(vitserve_server, root, out), capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 1 and "scored 0, failed 0, skipped 32" in again.stderr
    assert "2 of the skipped rows are errors" in again.stderr
    assert out.read_bytes() == before


def test_cli_refuses_what_it_cannot_resume(vitserve_server: str, tmp_path: Path) -> None:
    make_images(tmp_path / "in", 2)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(
        json.dumps({"path": "x.png", "label": "1", "score": 1.0, "top_k": [], "model": "other:9"}) + "\n"
    )
    result = subprocess.run(
        score_command(vitserve_server, tmp_path / "in", foreign), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "other:9" in result.stderr
    with Client(vitserve_server) as client, pytest.raises(ResultsFileError, match="mixing models"):
        client.score_folder(tmp_path / "in", foreign)
    for out, missing in [(tmp_path / "r.json", tmp_path / "in"), (tmp_path / "r.jsonl", tmp_path / "nope")]:
        result = subprocess.run(
            score_command(vitserve_server, missing, out), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2 and "error:" in result.stderr


def test_interrupted_and_killed_runs_resume_to_every_file_exactly_once(
    vitserve_server: str, tmp_path: Path
) -> None:
    root, out = tmp_path / "many", tmp_path / "results.jsonl"
    images = make_images(root, 240)
    one_at_a_time = ("--concurrency", "1", "--batch-size", "1")

    # A proxy per run: a request still held for an interrupted run must not use up the next run's passes.
    with GatedProxy(vitserve_server) as proxy:
        # 20 answers, then the 21st request waits in the gate: the run is mid-way when Ctrl-C lands.
        proxy.gate.let_through(20)
        first = subprocess.Popen(score_command(proxy.url, root, out, *one_at_a_time), stderr=subprocess.PIPE)
        proxy.gate.wait_until_waiting()
        wait_for_rows(out, 20, first)
        first.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130 and b"rerun the same command to resume" in stderr
    assert len(read_rows(out)) == 20  # whole rows only, each answer kept: Ctrl-C never leaves a torn line

    with GatedProxy(vitserve_server) as proxy:
        proxy.gate.let_through(20)
        second = subprocess.Popen(
            score_command(proxy.url, root, out, *one_at_a_time), stderr=subprocess.DEVNULL
        )
        proxy.gate.wait_until_waiting()
        wait_for_rows(out, 40, second)
        second.kill()  # kill -9: no cleanup at all
        second.wait(timeout=30)
    assert len(read_rows(out)) == 40
    with out.open("ab") as file:  # and what a kill during a write() could leave behind
        file.write(b'{"path": "d0/e0/00000.png", "lab')

    third = subprocess.run(
        score_command(vitserve_server, root, out), capture_output=True, text=True, timeout=120
    )
    assert third.returncode == 0, third.stderr
    rows = assert_exactly_once(out, images)
    assert all(row["error"] is None for row in rows)
    counts = re.search(r"scored (\d+), failed 0, skipped (\d+)", third.stderr)
    assert counts is not None, third.stderr
    assert (int(counts[1]), int(counts[2])) == (len(images) - 40, 40)


@pytest.fixture(scope="module")
def own_server() -> Iterator[ServerProcess]:
    """A server of our own (to restart), admitting only 4 images at a time (to be overloaded)."""
    server = ServerProcess(env={"VITSERVE_MAX_IN_FLIGHT": "4", "VITSERVE_RETRY_AFTER_S": "1"})
    try:
        yield server.start()
    finally:
        server.stop()


def test_overload_is_waited_out_until_every_file_is_scored(own_server: ServerProcess, tmp_path: Path) -> None:
    root, out = tmp_path / "burst", tmp_path / "results.jsonl"
    images = make_images(root, 24)
    command = score_command(
        own_server.url, root, out, "--concurrency", "6", "--batch-size", "4", "--retries", "60"
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(row["error"] is None for row in assert_exactly_once(out, images))
    assert "status=429" in own_server.log(), "6 requests of 4 images never exceeded 4 images in flight"


def test_a_server_restart_mid_run_is_ridden_out(own_server: ServerProcess, tmp_path: Path) -> None:
    root, out = tmp_path / "restart", tmp_path / "results.csv"
    images = make_images(root, 400)
    with GatedProxy(own_server.url) as proxy:
        command = score_command(
            proxy.url, root, out, "--concurrency", "2", "--batch-size", "2", "--retries", "40"
        )
        proxy.gate.let_through(15)  # 30 images answered, then the run waits in the gate
        run = subprocess.Popen(command, stderr=subprocess.PIPE)
        try:
            proxy.gate.wait_until_waiting()
            wait_for_rows(out, 30, run)
            own_server.stop(signal.SIGKILL)  # a crash, not a graceful shutdown
            proxy.gate.open()  # what was held now meets the dead server, and is retried until it is back
            wait_for(lambda: proxy.dropped > 0, "a held request meeting the dead server")
            own_server.start()
            proxy.upstream_port = own_server.port  # start() moves to another port if its own was taken
            _, stderr = run.communicate(timeout=180)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, stderr.decode()
    assert all(row["error"] == "" for row in assert_exactly_once(out, images))


def test_progress_line_and_bar() -> None:
    progress = Progress(total=200, skipped=50, scored=40, failed=10, elapsed_s=10.0)
    assert (progress.done, progress.rate, progress.eta_s) == (100, 5.0, 20.0)
    line = format_progress(progress)
    assert line.startswith("100/200 50.0%") and "5.0 img/s" in line and "ETA 20.0s" in line
    assert "errors 10" in line
    assert format_progress(Progress(None, 0, 0, 0, 0.0)).startswith("0/?")
    stream = io.StringIO()  # not a terminal: rich draws no animation, only the last state on close
    bar = ProgressBar(stream)
    bar(Progress(total=200, skipped=0, scored=10, failed=0, elapsed_s=1.0))
    bar(progress)
    bar.close()
    drawn = stream.getvalue()
    assert "100/200" in drawn and "5.0 img/s" in drawn and "ETA 20.0s" in drawn and "errors 10" in drawn
    assert drawn.endswith("\n") and "\r" not in drawn


def test_progress_bar_is_drawn_on_a_terminal(vitserve_server: str, tmp_path: Path) -> None:
    images = make_images(tmp_path / "tty", 6)
    out = tmp_path / "r.jsonl"
    leader, follower = os.openpty()
    try:
        result = subprocess.run(
            score_command(vitserve_server, tmp_path / "tty", out),
            stderr=follower,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0
    assert b"\r" in drawn and b"6/6" in drawn and b"img/s" in drawn and b"scored 6" in drawn
    assert len(read_rows(out)) == len(images)


def test_every_row_belongs_to_its_file(vitserve_server: str, tmp_path: Path) -> None:
    """Batching, concurrency and group commits must never hand one file's answer to another."""
    samples = sorted(p for p in SAMPLES_DIR.glob("*") if p.suffix in (".png", ".jpg", ".webp", ".bmp"))
    shipped = bool(samples)
    if not shipped:  # the shipped samples are not there yet: digits drawn with Pillow
        samples = []
        for digit in range(10):
            path = tmp_path / f"{digit}.png"
            path.write_bytes(digit_image(digit))
            samples.append(path)
    with Client(vitserve_server) as client:
        expected_label = {p.name: client.classify(p).label for p in samples}
    if shipped:  # the trained model tells the shipped digits apart, so a mix-up would show
        assert len(set(expected_label.values())) >= 5
    root, out = tmp_path / "copies", tmp_path / "results.jsonl"
    for copy in range(6):  # the same files in several folders, in different chunks and requests
        folder = root / f"c{copy}" / ("deep" if copy % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        for sample in samples:
            (folder / sample.name).write_bytes(sample.read_bytes())
    with Client(vitserve_server) as client:
        summary = client.score_folder(root, out, concurrency=4, batch_size=3)
    rows = read_rows(out)
    assert summary.scored == len(rows) == 6 * len(samples)
    for row in rows:
        assert row["label"] == expected_label[Path(row["path"]).name], row["path"]
