"""What `vitserve score` shows: a rich progress bar on a terminal (done/total, rate, ETA, errors), and
the one-line status and summary it prints when a run stops or ends."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TaskProgressColumn, TextColumn
from rich.progress import Progress as RichProgress

from vitserve.client.scoring import Progress, ScoreSummary


class ProgressBar:
    """A `progress` callback for score_folder that draws a rich progress bar on `stream`.

    Rate and ETA are this run's (images already in the output are done, not fast), so they come
    from the scorer's Progress rather than from rich's own speed estimate. Drawing is rich's: at most
    `refresh_per_second` redraws, whatever the rate of updates.
    """

    def __init__(self, stream: TextIO, *, refresh_per_second: float = 10) -> None:
        self._bar = RichProgress(
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} img/s  ETA {task.fields[eta]}  errors {task.fields[errors]}"),
            console=Console(file=stream),
            refresh_per_second=refresh_per_second,
            transient=False,
        )
        self._task: TaskID | None = None

    def __call__(self, progress: Progress) -> None:
        rate = f"{progress.rate:.1f}"
        eta = "?" if progress.eta_s is None else format_duration(progress.eta_s)
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("score", total=progress.total, rate=rate, eta=eta, errors=0)
        self._bar.update(
            self._task,
            total=progress.total,
            completed=progress.done,
            rate=rate,
            eta=eta,
            errors=progress.failed,
        )

    def close(self) -> None:
        """Draw the last state and leave the bar's line, so that what follows starts on a fresh one."""
        if self._task is not None:
            self._bar.stop()


def format_progress(progress: Progress) -> str:
    """`1234/5000 24.7%  812.3 img/s  ETA 4s  errors 2`: where a run stood, for its last message."""
    if progress.total:
        head = f"{progress.done}/{progress.total} {100 * min(1.0, progress.done / progress.total):.1f}%"
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
