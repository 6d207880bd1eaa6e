"""Fault injection for the fault matrix (docs/faults.md): a disk that fills up, a folder that
turns read-only, and the command line run in this process. The fixtures are registered by
``tests/conftest.py``; the ``test_*_faults.py`` files beside each command's tests use them.

The disk is simulated in Python: every file opened for writing under a chosen folder goes
through a wrapper that lets only ``free`` more bytes through, writes the part of a ``write``
that still fits (as a real full disk does) and then raises ``OSError(ENOSPC)``. This reaches
the project's writers (:mod:`starmd.structure.io`), pathlib, torch, zarr and fsspec, which all
open files through Python; writes made by C libraries on their own descriptors (OpenMM, the
XTC encoder's temporary file) are not limited, which is why the limited folder is the output
folder and not the temporary one. A real small file system needs privileges (a tmpfs in a user
namespace); a slow test of ``tests/sample/test_generate_faults.py`` uses one where allowed.
"""

from __future__ import annotations

import builtins
import errno
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from starmd.cli import main

_WRITE_MODES = set("wax+")


@dataclass
class Disk:
    """The simulated free space of one folder (bytes; None = unlimited)."""

    root: Path
    free: int | None
    error: int = errno.ENOSPC
    writes_refused: int = 0

    def holds(self, file) -> bool:
        if isinstance(file, int):
            return False
        path = Path(os.fsdecode(file)).absolute()
        return path == self.root or self.root in path.parents

    def take(self, wanted: int) -> int:
        """Bytes of a ``wanted``-byte write that still fit."""
        if self.free is None:
            return wanted
        granted = min(wanted, self.free)
        self.free -= granted
        return granted


class _LimitedFile:
    """A file opened for writing on a :class:`Disk`: writes past the free space fail."""

    def __init__(self, handle, disk: Disk):
        self._handle = handle
        self._disk = disk

    def write(self, data):
        granted = self._disk.take(len(data))
        if granted < len(data):
            self._handle.write(data[:granted])
            self._handle.flush()
            self._disk.writes_refused += 1
            raise OSError(self._disk.error, os.strerror(self._disk.error))
        return self._handle.write(data)

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._handle.__exit__(*exc_info)

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


@pytest.fixture
def disk(monkeypatch):
    """``disk(folder, free=bytes)`` limits the free space for files written under ``folder``;
    ``disk(folder, error=errno.EROFS)`` makes it refuse every file opened for writing (a
    read-only folder: the tests run as root here, whose writes ``chmod`` cannot stop). The
    returned :class:`Disk` can be changed (``free = None``: space freed)."""
    real_open = builtins.open
    disks: list[Disk] = []

    def limited_open(file, mode="r", *args, **kwargs):
        on = next((d for d in disks if d.holds(file)), None)
        if on is None or not (_WRITE_MODES & set(mode)):
            return real_open(file, mode, *args, **kwargs)
        if on.error != errno.ENOSPC:
            raise OSError(on.error, os.strerror(on.error), os.fsdecode(file))
        return _LimitedFile(real_open(file, mode, *args, **kwargs), on)

    monkeypatch.setattr(builtins, "open", limited_open)
    monkeypatch.setattr(io, "open", limited_open)

    def limit(folder: Path, free: int | None = 0, error: int = errno.ENOSPC) -> Disk:
        made = Disk(Path(folder).absolute(), free, error)
        disks.append(made)
        return made

    return limit


@dataclass
class Outcome:
    """What ``starmd ARGS`` did: exit status and what it printed."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def starmd(capsys):
    """``starmd(*args)`` runs the command line in this process and returns its
    :class:`Outcome` (exit status 0 when it returns normally)."""

    def run(*args: str) -> Outcome:
        # the command line's log handlers hold the stderr of the run that added them
        logging.getLogger("starmd.simulate").handlers.clear()
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def assert_one_error_line(outcome: Outcome, *fragments: str) -> str:
    """The run failed with exactly one error line (no traceback) containing ``fragments``."""
    assert outcome.code != 0, outcome
    errors = [line for line in outcome.error_lines if line.startswith("error:")]
    assert len(errors) == 1, outcome.err
    assert "Traceback" not in outcome.err, outcome.err
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]
    return errors[0]
