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
from typing import Any

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
            total_ns = event.frames_total * event.save_every_ps / 1000.0
            eta_h = (
                (total_ns - event.simulated_ns) / event.ns_per_day * 24.0
                if event.ns_per_day > 0
                else float("nan")
            )
            log.info(
                "%s R%d: %d/%d frames, %.3f/%.3f ns, %.1f ns/day, ETA %.2f h",
                event.name,
                event.replica,
                event.frames_done,
                event.frames_total,
                event.simulated_ns,
                total_ns,
                event.ns_per_day,
                eta_h,
            )


def run_jobs(jobs: Sequence[ReplicaJob], workers: int = 1, show: bool = True) -> None:
    """Run every replica job, ``workers`` at a time in separate processes (1: in-process).

    The first failing replica's exception is raised after the others were cancelled or
    finished (:func:`starmd.workers.run_jobs`, rule ``"raise"``); completed chunks of every
    replica stay on disk.
    """
    with ProgressView(jobs, show) as view:
        if workers <= 1 or len(jobs) <= 1:
            run_in_workers(partial(run_replica, on_progress=view.update), jobs, on_failure="raise")
            return
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager:
            events = manager.Queue()
            run_in_workers(
                partial(_run_in_worker, events=events),
                jobs,
                workers,
                on_failure="raise",
                poll=lambda: _drain(events, view),
            )


def _run_in_worker(job: ReplicaJob, events: Any) -> None:
    run_replica(job, events.put)


def _drain(events: Any, view: ProgressView) -> None:
    while True:
        try:
            view.update(events.get_nowait())
        except queue.Empty:
            return
