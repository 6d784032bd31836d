"""bench/score.py: the capacity clients send what the scorer sends; the profile summary charges
py-spy's collapsed stacks to the right component."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import DEFAULT_MODEL_DIR
from vitserve.bench.score import capacity_chunks, components, make_folder
from vitserve.client.sources import open_source
from vitserve.client.walk import DEFAULT_EXTENSIONS, normalize_extensions


def test_capacity_chunks_are_the_requests_the_scorer_sends_for_the_folder(tmp_path: Path) -> None:
    # The samples differ in cost to the server (28x28 PNGs, 280x280 JPEGs): a capacity measured on
    # other images than the scored ones would not be the capacity the ratio needs.
    samples, batch_size = DEFAULT_MODEL_DIR / "samples", 8
    make_folder(samples, tmp_path, 100)
    source = open_source(tmp_path, normalize_extensions(DEFAULT_EXTENSIONS))

    async def listed() -> list[str]:
        return [path async for page in source.pages() for path in page]

    paths = asyncio.run(listed())
    assert len(paths) == 100
    starts = range(0, 96, batch_size)
    sent = [[(tmp_path / p).read_bytes() for p in paths[i : i + batch_size]] for i in starts]
    chunks = capacity_chunks(samples, batch_size)
    images = {p.name for p in samples.iterdir() if p.suffix != ".json"}
    assert {name for chunk in chunks for name, _ in chunk} == images
    assert sent == [[data for _, data in chunks[i % len(chunks)]] for i in range(len(sent))]


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
