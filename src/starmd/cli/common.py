"""What the commands share: the progress bar and log lines on stderr."""

from __future__ import annotations

import logging
import sys


def progress_bar():
    """A rich progress bar on stderr (quiet when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (it may be replaced, e.g. by
    a test's capture, after the handler is made)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def log_to_stderr(logger_name: str, time_format: str = "%Y-%m-%d %H:%M:%S") -> None:
    """Show the INFO lines of ``logger_name`` on stderr, time-stamped (progress of steps too
    long to pass in silence and too irregular for a bar)."""
    logger = logging.getLogger(logger_name)
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", time_format))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
