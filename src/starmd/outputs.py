"""What every long command does with its output folder: one writer at a time, and write
failures named by file.

- :func:`try_lock` / :func:`output_lock`: an exclusive advisory lock (``flock``) on a lock file
  in the output folder, held for the whole run. A second run into the same outputs is refused
  at once with one line naming the lock file and the holder's process id. The operating system
  releases the lock when its holder dies, so a lock file left behind by a killed run is stale
  by construction and never blocks the rerun. (``flock`` is local: on NFS it may not exclude a
  run on another host.)
- :func:`locked_by`: the same, as a decorator of a command's function, for the lock file its
  arguments name.
- :func:`naming_file`: an ``OSError`` raised by a bare ``write`` (disk full, I/O error) carries
  no file name; this sets it, so that the command line's one error line can name the file.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from starmd.errors import StarmdBusyError, located

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``path`` (created with its folder, removed on exit,
    and the folder too if the lock created it and the run left it empty: a run refused for its
    input leaves nothing behind).

    Yields ``False`` without waiting when another process holds it. The holder's process id is
    written into the file (for the message of the refused one).
    """
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            yield False
            return
        # The holder before us may have removed the file between our open and our lock: then
        # we hold a lock on a file nobody else can find, and must lock the current one instead.
        if _same_file(handle, path):
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield True
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        if created:
            with suppress(OSError):  # not empty, or already gone: leave it
                path.parent.rmdir()


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def holder_pid(path: Path) -> str:
    """The process id written in a lock file ("?" when unreadable)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


@contextmanager
def output_lock(path: str | Path, command: str) -> Iterator[None]:
    """Run the body holding the lock file ``path``.

    Raises:
        StarmdBusyError: another process holds it (``command`` names what it is running).
    """
    path = Path(path)
    with try_lock(path) as acquired:
        if not acquired:
            raise StarmdBusyError(
                located(
                    path,
                    f"another `starmd {command}` (pid {holder_pid(path)}) is writing these "
                    "outputs; wait for it to end or choose another output folder",
                )
            )
        yield


def locked_by(lock_file: Callable[[dict[str, Any]], Path], command: str) -> Callable[[F], F]:
    """Decorate a command's function to run holding :func:`output_lock` on the lock file
    ``lock_file(arguments)`` names (``arguments``: the call's arguments by parameter name,
    defaults applied)."""

    def decorate(run: F) -> F:
        signature = inspect.signature(run)

        @functools.wraps(run)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with output_lock(lock_file(bound.arguments), command):
                return run(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate


def naming_file(exc: OSError, path: str | Path) -> OSError:
    """Set ``exc.filename`` to ``path`` when the error came without one (a failed ``write``:
    disk full, I/O error, quota); returns ``exc`` for ``raise``. An error without an errno
    (``OSError("message")``) is left as it is: a file name would replace its message."""
    if exc.filename is None and exc.strerror is not None:
        exc.filename = str(path)
    return exc
