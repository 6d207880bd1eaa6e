"""One runner for many independent jobs: in this process, or ``workers`` processes at a time.

Every command that fans out uses it, each with its own failure rule, chosen by the caller:

- ``"record"``: a job that raises a :class:`~starmd.errors.StarmdError` (bad input, a failed
  simulation) is recorded and the others run on; any other exception stops the run. Lists of
  proteins (``generate``/``simulate`` on a folder or CSV) use this: one bad protein does not
  stop the others, the command ends with one line naming every failure.
- ``"raise"``: the first failure cancels the jobs not yet started and is raised once the
  running ones have finished. The replicas of one ``simulate`` run and the proteins of one
  ``evaluate`` run use this.

Worker processes are started with ``spawn`` (safe with torch and OpenMM threads), so ``task``
must be a picklable top-level function (a :func:`functools.partial` of one) when ``workers > 1``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Literal, TypeVar

from starmd.errors import StarmdError, StarmdInputError

Job = TypeVar("Job")
FailureRule = Literal["record", "raise"]
OnDone = Callable[[Any, Any, "str | None"], None]


def run_jobs(
    task: Callable[[Job], Any],
    jobs: Sequence[Job],
    workers: int = 1,
    *,
    on_failure: FailureRule,
    on_done: OnDone | None = None,
    poll: Callable[[], None] | None = None,
    poll_s: float = 0.5,
) -> list[tuple[Job, str]]:
    """Run ``task(job)`` for every job, ``workers`` at a time (processes when > 1 and there is
    more than one job).

    Args:
        on_failure: ``"record"`` or ``"raise"``, see the module docstring.
        on_done: ``on_done(job, result, error)`` as each job finishes (``error``: the recorded
            message, else None).
        poll: called about every ``poll_s`` seconds while workers run, and once at the end
            (e.g. to drain a queue of progress events).

    Returns:
        ``(job, message)`` of every recorded failure, in completion order (empty when all
        succeeded; always empty under ``"raise"``).
    """
    if workers < 1:
        raise StarmdInputError(f"--workers {workers}: need at least 1")
    if on_failure not in ("record", "raise"):
        raise ValueError(f"on_failure must be 'record' or 'raise', got {on_failure!r}")
    failures: list[tuple[Job, str]] = []

    def finish(job: Job, call: Callable[[], Any]) -> None:
        try:
            result = call()
        except StarmdError as err:
            if on_failure == "raise":
                raise
            failures.append((job, str(err)))
            if on_done is not None:
                on_done(job, None, str(err))
            return
        if on_done is not None:
            on_done(job, result, None)

    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            finish(job, lambda job=job: task(job))
        return failures
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, Job] = {pool.submit(task, job): job for job in jobs}
        try:
            while pending:
                timeout = poll_s if poll is not None else None
                done, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                if poll is not None:
                    poll()
                for future in done:
                    finish(pending.pop(future), future.result)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if poll is not None:
        poll()
    return failures
