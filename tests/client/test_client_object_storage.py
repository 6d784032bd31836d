"""Scoring object storage against a real S3 server (moto's, in its own process) and the real service:
paged listing, concurrent reads, results folders of parts, every failure point of a commit, resume
after SIGTERM and kill -9, sharding and merging. No storage client is mocked."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.client.cli_runs import assert_once_sorted, merge, run, score
from tests.client.conftest import digit_image
from tests.client.s3server import S3Server
from tests.client.test_client_score import read_rows
from tests.gate import GatedProxy, wait_for
from vitserve.client import Client, ResultsFileError, merge_results
from vitserve.client.output import Row
from vitserve.client.results_folder import ResultsFolder, committed_parts
from vitserve.client.sharding import Shard, shard_of
from vitserve.client.sources import S3Source
from vitserve.client.storage import filesystem, open_store

FORMATS = ("PNG", "JPEG", "WEBP")


def put_images(s3: S3Server, bucket: str, prefix: str, count: int) -> list[str]:
    """`count` digit images under `prefix` in nested "folders"; their paths relative to the prefix."""
    client = s3.client()
    paths = []
    for i in range(count):
        fmt = FORMATS[i % 3]
        relative = f"d{i % 4}/e{i % 3}/{i:05d}.{fmt.lower()}"
        client.put_object(Bucket=bucket, Key=f"{prefix}/{relative}", Body=digit_image(i % 10, fmt))
        paths.append(relative)
    return paths


def keys(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


def test_listing_is_paged_filtered_and_read_concurrently(
    s3_env: dict[str, str], s3_server: S3Server, bucket: str
) -> None:
    images = put_images(s3_server, bucket, "photos", 12)
    client = s3_server.client()
    for key in [
        "photos/notes.txt",
        "photos/.cache/hidden.png",
        "photos/d0/",
        "photos-old/sibling.png",
        "top.png",
    ]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    fs, path = filesystem(f"s3://{bucket}/photos")
    source = S3Source(fs, path, f"s3://{bucket}/photos", frozenset({".png", ".jpeg", ".webp"}), page_size=5)

    async def listed() -> list[list[str]]:
        return [page async for page in source.pages()]

    pages = asyncio.run(listed())
    assert len(pages) == 3  # 15 keys under photos/, 5 a page: one ListObjectsV2 page at a time
    assert sorted(p for page in pages for p in page) == sorted(images)
    assert source.count(threading.Event()) == 12
    stopped = threading.Event()
    stopped.set()
    assert source.count(stopped) is None

    read = asyncio.run(source.read_many([images[0], "d9/missing.png", images[1]]))
    assert read[0] == digit_image(0, "PNG") and read[2] == digit_image(1, "JPEG")
    assert isinstance(read[1], FileNotFoundError)  # this image's row will say so; the run goes on


def test_a_bucket_is_scored_into_a_results_folder_and_merged(
    vitserve_server: str, s3_env: dict[str, str], s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    images = put_images(s3_server, bucket, "photos", 30)
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="photos/d0/corrupt.png", Body=digit_image(3)[:60])
    client.put_object(Bucket=bucket, Key="photos/readme.txt", Body=b"not an image")
    source, out = f"s3://{bucket}/photos", f"s3://{bucket}/scores"

    result = run(score(vitserve_server, source, out, s3_env, "--top-k", "2"), s3_env)
    assert result.returncode == 1, result.stderr  # the corrupt image failed
    assert "scored 30, failed 1, skipped 0" in result.stderr and "\r" not in result.stderr
    stored = keys(s3_server, bucket, "scores/")
    assert "scores/shard-00000-of-00001/parts/00000001.jsonl" in stored
    assert "scores/shard-00000-of-00001/complete.json" in stored

    merged_csv = tmp_path / "merged.csv"
    merged = run(merge(out, merged_csv), s3_env)
    assert merged.returncode == 0, merged.stderr
    assert "merged 1 shard(s): 31 rows (1 errors)" in merged.stderr
    rows = read_rows(merged_csv)
    assert_once_sorted(rows, [*images, "d0/corrupt.png"])
    bad = next(row for row in rows if row["path"] == "d0/corrupt.png")
    assert bad["error"] in ("invalid_image", "unsupported_media_type") and bad["label"] == ""
    assert all(len(json.loads(row["top_k"])) == 2 for row in rows if not row["error"])

    # Rerunning finds everything done and writes no part; a merge into the bucket matches the local one.
    again = run(score(vitserve_server, source, out, s3_env), s3_env)
    assert again.returncode == 1 and "scored 0, failed 0, skipped 31" in again.stderr
    assert [k for k in keys(s3_server, bucket, "scores/") if "/parts/" in k] == [
        k for k in stored if "/parts/" in k
    ]
    assert run(merge(out, tmp_path / "merged.jsonl"), s3_env).returncode == 0
    assert run(merge(out, f"s3://{bucket}/merged.jsonl"), s3_env).returncode == 0
    body = client.get_object(Bucket=bucket, Key="merged.jsonl")["Body"].read()
    assert body == (tmp_path / "merged.jsonl").read_bytes()
    assert [json.loads(line)["path"] for line in body.splitlines()] == [row["path"] for row in rows]


def test_sigterm_and_kill_9_resume_to_every_image_exactly_once(
    vitserve_server: str, s3_env: dict[str, str], s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    images = put_images(s3_server, bucket, "many", 60)
    source, out = f"s3://{bucket}/many", f"s3://{bucket}/scores/"
    # One image per request and 5 rows per part: a commit falls exactly where the test expects it.
    pace = ("--concurrency", "1", "--batch-size", "1", "--commit-rows", "5", "--commit-interval-s", "3600")
    shard = open_store(out).sub("shard-00000-of-00001")

    def committed_rows() -> int:
        return sum(len(read_rows_of(shard, key)) for _, key in committed_parts(shard))

    with GatedProxy(vitserve_server) as proxy:
        proxy.gate.let_through(12)  # 12 answers: two parts committed, two rows waiting for a third
        # Started with SIGINT ignored, as a shell script's `cmd &` starts it: SIGTERM must still stop it.
        first = subprocess.Popen(
            score(proxy.url, source, out, s3_env, *pace),
            env=s3_env,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        proxy.gate.wait_until_waiting()
        wait_for(lambda: len(committed_parts(shard)) == 2, "two parts committed")
        first.send_signal(signal.SIGTERM)  # Kubernetes stopping the pod
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 143 and b"rerun the same command to resume" in stderr
    assert [len(read_rows_of(shard, key)) for _, key in committed_parts(shard)] == [5, 5, 2]  # flushed

    with GatedProxy(vitserve_server) as proxy:
        proxy.gate.let_through(12)
        second = subprocess.Popen(
            score(proxy.url, source, out, s3_env, *pace), env=s3_env, stderr=subprocess.DEVNULL
        )
        proxy.gate.wait_until_waiting()
        wait_for(lambda: len(committed_parts(shard)) == 5, "two more parts committed")
        second.kill()  # kill -9: the two rows answered since the last part are lost, not duplicated
        second.wait(timeout=30)
    assert committed_rows() == 22

    third = run(score(vitserve_server, source, out, s3_env), s3_env)
    assert third.returncode == 0, third.stderr
    counts = re.search(r"scored (\d+), failed 0, skipped (\d+)", third.stderr)
    assert counts is not None and (int(counts[1]), int(counts[2])) == (38, 22), third.stderr
    merged = tmp_path / "all.jsonl"
    assert run(merge(out, merged), s3_env).returncode == 0
    rows = read_rows(merged)
    assert_once_sorted(rows, images)
    assert all(row["error"] is None and row["label"] for row in rows)


def read_rows_of(store: Any, key: str) -> list[bytes]:
    return store.read(key).splitlines()


def rows_for(paths: list[str]) -> list[Row]:
    return [
        Row(path, "7", 0.9, ({"label": "7", "index": 7, "score": 0.9},), "digits-vit:2") for path in paths
    ]


def test_every_failure_point_of_a_commit(s3_env: dict[str, str], bucket: str) -> None:
    store = open_store(f"s3://{bucket}/scores").sub("shard-00000-of-00001")

    def writer() -> ResultsFolder:
        folder = ResultsFolder(store, Shard(0, 1), commit_rows=2, commit_interval_s=3600)
        folder.load()
        return folder

    # Killed before the PUT completed: nothing is there, nothing is done.
    assert writer().load().done == set()

    # A committed part whose writer never heard back: its retry finds the same bytes and goes on.
    first, retry = writer(), writer()
    first.write(rows_for(["a.png", "b.png"]))
    retry.write(rows_for(["a.png", "b.png"]))  # the same part again, as a retried PUT sends it
    retry.write(rows_for(["c.png", "d.png"]))
    assert writer().load().done == {"a.png", "b.png", "c.png", "d.png"}

    # Two runs on one shard: the second to commit the same part number stops, and keeps nothing.
    winner, loser = writer(), writer()
    winner.write(rows_for(["e.png", "f.png"]))
    with pytest.raises(ResultsFileError, match="two runs are writing the same results"):
        loser.write(rows_for(["e.png", "g.png"]))
    with pytest.raises(ResultsFileError):
        loser.flush()  # and never writes again
    state = writer().load()
    assert state.done == {"a.png", "b.png", "c.png", "d.png", "e.png", "f.png"}

    # Buffered rows reach storage on flush (Ctrl-C, SIGTERM), whole.
    late = writer()
    late.write(rows_for(["h.png"]))
    assert "h.png" not in writer().load().done
    late.flush()
    assert "h.png" in writer().load().done

    # What is not a part (a leftover upload, a note) is not read; a part that is not ours is refused.
    store.replace("parts/notes.txt", b"hello")
    assert "h.png" in writer().load().done
    store.replace("parts/99999999.jsonl", b'{"path": "x.png"')
    with pytest.raises(ResultsFileError, match="does not end with a whole row"):
        writer()


def test_shards_partition_a_bucket_and_merge_into_one_file(
    vitserve_server: str, s3_env: dict[str, str], s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    images = put_images(s3_server, bucket, "photos", 36)
    source, out = f"s3://{bucket}/photos", f"s3://{bucket}/scores/"
    with pytest.raises(ResultsFileError, match="no shard folders"):
        merge_results(out, tmp_path / "early.jsonl")

    scored: dict[int, list[str]] = {}
    with Client(vitserve_server) as client:
        for index in (2, 0):  # shard 1 not run yet
            summary = client.score_folder(source, out, shard=f"{index}/3", concurrency=2, batch_size=4)
            assert summary.output == f"{out}shard-{index:05d}-of-00003"
            scored[index] = [json.loads(line)["path"] for line in parts_of(out, index)]
            assert summary.scored == len(scored[index]) > 0
        with pytest.raises(ResultsFileError, match="lacks shard"):
            merge_results(out, tmp_path / "partial.jsonl")
        client.score_folder(source, out, shard="1/3")
        scored[1] = [json.loads(line)["path"] for line in parts_of(out, 1)]

    for index, paths in scored.items():
        assert {shard_of(path, 3) for path in paths} == {index}
    assert sorted(p for paths in scored.values() for p in paths) == sorted(images)  # disjoint, complete

    result = run(merge(out, tmp_path / "merged.jsonl"), s3_env)
    assert result.returncode == 0 and "merged 3 shard(s): 36 rows (0 errors)" in result.stderr
    assert_once_sorted(read_rows(tmp_path / "merged.jsonl"), images)

    # An unfinished shard (killed after its last part, before complete.json) is refused, then fixed by
    # rerunning it; a run split another way cannot be merged with this one.
    s3_server.client().delete_object(Bucket=bucket, Key="scores/shard-00001-of-00003/complete.json")
    unfinished = run(merge(out, tmp_path / "again.jsonl"), s3_env)
    assert (
        unfinished.returncode == 2
        and "shard 1/3" in unfinished.stderr
        and "not finished" in unfinished.stderr
    )
    rerun = run(score(vitserve_server, source, out, s3_env, "--shard", "1/3"), s3_env)
    assert rerun.returncode == 0 and "scored 0" in rerun.stderr
    assert run(merge(out, tmp_path / "again.jsonl"), s3_env).returncode == 0
    with Client(vitserve_server) as client:
        client.score_folder(source, out, shard="0/2")
    with pytest.raises(ResultsFileError, match="mixes runs split 2 and 3 ways"):
        merge_results(out, tmp_path / "mixed.jsonl")


def parts_of(out: str, index: int) -> list[bytes]:
    store = open_store(out).sub(f"shard-{index:05d}-of-00003")
    return [line for _, key in committed_parts(store) for line in store.read(key).splitlines()]


def test_local_results_folders_and_what_is_refused(
    vitserve_server: str, s3_env: dict[str, str], bucket: str, tmp_path: Path, write_tree: Callable[..., Path]
) -> None:
    root = write_tree(tmp_path / "in", {f"{i}.png": digit_image(i) for i in range(5)})
    out = f"{tmp_path / 'scores'}/"
    result = run(score(vitserve_server, str(root), out, s3_env, "--shard", "0/1"), s3_env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "scores" / "shard-00000-of-00001" / "complete.json").is_file()
    assert run(merge(out, tmp_path / "one.csv"), s3_env).returncode == 0
    assert_once_sorted(read_rows(tmp_path / "one.csv"), [f"{i}.png" for i in range(5)])

    for extra, why in [
        ((f"s3://{bucket}/results.jsonl",), "cannot be appended to"),
        ((str(tmp_path / "r.jsonl"), "--shard", "1/2"), "results folder that all shards share"),
        ((out, "--shard", "2/2"), "0 <= K < N"),
        ((out, "--shard", "half"), "K/N"),
    ]:
        failed = run(score(vitserve_server, str(root), extra[0], s3_env, *extra[1:]), s3_env)
        assert failed.returncode == 2 and why in failed.stderr, failed.stderr
    missing = run(score(vitserve_server, f"s3://{bucket}-nope/x", out, s3_env), s3_env)
    assert missing.returncode == 2 and "error:" in missing.stderr
