"""Run replica jobs sequentially or in parallel processes, showing progress.

On a terminal each replica gets a rich progress bar (simulated ns, ns/day, ETA); otherwise
(a log file, a background corpus build) every chunk is reported as one log line.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from starmd.simulate import atlas
from starmd.simulate.replica import ReplicaJob, ReplicaProgress, run_replica
from starmd.workers import run_jobs as run_in_workers

log = logging.getLogger("starmd.simulate")


class ProgressView:
    """Shows :class:`ReplicaProgress` updates as rich bars or log lines."""

    def __init__(self, jobs: Sequence[ReplicaJob], show: bool) -> None:
        self._bars: Any = None
        self._tasks: dict[tuple[str, int], Any] = {}
        self._show = show
        if show and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[ns]:.3f}/{task.fields[total_ns]:.3f} ns"),
                TextColumn("{task.fields[speed]:.1f} ns/day"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            for job in jobs:
                total_ns = job.n_frames * job.save_every_ps / 1000.0
                self._tasks[(job.name, job.replica)] = self._bars.add_task(
                    f"{job.name} R{job.replica}",
                    total=job.n_frames,
                    ns=0.0,
                    total_ns=total_ns,
                    speed=0.0,
                )

    def __enter__(self) -> ProgressView:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def update(self, event: ReplicaProgress) -> None:
        """Record one progress event."""
        if self._bars is not None:
            self._bars.update(
                self._tasks[(event.name, event.replica)],
                completed=event.frames_done,
                ns=event.simulated_ns,
                speed=event.ns_per_day,
            )
        elif self._show:
            line = progress_line(event)
            if line is not None:
                log.info("%s", line)


def progress_line(event: ReplicaProgress) -> str | None:
    """One log line for a replica's progress, or None for a replica already past its target.

    A replica that a longer earlier build took past this build's target has nothing to do and
    is not logged (its "60/10 frames" with a negative ETA only cluttered the log); the ETA is
    "-" until a speed has been measured.
    """
    if event.frames_done > event.frames_total:
        return None
    total_ns = event.frames_total * event.save_every_ps / 1000.0
    eta = (
        f"{(total_ns - event.simulated_ns) / event.ns_per_day * 24.0:.2f} h"
        if event.ns_per_day > 0
        else "-"
    )
    return (
        f"{event.name} R{event.replica}: {event.frames_done}/{event.frames_total} frames, "
        f"{event.simulated_ns:.3f}/{total_ns:.3f} ns, {event.ns_per_day:.1f} ns/day, ETA {eta}"
    )


def run_jobs(jobs: Sequence[ReplicaJob], workers: int = 1, show: bool = True) -> None:
    """Run every replica job, ``workers`` at a time in separate processes (1: in-process).

    The first failing replica's exception is raised after the others were cancelled or
    finished (:func:`starmd.workers.run_jobs`, rule ``"raise"``); completed chunks of every
    replica stay on disk.
    """
    with ProgressView(jobs, show) as view:
        in_process = partial(run_replica, on_progress=view.update)
        pending = [job for job in jobs if not _finished(job)]
        if workers <= 1 or len(pending) <= 1:
            run_in_workers(in_process, jobs, on_failure="raise")
            return
        # replicas already at their length are only checked and reported: in this process,
        # not in a spawned one (each spawn imports OpenMM: seconds per replica, for every
        # protein of every stage of a resumed corpus build)
        run_in_workers(in_process, [job for job in jobs if job not in pending], on_failure="raise")
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager:
            events = manager.Queue()
            run_in_workers(
                partial(_run_in_worker, events=events),
                pending,
                workers,
                on_failure="raise",
                poll=lambda: _drain(events, view),
            )


def _finished(job: ReplicaJob) -> bool:
    """Whether the replica's progress record says it already has ``job.n_frames`` frames
    (:func:`run_replica` checks the record and its files again before trusting it)."""
    record = atlas.read_json(atlas.replica_progress_json(Path(job.out_dir), job.name, job.replica))
    done = None if record is None else record.get("frames_done")
    return isinstance(done, int) and done >= job.n_frames  # anything else: run_replica judges


def _run_in_worker(job: ReplicaJob, events: Any) -> None:
    run_replica(job, events.put)


def _drain(events: Any, view: ProgressView) -> None:
    while True:
        try:
            view.update(events.get_nowait())
        except queue.Empty:
            return
