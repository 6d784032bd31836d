"""What one stage of the GPU suite measured so far, written to disk after every change.

A stage runs in a process of its own and may be stopped at its time budget or die in a native
library; whatever it recorded before that is still on disk for the suite's report.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class StageRecord:
    """Figures (a JSON tree), errors and skips of one stage, with the stage's deadline."""

    def __init__(self, path: Path, budget_s: float) -> None:
        self.path = path
        self.deadline = time.monotonic() + budget_s
        self.figures: dict[str, Any] = {}
        self.errors: list[dict[str, str]] = []
        self.save()

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def put(self, *keys: str, value: Any) -> None:
        """Set figures[k1][k2]... = value, creating the levels on the way."""
        node = self.figures
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        self.save()

    def append(self, *keys: str, value: Any) -> None:
        """Append to the list at figures[k1][k2]..., creating it."""
        node = self.figures
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(keys[-1], []).append(value)
        self.save()

    def error(self, where: str, message: str) -> None:
        self.errors.append({"where": where, "error": message})
        print(f"[{where}] error: {message}", file=sys.stderr, flush=True)
        self.save()

    def skip(self, where: str, why: str) -> None:
        self.errors.append({"where": where, "skipped": why})
        print(f"[{where}] skipped: {why}", file=sys.stderr, flush=True)
        self.save()

    @contextmanager
    def attempt(self, where: str) -> Iterator[None]:
        """Run one step, timed; an exception is recorded under `where` and the stage goes on."""
        started = time.monotonic()
        try:
            yield
        # A step's failure (a provider missing, a kernel refused, a server that did not start) is a
        # finding of the benchmark: it is written into the results, with its traceback in the log.
        except Exception as exc:
            traceback.print_exc()
            first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
            self.error(where, f"{type(exc).__name__}: {first}")
        finally:
            self.put("step_seconds", where, value=round(time.monotonic() - started, 3))

    def save(self) -> None:
        data = {"figures": self.figures, "errors": self.errors}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)
