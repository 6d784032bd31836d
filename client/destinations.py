"""Where a scoring run's rows go: a local results file (appended) or a results folder (parts).

    results.jsonl, results.csv           a local file, appended with fsync (output.py)
    scores/  s3://bucket/scores/  gs://… a results folder: one sub-folder per shard, immutable parts
                                         (results_folder.py); `vitserve merge` makes it one file

Object storage cannot append, so an object-storage --out is always a folder; a local folder works
the same way, for shards that share a network file system.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vitserve.client.output import ResultsWriter, ResumeState, Row, load_resume_state, results_format
from vitserve.client.results_folder import ResultsFolder
from vitserve.client.sharding import ALL, Shard
from vitserve.client.storage import is_url, open_store

_FILE_SUFFIXES = (".jsonl", ".ndjson", ".csv")


class ResultsSink(Protocol):
    """What the scorer writes through: resume state first, then rows, then the end of the run."""

    output: str | Path

    def load(self) -> ResumeState: ...

    def open(self) -> None:
        """Get ready to write (called once the run is known to go ahead)."""
        ...

    def write(self, rows: Sequence[Row]) -> None:
        """Keep `rows`; thread-safe, called from worker threads and on cancellation."""
        ...

    def flush(self) -> None:
        """Make every row kept so far durable (a results file is durable after each write)."""
        ...

    def finish(self, source: str) -> None:
        """The run scored every image: flush, and say so where the format can."""
        ...

    def close(self) -> None: ...


class ResultsFile:
    """A local .jsonl/.csv file: each write() is one append + fsync."""

    def __init__(self, path: Path) -> None:
        self.output: str | Path = path
        self._writer: ResultsWriter | None = None

    def load(self) -> ResumeState:
        return load_resume_state(self.output)

    def open(self) -> None:
        self._writer = ResultsWriter(self.output)

    def write(self, rows: Sequence[Row]) -> None:
        assert self._writer is not None, "open() first"
        self._writer.write(rows)

    def flush(self) -> None:
        pass  # every write is already durable

    def finish(self, source: str) -> None:
        pass

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def is_results_folder(out: str | os.PathLike[str]) -> bool:
    """A URL without a file suffix, a path ending in "/", or an existing local directory."""
    text = os.fspath(out)
    if text.lower().endswith(_FILE_SUFFIXES):
        return False
    return is_url(text) or text.endswith(("/", os.sep)) or Path(text).is_dir()


def open_results(
    out: str | os.PathLike[str], shard: Shard | None, *, commit_rows: int, commit_interval_s: float
) -> ResultsSink:
    """The sink for --out; ValueError (before anything is written) for one that cannot work."""
    text = os.fspath(out)
    if is_results_folder(text):
        store = open_store(text)
        return ResultsFolder(
            store.sub((shard or ALL).name),
            shard or ALL,
            commit_rows=commit_rows,
            commit_interval_s=commit_interval_s,
        )
    if is_url(text) and not text.startswith("file://"):
        raise ValueError(
            f"object storage cannot be appended to, so {text} cannot be a results file: give a folder "
            f"({text.rsplit('/', 1)[0]}/scores/) and make one file of it with `vitserve merge`"
        )
    path = Path(text.removeprefix("file://"))
    try:
        results_format(path)
    except ValueError as exc:
        raise ValueError(f"{exc}, or a folder (end it with /) for a results folder") from exc
    if shard is not None and shard.count > 1:
        raise ValueError(
            f"--shard {shard} writes into a results folder that all shards share: give --out a folder "
            "(end it with /, or an object-storage URL) and merge it with `vitserve merge`"
        )
    return ResultsFile(path)
