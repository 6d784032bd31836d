"""`vitserve merge`: a results folder's shards as one results file, every image once, sorted by path.

Merging refuses rather than guess: every shard 0..N-1 must be there, each finished (its
complete.json names its last part and no part came after it), all with the same N, and no path may
appear twice. Rows are sorted by path with an external merge sort (runs of `run_rows` rows spilled
to temporary files, then merged), so memory stays flat however many images there are. The file
appears only once it is whole: renamed into place locally, or completed as one upload on object
storage.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vitserve.client.errors import ResultsFileError
from vitserve.client.output import CSV_HEADER, Format, Row, decode_line, encode_row, results_format
from vitserve.client.results_folder import committed_parts, read_completion, read_parts
from vitserve.client.sharding import Shard, parse_shard_name
from vitserve.client.storage import ObjectStore, filesystem, is_url, open_store, translate


@dataclass(frozen=True)
class MergeSummary:
    """What `merge_results` wrote."""

    output: str
    shards: int
    rows: int
    failed: int  # rows with an error


def merge_results(
    folder: str | os.PathLike[str], out: str | os.PathLike[str], *, run_rows: int = 50_000
) -> MergeSummary:
    """Merge every shard of the results folder `folder` into the results file `out` (.jsonl or .csv)."""
    out_text = os.fspath(out)
    fmt = results_format(out_text)
    store = open_store(folder)
    shards = finished_shards(store)
    with tempfile.TemporaryDirectory(prefix="vitserve-merge-") as spill:
        runs = _sorted_runs(_rows(shards), Path(spill), run_rows)
        with ExitStack() as stack:
            streams = [_read_run(stack.enter_context(run.open("rb"))) for run in runs]
            merged = heapq.merge(*streams, key=lambda row: row.path.encode("utf-8", "surrogateescape"))
            rows, failed = _write(merged, out_text, fmt)
    return MergeSummary(out_text, len(shards), rows, failed)


def finished_shards(store: ObjectStore) -> list[ObjectStore]:
    """The shard folders of a results folder, in shard order; ResultsFileError unless all are finished."""
    found: dict[int, Shard] = {}
    counts: set[int] = set()
    for name in store.folders():
        shard = parse_shard_name(name)
        if shard is not None:
            found[shard.index] = shard
            counts.add(shard.count)
    if not found:
        raise ResultsFileError(
            f"{store.location} holds no shard folders (shard-KKKKK-of-NNNNN/): nothing to merge"
        )
    if len(counts) > 1:
        raise ResultsFileError(
            f"{store.location} mixes runs split {' and '.join(map(str, sorted(counts)))} ways: "
            "merge folders of one run only"
        )
    (count,) = counts
    missing = [index for index in range(count) if index not in found]
    if missing:
        raise ResultsFileError(
            f"{store.location} lacks shard(s) {', '.join(f'{i}/{count}' for i in missing)}: run them first"
        )
    shards = []
    for index in range(count):
        sub = store.sub(found[index].name)
        completion = read_completion(sub)
        parts = committed_parts(sub)
        last = parts[-1][0] if parts else 0
        if completion is None or completion.parts != last:
            raise ResultsFileError(
                f"shard {index}/{count} ({sub.location}) has not finished: rerun its `vitserve score` command"
            )
        shards.append(sub)
    return shards


def _rows(shards: list[ObjectStore]) -> Iterator[Row]:
    for shard in shards:
        for _, rows in read_parts(shard, [key for _, key in committed_parts(shard)]):
            yield from rows


def _sorted_runs(rows: Iterator[Row], spill: Path, run_rows: int) -> list[Path]:
    """Rows in sorted runs of at most `run_rows`, each a JSONL temporary file."""
    runs: list[Path] = []
    batch: list[Row] = []

    def flush() -> None:
        batch.sort(key=lambda row: row.path.encode("utf-8", "surrogateescape"))
        path = spill / f"run-{len(runs):06d}.jsonl"
        path.write_bytes(b"".join(encode_row(row, "jsonl") for row in batch))
        runs.append(path)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= run_rows:
            flush()
    if batch or not runs:
        flush()
    return runs


def _read_run(file: IO[bytes]) -> Iterator[Row]:
    for line in file:
        yield decode_line(line, "jsonl")


def _write(rows: Iterator[Row], out: str, fmt: Format) -> tuple[int, int]:
    """Write `rows` (sorted) to `out` so that it appears only when complete; (rows, failed)."""
    if is_url(out) and not out.startswith("file://"):
        fs, path = filesystem(out)
        try:
            with fs.open(path, "wb") as file:  # a multipart upload: the object appears on close
                return _write_rows(rows, file, fmt)
        except OSError as exc:
            raise translate(exc, f"writing {out}") from exc
    target = Path(out.removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            counts = _write_rows(rows, file, fmt)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return counts


def _write_rows(rows: Iterator[Row], file: IO[bytes], fmt: Format) -> tuple[int, int]:
    if fmt == "csv":
        file.write(CSV_HEADER)
    count = failed = 0
    previous: str | None = None
    pending: list[bytes] = []
    for row in rows:
        if row.path == previous:
            raise ResultsFileError(f"{row.path!r} has rows in two shards: the shards were not one run's")
        previous = row.path
        count += 1
        failed += row.error is not None
        pending.append(encode_row(row, fmt))
        if len(pending) >= 4096:
            file.write(b"".join(pending))
            pending.clear()
    file.write(b"".join(pending))
    return count, failed
