"""Scoring Azure Blob Storage against a real Azure-compatible server (Azurite, in its own process):
paged listing, reads, fenced parts (If-None-Match: *), sharded scoring and a merge. The protocol's
failure points are covered against S3 (test_client_object_storage.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.azureserver import AzureServer
from tests.client.cli_runs import score_in_shards_and_merge
from tests.client.conftest import digit_image
from tests.client.emulator import point_at, running
from vitserve.client import ResultsFileError
from vitserve.client.output import Row
from vitserve.client.results_folder import ResultsFolder
from vitserve.client.sharding import Shard
from vitserve.client.sources import AzureSource
from vitserve.client.storage import filesystem, open_store


@pytest.fixture(scope="module")
def azure_server() -> Iterator[AzureServer]:
    with running(AzureServer()) as server:
        yield server


@pytest.fixture
def azure(azure_server: AzureServer, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Any]:
    """The environment pointing at Azurite, and an adlfs file system on it for the tests' own writes."""
    env = point_at(azure_server, monkeypatch)
    fs, _ = filesystem("az://any")
    return env, fs


def put_images(fs: Any, container: str, prefix: str, count: int) -> list[str]:
    fs.mkdir(container)
    paths = []
    for i in range(count):
        fmt = ("PNG", "JPEG", "WEBP")[i % 3]
        relative = f"d{i % 4}/{i:05d}.{fmt.lower()}"
        fs.pipe_file(f"{container}/{prefix}/{relative}", digit_image(i % 10, fmt))
        paths.append(relative)
    return paths


def test_an_azure_prefix_is_listed_a_page_at_a_time_read_and_fenced(
    azure: tuple[dict[str, str], Any],
) -> None:
    _, fs = azure
    images = put_images(fs, "listing", "photos", 9)
    for key in ["photos/notes.txt", "photos/.cache/hidden.png", "photos-old/sibling.png"]:
        fs.pipe_file(f"listing/{key}", b"x")
    fs_source, path = filesystem("az://listing/photos")
    source = AzureSource(
        fs_source, path, "az://listing/photos", frozenset({".png", ".jpeg", ".webp"}), page_size=4
    )

    async def listed() -> list[list[str]]:
        return [page async for page in source.pages()]

    pages = asyncio.run(listed())
    assert len(pages) == 3  # 11 blobs under photos/, 4 a page
    assert sorted(p for page in pages for p in page) == sorted(images)
    read = asyncio.run(source.read_many([images[0], "d9/missing.png"]))
    assert read[0] == digit_image(0, "PNG") and isinstance(read[1], FileNotFoundError)

    store = open_store("az://listing/scores").sub("shard-00000-of-00001")
    winner = ResultsFolder(store, Shard(0, 1), commit_rows=1, commit_interval_s=3600)
    loser = ResultsFolder(store, Shard(0, 1), commit_rows=1, commit_interval_s=3600)
    winner.load(), loser.load()
    winner.write([Row("a.png", error="unreadable", message="test")])
    with pytest.raises(ResultsFileError, match="two runs are writing the same results"):
        loser.write([Row("b.png", error="unreadable", message="test")])


def test_an_azure_container_is_scored_in_shards_and_merged(
    vitserve_server: str, azure: tuple[dict[str, str], Any], tmp_path: Path
) -> None:
    env, fs = azure
    images = put_images(fs, "scoring", "photos", 14)
    rows = score_in_shards_and_merge(
        vitserve_server, "az://scoring/photos", "az://scoring/scores/", env, 2, tmp_path / "merged.csv"
    )
    assert [row["path"] for row in rows] == sorted(images) and all(row["label"] for row in rows)
