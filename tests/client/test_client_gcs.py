"""Scoring Google Cloud Storage against a real GCS-compatible server (fake-gcs-server, in its own
process): paged listing, concurrent reads, a results folder of parts fenced by ifGenerationMatch=0,
and a merge. The protocol's failure points are covered against S3 (test_client_object_storage.py);
here, what differs per back-end: listing, reading, the exclusive create."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.cli_runs import score_in_shards_and_merge
from tests.client.conftest import digit_image
from tests.client.emulator import point_at, running
from tests.client.gcsserver import GCSServer
from vitserve.client import ResultsFileError
from vitserve.client.output import Row
from vitserve.client.results_folder import ResultsFolder
from vitserve.client.sharding import Shard
from vitserve.client.sources import GCSSource
from vitserve.client.storage import filesystem, open_store


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[GCSServer]:
    with running(GCSServer()) as server:
        yield server


@pytest.fixture
def gcs_env(gcs_server: GCSServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return point_at(gcs_server, monkeypatch)


def put_images(gcs: GCSServer, bucket: str, prefix: str, count: int) -> list[str]:
    paths = []
    for i in range(count):
        fmt = ("PNG", "JPEG", "WEBP")[i % 3]
        relative = f"d{i % 4}/{i:05d}.{fmt.lower()}"
        gcs.put(bucket, f"{prefix}/{relative}", digit_image(i % 10, fmt))
        paths.append(relative)
    return paths


def test_a_gcs_prefix_is_listed_a_page_at_a_time_and_read(
    gcs_env: dict[str, str], gcs_server: GCSServer
) -> None:
    gcs_server.create_bucket("listing")
    images = put_images(gcs_server, "listing", "photos", 9)
    for key in ["photos/notes.txt", "photos/.cache/hidden.png", "photos-old/sibling.png"]:
        gcs_server.put("listing", key, b"x")
    fs, path = filesystem("gs://listing/photos")
    source = GCSSource(fs, path, "gs://listing/photos", frozenset({".png", ".jpeg", ".webp"}), page_size=4)

    async def listed() -> list[list[str]]:
        return [page async for page in source.pages()]

    pages = asyncio.run(listed())
    assert len(pages) == 3  # 11 objects under photos/, 4 a page
    assert sorted(p for page in pages for p in page) == sorted(images)
    assert source.count(threading.Event(), keep=lambda p: p.startswith("d0/")) == 3
    read = asyncio.run(source.read_many([images[0], "d9/missing.png"]))
    assert read[0] == digit_image(0, "PNG") and isinstance(read[1], FileNotFoundError)


def test_parts_on_gcs_are_fenced_by_the_exclusive_create(
    gcs_env: dict[str, str], gcs_server: GCSServer
) -> None:
    gcs_server.create_bucket("fence")
    store = open_store("gs://fence/scores").sub("shard-00000-of-00001")

    def writer() -> ResultsFolder:
        folder = ResultsFolder(store, Shard(0, 1), commit_rows=1, commit_interval_s=3600)
        folder.load()
        return folder

    winner, loser = writer(), writer()
    winner.write([Row("a.png", error="unreadable", message="test")])
    with pytest.raises(ResultsFileError, match="two runs are writing the same results"):
        loser.write([Row("b.png", error="unreadable", message="test")])
    assert writer().load().done == {"a.png"}


def test_a_gcs_bucket_is_scored_and_merged(
    vitserve_server: str, gcs_env: dict[str, str], gcs_server: GCSServer, tmp_path: Path
) -> None:
    gcs_server.create_bucket("scoring")
    images = put_images(gcs_server, "scoring", "photos", 14)
    rows = score_in_shards_and_merge(
        vitserve_server, "gs://scoring/photos", "gs://scoring/scores/", gcs_env, 2, tmp_path / "m.jsonl"
    )
    assert [row["path"] for row in rows] == sorted(images) and all(row["label"] for row in rows)
