"""What the commands share: the progress bar and log lines on stderr."""

from __future__ import annotations

import errno
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


RESUME_HINTS = {
    "generate": "rerun the same command with --resume to continue from the last committed chunk",
    "simulate": "rerun the same command to continue from the last saved state",
    "corpus": "rerun the same command to continue from the last saved states",
    "train": "rerun with --resume last to continue from the last saved checkpoint",
    "prepare": "rerun the same command (it starts afresh; no half-written dataset is kept)",
    "evaluate": "rerun the same command (it starts afresh)",
    "bench": "rerun the same command (it starts afresh)",
}
"""What a user does after a command stopped half-way (Ctrl-C, disk full, folder gone)."""


def resume_hint(argv: list[str]) -> str:
    """How to continue the command of ``argv`` after it stopped ("" for short commands)."""
    command = next((a for a in argv if not a.startswith("-")), "")
    return RESUME_HINTS.get(command, "")


PATH_ERRNOS = frozenset(
    {errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}
)
"""Errors of the path itself (not a folder, no permission, read-only): rerunning the same
command fails the same way, so their line says to fix the path instead of how to resume."""

PATH_HINT = "check the path and its permissions"


def os_error_line(exc: OSError, hint: str = "") -> str:
    """One line for a failed read or write: ``"<file>: <reason>[; <hint>]"``; an error of the
    path itself (:data:`PATH_ERRNOS`) gets :data:`PATH_HINT` in place of ``hint``."""
    if exc.errno in PATH_ERRNOS:
        hint = PATH_HINT
    reason = exc.strerror or str(exc) or type(exc).__name__
    reason = reason[:1].lower() + reason[1:]
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{reason}" + (f"; {hint}" if hint else "")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (it may be replaced, e.g. by
    a test's capture, after the handler is made)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def log_to_stderr(
    logger_name: str, time_format: str = "%Y-%m-%d %H:%M:%S", propagate: bool = False
) -> None:
    """Show the INFO lines of ``logger_name`` on stderr, time-stamped (progress of steps too
    long to pass in silence and too irregular for a bar); with ``propagate``, its records also
    reach the root logger's handlers (e.g. a test's log capture)."""
    logger = logging.getLogger(logger_name)
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", time_format))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = propagate
