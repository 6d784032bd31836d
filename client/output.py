"""The results file of `score_folder`: one row per image, JSONL or CSV, appended durably, resumable.

Every batch of rows is one write() followed by fsync(), so after a crash (kill -9, power loss) the
file holds whole rows plus at most one torn last line; `load_resume_state` drops that line and
returns the paths already done, which the next run skips. Thus every file ends up exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vitserve.client.errors import ResultsFileError, VitserveError
from vitserve.client.results import Prediction
from vitserve.client.storage import fsync_directory, write_synced

Format = Literal["jsonl", "csv"]
COLUMNS = ("path", "label", "score", "top_k", "model", "error", "message")
CSV_HEADER = (",".join(COLUMNS) + "\n").encode()
_FORMATS: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Row:
    """One image's outcome: a prediction (label, score, top_k, model) or an error (error, message)."""

    path: str  # relative to the scored folder, "/"-separated
    label: str | None = None
    score: float | None = None
    top_k: tuple[dict[str, Any], ...] = ()  # [{"label", "index", "score"}, ...], descending
    model: str | None = None  # "name:version" of the model that answered
    error: str | None = None  # the server's error code ("invalid_image"), or "unreadable"
    message: str | None = None

    @classmethod
    def from_result(cls, path: str, result: Prediction | VitserveError) -> Row:
        if isinstance(result, Prediction):
            top_k = tuple({"label": k.label, "index": k.index, "score": k.score} for k in result.top_k)
            return cls(path, result.label, result.score, top_k, str(result.model))
        return cls(path, error=result.code or type(result).__name__, message=result.message)


@dataclass
class ResumeState:
    """What an existing results file already holds."""

    done: set[str] = field(default_factory=set)  # paths with a row, whether prediction or error
    failed: int = 0  # how many of those rows are errors
    models: set[str] = field(default_factory=set)  # "name:version" of the models that answered
    dropped_partial_line: bool = False  # a torn last line (from a crash) was removed

    def add(self, row: Row, where: str) -> None:
        """Count one row read back from `where`; ResultsFileError if its image already has one."""
        if row.path in self.done:
            raise ResultsFileError(f"{where}: {row.path!r} appears twice")
        self.done.add(row.path)
        if row.error is not None:
            self.failed += 1
        elif row.model is not None:
            self.models.add(row.model)


def results_format(path: str | Path) -> Format:
    """ "jsonl" or "csv", from the file's suffix; ValueError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"results file must end in .jsonl, .ndjson or .csv, got {str(path)!r}")
    return _FORMATS[suffix]


def encode_row(row: Row, fmt: Format) -> bytes:
    """One complete line for `row`, newline included."""
    top_k = [dict(k) for k in row.top_k]
    if fmt == "jsonl":
        # ensure_ascii: paths that are not valid UTF-8 (surrogate escapes) still round-trip.
        record = {
            "path": row.path,
            "label": row.label,
            "score": row.score,
            "top_k": top_k,
            "model": row.model,
        }
        record |= {"error": row.error, "message": row.message}
        return (json.dumps(record) + "\n").encode("ascii")
    buffer = io.StringIO()
    # Messages may hold newlines; CSV rows must stay one physical line for torn-line detection.
    message = None if row.message is None else " ".join(row.message.splitlines())
    values = [
        row.path,
        row.label,
        row.score,
        json.dumps(top_k) if row.top_k else None,
        row.model,
        row.error,
        message,
    ]
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue().encode("utf-8", "surrogateescape")


def decode_line(line: bytes, fmt: Format) -> Row:
    """The Row of one complete line written by encode_row; ResultsFileError if it is not one."""
    try:
        if fmt == "jsonl":
            record = json.loads(line)
            return Row(
                path=record["path"],
                label=record.get("label"),
                score=record.get("score"),
                top_k=tuple(record.get("top_k") or ()),
                model=record.get("model"),
                error=record.get("error"),
                message=record.get("message"),
            )
        (values,) = list(csv.reader([line.decode("utf-8", "surrogateescape")]))
        path, label, score, top_k, model, error, message = values
        return Row(
            path=path,
            label=label or None,
            score=float(score) if score else None,
            top_k=tuple(json.loads(top_k)) if top_k else (),
            model=model or None,
            error=error or None,
            message=message or None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ResultsFileError(f"not a results row: {line[:120]!r} ({exc})") from exc


def load_resume_state(path: str | Path) -> ResumeState:
    """Read an existing results file (if any), dropping a torn last line; what it already holds.

    A torn line can only be the last one (rows are appended whole); a malformed line anywhere else
    means the file is not ours or was edited, and raises ResultsFileError rather than guessing.
    """
    path = Path(path)
    fmt = results_format(path)
    state = ResumeState()
    if not path.exists():
        return state
    good_end = 0  # byte offset just after the last complete line
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                break  # the torn last line
            good_end += len(line)
            if fmt == "csv" and number == 1:
                if line != CSV_HEADER:
                    raise ResultsFileError(f"{path} does not start with the header {CSV_HEADER!r}")
                continue
            try:
                row = decode_line(line, fmt)
            except ResultsFileError as exc:
                raise ResultsFileError(f"{path}, line {number}: {exc}") from exc
            state.add(row, f"{path}, line {number}")
    if good_end != path.stat().st_size:
        os.truncate(path, good_end)
        state.dropped_partial_line = True
    return state


class ResultsWriter:
    """Appends rows durably: each `write` is one write() of whole lines, then fsync().

    Thread-safe, so the event loop can hand writes to a thread and still flush on cancellation.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = results_format(self.path)
        self._lock = threading.Lock()
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if not existed:
            fsync_directory(self.path.parent)  # so that the new file itself survives a crash
        if self.format == "csv" and os.fstat(self._fd).st_size == 0:
            self._write_all(CSV_HEADER)

    def write(self, rows: Sequence[Row]) -> None:
        if rows:
            self._write_all(b"".join(encode_row(row, self.format) for row in rows))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_all(self, data: bytes) -> None:
        with self._lock:
            write_synced(self._fd, data)
