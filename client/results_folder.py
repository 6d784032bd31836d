"""The results folder: resumable output where nothing can be appended (object storage), as immutable
part files, each committed by one exclusive create.

    OUT/shard-00003-of-00016/parts/00000001.jsonl   rows, JSONL, one part per commit
    OUT/shard-00003-of-00016/parts/00000002.jsonl
    OUT/shard-00003-of-00016/complete.json          the last run finished: every image has a row

A part is written whole by one PUT (an object appears complete or not at all) under the next free
sequence number, with the store's create-if-absent (S3 If-None-Match: *, GCS ifGenerationMatch=0,
Azure If-None-Match: *, link(2) locally). The part's creation is the commit: there is no manifest
to fall out of step with the parts, so every failure point is one of two cases:

- killed before the PUT completed: no part, those rows were never committed; a rerun scores those
  images again (at most one part's worth: `commit_rows` rows or `commit_interval_s` of work);
- killed after: the part exists and a rerun skips its images, even if this run never heard back.

A PUT retried after a lost answer finds its own part already there; it is recognised by its bytes.
Two runs writing the same shard (a replaced pod whose predecessor still runs, a command started
twice) race for the next sequence number: the loser's create fails, it stops without writing, and
its rows are never kept, so no image gets two rows. Resuming lists `parts/` and reads every part.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vitserve.client.errors import ResultsFileError
from vitserve.client.output import ResumeState, Row, decode_line, encode_row
from vitserve.client.sharding import Shard
from vitserve.client.storage import ObjectStore

PARTS = "parts/"
COMPLETE = "complete.json"
_PART = re.compile(r"^parts/(\d{8})\.jsonl$")
_READERS = 16  # parts read at once when resuming: object storage answers each GET in ~10-50 ms


def part_key(sequence: int) -> str:
    return f"{PARTS}{sequence:08d}.jsonl"


def committed_parts(store: ObjectStore) -> list[tuple[int, str]]:
    """(sequence, key) of every committed part, in sequence order; other names are not ours."""
    parts = []
    for key in store.keys(PARTS):
        match = _PART.match(key)
        if match:
            parts.append((int(match[1]), key))
    return sorted(parts)


def read_part(store: ObjectStore, key: str) -> list[Row]:
    """The rows of one part; ResultsFileError if the part is not ours."""
    data = store.read(key)
    if data and not data.endswith(b"\n"):
        raise ResultsFileError(
            f"{store.location}/{key} does not end with a whole row: it was not written by vitserve"
        )
    rows = []
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            rows.append(decode_line(line, "jsonl"))
        except ResultsFileError as exc:
            raise ResultsFileError(f"{store.location}/{key}, line {number}: {exc}") from exc
    return rows


def read_parts(store: ObjectStore, keys: Sequence[str]) -> Iterator[tuple[str, list[Row]]]:
    """(key, rows) of every part in the order of `keys`: `_READERS` parts fetched at once, and only
    those in memory, so resuming a shard of millions of rows holds its paths, not its rows."""
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        for start in range(0, len(keys), _READERS):
            window = keys[start : start + _READERS]
            yield from zip(window, pool.map(lambda key: read_part(store, key), window), strict=True)


@dataclass(frozen=True)
class Completion:
    """What complete.json says: a run of this shard ended with every listed image in parts 1..`parts`."""

    shard: str
    source: str
    parts: int  # the last part of that run
    rows: int
    failed: int

    def encode(self) -> bytes:
        return (json.dumps(self.__dict__, indent=2) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> Completion:
        try:
            record = json.loads(data)
            return cls(
                str(record["shard"]),
                str(record["source"]),
                int(record["parts"]),
                int(record["rows"]),
                int(record["failed"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultsFileError(f"{where} is not a vitserve completion record ({exc})") from exc


def read_completion(store: ObjectStore) -> Completion | None:
    if COMPLETE not in store.keys(""):
        return None
    return Completion.decode(store.read(COMPLETE), f"{store.location}/{COMPLETE}")


class ResultsFolder:
    """One shard's results in a results folder: its resume state, and a writer of parts."""

    def __init__(
        self, store: ObjectStore, shard: Shard, *, commit_rows: int, commit_interval_s: float
    ) -> None:
        if commit_rows < 1 or commit_interval_s <= 0:
            raise ValueError(
                f"commit_rows must be >= 1 and commit_interval_s > 0, got {commit_rows}, {commit_interval_s}"
            )
        self.store = store
        self.shard = shard
        self.output: str | Path = store.location
        self.commit_rows = commit_rows
        self.commit_interval_s = commit_interval_s
        self._lock = threading.Lock()
        self._buffer: list[Row] = []
        self._buffer_since = 0.0
        self._next = 1  # the sequence number of the next part
        self._rows = 0  # rows in committed parts, earlier runs included
        self._failed = 0
        self._fenced: ResultsFileError | None = None  # set once another run took our next part

    def load(self) -> ResumeState:
        """What the committed parts hold; the next part follows the last one found."""
        state = ResumeState()
        parts = committed_parts(self.store)
        for key, rows in read_parts(self.store, [key for _, key in parts]):
            for row in rows:
                state.add(row, f"{self.store.location}/{key}")
        self._next = parts[-1][0] + 1 if parts else 1
        self._rows, self._failed = len(state.done), state.failed
        return state

    def open(self) -> None:
        pass  # parts are created as they are committed

    def close(self) -> None:
        pass

    def write(self, rows: Sequence[Row]) -> None:
        """Buffer `rows`; commit a part once `commit_rows` are waiting or the oldest waited long enough."""
        with self._lock:
            if not self._buffer:
                self._buffer_since = time.monotonic()
            self._buffer.extend(rows)
            due = time.monotonic() - self._buffer_since >= self.commit_interval_s
            if len(self._buffer) >= self.commit_rows or due:
                self._commit()

    def flush(self) -> None:
        """Commit whatever is buffered (at the end of a run, on Ctrl-C or SIGTERM)."""
        with self._lock:
            self._commit()

    def finish(self, source: str) -> None:
        """Flush, then record that every image of this run has a row (what `vitserve merge` checks)."""
        with self._lock:
            self._commit()
            completion = Completion(str(self.shard), source, self._next - 1, self._rows, self._failed)
            self.store.replace(COMPLETE, completion.encode())

    def _commit(self) -> None:
        if self._fenced is not None:
            raise self._fenced
        if not self._buffer:
            return
        data = b"".join(encode_row(row, "jsonl") for row in self._buffer)
        key = part_key(self._next)
        if not self.store.create(key, data) and self.store.read(key) != data:
            self._fenced = ResultsFileError(
                f"another run committed {self.store.location}/{key} first: two runs are writing the same "
                f"results; this one stopped and its last {len(self._buffer)} rows were not kept. "
                "Rerun when the other has finished"
            )
            self._buffer = []
            raise self._fenced
        self._next += 1
        self._rows += len(self._buffer)
        self._failed += sum(row.error is not None for row in self._buffer)
        self._buffer = []
