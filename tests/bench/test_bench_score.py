"""bench/score.py's profile summary: py-spy's collapsed stacks charged to the right component."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitserve.bench.score import components


def test_samples_are_charged_to_the_most_specific_component(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    loop = "run (asyncio/runners.py:1);_run_once (asyncio/base_events.py:2)"
    chunk = f"{loop};_score_chunk (client/scoring.py:3)"
    stacks.write_text(
        f"{chunk};_exchange (client/aio.py:4);request (aiohttp/client.py:5) 6\n"
        f"{chunk};encode_multipart (client/protocol.py:6) 2\n"
        f"{loop};parse_batch (client/protocol.py:7);decode (json/decoder.py:8) 1\n"
        f"{loop};select (selectors.py:9) 1\n"
    )
    shares = dict(components(stacks))
    assert shares["HTTP transport (aiohttp)"] == pytest.approx(0.6)
    assert shares["multipart encoding"] == pytest.approx(0.2)
    assert shares["answer parsing (JSON, predictions, rows)"] == pytest.approx(0.1)
    assert shares["asyncio event loop and threads"] == pytest.approx(0.1)
    (tmp_path / "empty.txt").write_text("")
    assert components(tmp_path / "empty.txt") == []
