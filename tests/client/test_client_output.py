"""Results files: rows round-trip through JSONL and CSV, and resuming drops only a torn last line."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vitserve.client.errors import InvalidImage, ResultsFileError
from vitserve.client.output import (
    COLUMNS,
    ResultsWriter,
    Row,
    decode_line,
    encode_row,
    load_resume_state,
    results_format,
)
from vitserve.client.results import ModelRef, Prediction, TopK

PREDICTION = Prediction("7", 0.875, (TopK("7", 7, 0.875), TopK("1", 1, 0.125)), ModelRef("digits-vit", "3"))
ROWS = [
    Row.from_result("a/seven.png", PREDICTION),
    Row.from_result(
        "b/bad.png", InvalidImage("cannot identify image\nfile", code="invalid_image", status=400)
    ),
    Row.from_result('c, "quoted"/ünï.png', PREDICTION),
    Row("d/\udcff-not-utf8.png", error="unreadable", message="PermissionError: denied"),
]


def test_results_format_comes_from_the_suffix() -> None:
    assert results_format("x.jsonl") == results_format("x.NDJSON") == "jsonl"
    assert results_format("out/x.csv") == "csv"
    with pytest.raises(ValueError, match=r"\.jsonl"):
        results_format("x.json")


def test_row_from_a_prediction_and_from_an_error() -> None:
    row = ROWS[0]
    assert (row.label, row.score, row.model, row.error) == ("7", 0.875, "digits-vit:3", None)
    assert row.top_k == (
        {"label": "7", "index": 7, "score": 0.875},
        {"label": "1", "index": 1, "score": 0.125},
    )
    assert (ROWS[1].error, ROWS[1].label) == ("invalid_image", None)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_rows_round_trip_one_line_each(fmt: str) -> None:
    for row in ROWS:
        line = encode_row(row, fmt)  # type: ignore[arg-type]
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        decoded = decode_line(line, fmt)  # type: ignore[arg-type]
        expected_message = None if row.message is None else " ".join(row.message.splitlines())
        assert decoded.path == row.path and decoded.top_k == row.top_k and decoded.error == row.error
        assert (decoded.label, decoded.score, decoded.model) == (row.label, row.score, row.model)
        assert decoded.message == (row.message if fmt == "jsonl" else expected_message)


def test_written_files_parse_with_the_standard_libraries(tmp_path: Path) -> None:
    with ResultsWriter(tmp_path / "r.jsonl") as jsonl, ResultsWriter(tmp_path / "r.csv") as csv_out:
        jsonl.write(ROWS[:2])
        jsonl.write(ROWS[2:])
        csv_out.write(ROWS)
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["path"] for r in records] == [r.path for r in ROWS]
    assert set(records[0]) == set(COLUMNS)
    assert records[0]["top_k"][0] == {"label": "7", "index": 7, "score": 0.875}
    assert records[1]["error"] == "invalid_image" and records[1]["label"] is None
    with (tmp_path / "r.csv").open(newline="", encoding="utf-8", errors="surrogateescape") as file:
        table = list(csv.DictReader(file))
    assert [r["path"] for r in table] == [r.path for r in ROWS]
    assert json.loads(table[0]["top_k"])[1]["label"] == "1" and table[0]["score"] == "0.875"
    assert table[1]["error"] == "invalid_image" and table[1]["top_k"] == ""


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_state_lists_done_paths_and_drops_a_torn_last_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"r{suffix}"
    assert load_resume_state(path).done == set()
    with ResultsWriter(path) as writer:
        writer.write(ROWS[:3])
    whole = path.read_bytes()
    with path.open("ab") as file:  # what kill -9 in the middle of a write can leave
        file.write(encode_row(ROWS[3], results_format(path))[:9])
    state = load_resume_state(path)
    assert state.done == {r.path for r in ROWS[:3]}
    assert (state.failed, state.models, state.dropped_partial_line) == (1, {"digits-vit:3"}, True)
    assert path.read_bytes() == whole
    # Appending after the resume gives a file that parses whole, every path once.
    with ResultsWriter(path) as writer:
        writer.write(ROWS[3:])
    state = load_resume_state(path)
    assert state.done == {r.path for r in ROWS} and not state.dropped_partial_line


def test_a_torn_csv_header_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(b"path,la")
    assert load_resume_state(path).done == set()
    with ResultsWriter(path) as writer:
        writer.write(ROWS[:1])
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)


def test_corruption_before_the_last_line_is_an_error_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(encode_row(ROWS[0], "jsonl") + b"{not json\n" + encode_row(ROWS[1], "jsonl"))
    with pytest.raises(ResultsFileError, match="line 2"):
        load_resume_state(path)
    path.write_bytes(encode_row(ROWS[0], "jsonl") * 2)
    with pytest.raises(ResultsFileError, match="twice"):
        load_resume_state(path)
    other = tmp_path / "r.csv"
    other.write_text("name,score\nx,1\n")
    with pytest.raises(ResultsFileError, match="header"):
        load_resume_state(other)


def test_each_write_is_durable_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path)
    writer.write(ROWS[:1])
    # Another reader sees the row at once: it was written with one write(), not buffered.
    assert path.read_bytes() == encode_row(ROWS[0], "jsonl")
    writer.close()
    writer.close()  # idempotent
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_each_write_is_fsynced_before_it_returns(tmp_path: Path) -> None:
    """What no reader can see: the system calls, traced by strace (tools/system-deps.sh installs it)."""
    strace = shutil.which("strace")
    assert strace, "strace is missing: run tools/system-deps.sh"
    path = (tmp_path / "r.jsonl").resolve()
    trace = tmp_path / "trace.txt"
    script = (
        "import sys\n"
        "from vitserve.client.output import ResultsWriter, Row\n"
        "writer = ResultsWriter(sys.argv[1])\n"
        "writer.write([Row('a.png', error='unreadable', message='denied')])\n"
        "print('returned', flush=True)\n"
        "writer.close()\n"
    )
    traced = [strace, "-f", "-y", "-e", "trace=write,fsync,fdatasync", "-o", str(trace)]
    subprocess.run(
        [*traced, sys.executable, "-c", script, str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    calls = trace.read_text().splitlines()

    def first(pattern: str) -> int:
        found = [i for i, line in enumerate(calls) if re.search(pattern, line)]
        assert found, f"no {pattern} in the trace:\n" + "\n".join(calls[-30:])
        return found[0]

    on_file = rf"\(\d+<{re.escape(str(path))}>"
    written, synced = first(rf"\bwrite{on_file}"), first(rf"\bf(data)?sync{on_file}")
    returned = first(r'\bwrite\(1<.*"returned')
    assert written < synced < returned, "the row was not fsynced between its write() and write()'s return"
