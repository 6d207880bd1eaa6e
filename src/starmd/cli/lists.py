"""Many proteins in one command: input lists, shards for job arrays, and local worker processes.

``starmd generate`` and ``starmd simulate`` accept, instead of one structure,

- a folder: every ``*.pdb``, ``*.cif``, ``*.mmcif``, ``*.ent`` file in it (sorted by name); or
- a CSV with columns ``name`` and ``structure`` (paths relative to the CSV's folder; other
  columns are ignored, so the corpus manifest works as is).

Each protein's output goes to ``OUT/{name}/``. ``--shard i/n`` keeps the proteins at positions
``i, i + n, i + 2n, ...`` (``i`` counts from 0, as ``$SLURM_ARRAY_TASK_ID`` does for
``--array=0-(n-1)``), so n array tasks together cover the list exactly once; ``--workers k`` runs
k proteins at a time on this machine (:func:`starmd.workers.run_jobs` with the ``"record"``
rule). A protein that fails does not stop the others; the command then ends with one error line
naming every failed protein (:func:`check_failures`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from starmd.errors import StarmdError, StarmdInputError, located

STRUCTURE_SUFFIXES = (".pdb", ".cif", ".mmcif", ".ent")


@dataclass(frozen=True)
class Job:
    """One protein of a list: its output name and input structure."""

    name: str
    structure: Path


def is_list(source: Path) -> bool:
    """True when ``source`` names many proteins (a folder or a CSV) rather than one file."""
    return source.is_dir() or source.suffix.lower() == ".csv"


def read_jobs(source: str | Path) -> list[Job]:
    """The proteins named by a folder of structures or a CSV (``name``, ``structure``).

    Raises:
        StarmdInputError: missing source, no structures, bad CSV, duplicate names, or a
            structure file that does not exist.
    """
    source = Path(source)
    if not source.exists():
        raise StarmdInputError(located(source, "not found"))
    if source.is_dir():
        files = sorted(
            p for p in source.iterdir() if p.is_file() and p.suffix.lower() in STRUCTURE_SUFFIXES
        )
        if not files:
            raise StarmdInputError(
                located(source, f"no structure files ({', '.join(STRUCTURE_SUFFIXES)}) in folder")
            )
        jobs = [Job(p.stem, p) for p in files]
    else:
        jobs = _read_csv(source)
    names = [j.name for j in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StarmdInputError(located(source, f"duplicate names: {', '.join(duplicates)}"))
    return jobs


def _read_csv(path: Path) -> list[Job]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StarmdInputError(located(path, f"unreadable CSV ({exc})")) from exc
    if not rows or not {"name", "structure"} <= set(rows[0]):
        raise StarmdInputError(located(path, "need a header with columns name,structure"))
    jobs = []
    for line, row in enumerate(rows, start=2):
        name, structure = (row.get("name") or "").strip(), (row.get("structure") or "").strip()
        if not name or not structure:
            raise StarmdInputError(located(path, f"line {line}: empty name or structure"))
        file = Path(structure) if Path(structure).is_absolute() else path.parent / structure
        if not file.is_file():
            raise StarmdInputError(located(path, f"line {line}: {file} not found"))
        jobs.append(Job(name, file))
    return jobs


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None -> ``(0, 1)`` (everything)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise StarmdInputError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise StarmdInputError(f"--shard {text}: need 0 <= i < n")
    return index, count


def shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """Every ``count``-th job starting at ``index`` (round-robin: shards differ by at most 1)."""
    return list(jobs[index::count])


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a SLURM allocation, taskset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or None where the system does not say."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def free_cpus(load: float | None) -> int:
    """CPUs of :func:`usable_cpus` not taken by a ``load`` (1-minute load average) of other busy
    processes, rounded, at least 0; all of them when the load is unknown (None)."""
    cpus = usable_cpus()
    return cpus if load is None else max(0, round(cpus - load))


def busy_cpu_warning(threads: int, load: float | None = None) -> str | None:
    """A warning when ``threads`` compute threads would share CPUs with other busy processes
    (1-minute load average vs :func:`usable_cpus`): torch's threads wait on each other at every
    operation, so a 2-thread rollout on 2 cores with one core taken ran ~100x slower (4.3 s vs
    0.04 s per frame). None when the machine looks free enough, or the load is unknown."""
    if load is None:
        load = load_average()
        if load is None:
            return None
    cpus = usable_cpus()
    free = free_cpus(load)
    if threads <= 1 or threads <= free:
        return None
    return (
        f"warning: {threads} threads but only ~{free} of {cpus} CPUs look free (load average "
        f"{load:.1f}); generation can be many times slower than with --threads {max(1, free)}"
    )


def check_failures(failures: Sequence[tuple[Job, str]], total: int) -> None:
    """Raise one :class:`StarmdError` naming every failed protein and its error (if any);
    ``failures`` as :func:`starmd.workers.run_jobs` returns them."""
    if failures:
        listed = "; ".join(f"{job.name}: {error}" for job, error in failures)
        raise StarmdError(f"{len(failures)} of {total} proteins failed: {listed}")
