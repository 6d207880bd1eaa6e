"""Project exceptions.

Every error a user can cause derives from :class:`StarmdError`; the CLI prints its message as
one line and exits non-zero (``--debug`` shows the traceback). Messages name the file and the
problem, e.g. ``"protein.pdb: residue 12 (HOH) is not a standard amino acid"``.
"""

from __future__ import annotations


class StarmdError(Exception):
    """Base class of errors that are the user's to fix (bad input, bad option, missing file)."""


class StarmdInputError(StarmdError):
    """An input file or value is malformed, unsupported or inconsistent."""


class StarmdCheckpointError(StarmdError):
    """A model checkpoint is missing, corrupt or incompatible with this version."""


class StarmdSimulationError(StarmdError):
    """A molecular-dynamics run failed (unfixable structure, NaN energy, exploding coordinates)."""


class StarmdBusyError(StarmdError):
    """Another starmd process is writing the same outputs (see :mod:`starmd.outputs`)."""


def located(path: object, problem: str) -> str:
    """Format an error message as ``"<path>: <problem>"``."""
    return f"{path}: {problem}"
