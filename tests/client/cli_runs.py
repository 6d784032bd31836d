"""`vitserve score` and `vitserve merge` run as a user runs them, for the object-storage tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.client.test_client_score import read_rows


def score(url: str, source: str, out: str, env: dict[str, str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "vitserve", "score", source, "--url", url, "--out", out, *extra]


def merge(folder: str, out: str | Path) -> list[str]:
    return [sys.executable, "-m", "vitserve", "merge", folder, "--out", str(out)]


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def assert_once_sorted(rows: list[dict[str, Any]], expected: list[str]) -> None:
    paths = [row["path"] for row in rows]
    assert paths == sorted(expected, key=lambda p: p.encode()), "not every image once, in path order"


def score_in_shards_and_merge(
    url: str, source: str, out: str, env: dict[str, str], shards: int, merged: Path
) -> list[dict[str, Any]]:
    """Score `source` in `shards` runs into the results folder `out`, merge it; the merged rows."""
    for index in range(shards):
        result = run(score(url, source, out, env, "--shard", f"{index}/{shards}"), env)
        assert result.returncode == 0, result.stderr
    result = run(merge(out, merged), env)
    assert result.returncode == 0, result.stderr
    return read_rows(merged)
