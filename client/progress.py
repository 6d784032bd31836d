"""The progress line `vitserve score` draws on a terminal: done/total, rate, ETA, errors."""

from __future__ import annotations

import math
import time
from typing import TextIO

from vitserve.client.scoring import Progress, ScoreSummary


class ProgressBar:
    """A `progress` callback for score_folder that redraws one line of `stream`, at most 10 times/s."""

    def __init__(self, stream: TextIO, *, width: int = 24, min_interval_s: float = 0.1) -> None:
        self.stream = stream
        self.width = width
        self.min_interval_s = min_interval_s
        self._last_draw = -math.inf  # the first update is always drawn
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last_draw < self.min_interval_s:
            return
        self._last_draw = now
        self.stream.write("\r" + format_progress(progress, self.width) + "\x1b[K")  # erase the rest
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line the bar was drawn on, so that what follows starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def format_progress(progress: Progress, width: int = 24) -> str:
    """`[#######.....]  1234/5000  24.7%  812.3 img/s  ETA 4s  errors 2`."""
    if progress.total:
        fraction = min(1.0, progress.done / progress.total)
        filled = round(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        head = f"[{bar}] {progress.done}/{progress.total} {100 * fraction:5.1f}%"
    else:
        head = f"{progress.done}/?"
    eta = "?" if progress.eta_s is None else format_duration(progress.eta_s)
    return f"{head}  {progress.rate:.1f} img/s  ETA {eta}  errors {progress.failed}"


def format_summary(summary: ScoreSummary) -> str:
    """The line printed when a run ends."""
    text = (
        f"scored {summary.scored}, failed {summary.failed}, skipped {summary.skipped} already in "
        f"{summary.output}; {format_duration(summary.elapsed_s)}, {summary.images_per_s:.1f} images/s"
    )
    if summary.failed_before:
        text += f"; {summary.failed_before} of the skipped rows are errors from an earlier run"
    return text


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
