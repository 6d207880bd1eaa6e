"""Finding MD trajectories on disk: the ATLAS layout, folders of proteins, explicit file pairs.

ATLAS layout (also what ``starmd simulate`` writes): a folder with ``{name}.pdb`` (the initial
structure and topology) and ``{name}_prod_R{i}_fit.xtc`` (replica i), optionally ``{name}.json``
with ``save_every_ps``. ATLAS saves a frame every 10 ps. Generic layout: ``{name}.pdb`` and any
``{name}*.xtc|dcd|trr|nc`` beside it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from starmd.errors import StarmdInputError, located

ATLAS_DT_PS = 10.0
TRAJECTORY_GLOBS = ("*.xtc", "*.dcd", "*.trr", "*.nc")
ATLAS_REPLICA = re.compile(r"^(?P<name>.+)_prod_R(?P<replica>\d+)_fit\.xtc$")
"""A replica's trajectory file name in the ATLAS layout (groups ``name``, ``replica``)."""
_GENERIC_REPLICA = re.compile(r"_R(?P<replica>\d+)$")


def atlas_replica_xtc(name: str, replica: int | str) -> str:
    """``{name}_prod_R{replica}_fit.xtc``: the file of replica ``replica`` (from 1) of protein
    ``name`` in the ATLAS layout; ``"*"`` for either part makes a glob. The one definition of
    the pattern (with :data:`ATLAS_REPLICA`), for every reader and writer of the layout."""
    return f"{name}_prod_R{replica}_fit.xtc"


@dataclass(frozen=True)
class TrajectorySource:
    """One replica of one protein: topology file, trajectory file, saved time step (ps or None
    when it must come from the file's time stamps)."""

    name: str
    replica: int
    topology: Path
    trajectory: Path
    dt_ps: float | None


def _sidecar_dt(folder: Path, name: str) -> float | None:
    sidecar = folder / f"{name}.json"
    if not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StarmdInputError(located(sidecar, f"unreadable metadata ({exc})")) from exc
    for key in ("save_every_ps", "dt_ps"):
        if key in meta:
            return float(meta[key])
    return None


def _sources_in_folder(folder: Path) -> list[TrajectorySource]:
    found = []
    for xtc in sorted(folder.glob(atlas_replica_xtc("*", "*"))):
        match = ATLAS_REPLICA.match(xtc.name)
        if match is None:
            continue
        name = match["name"]
        topology = folder / f"{name}.pdb"
        if not topology.exists():
            raise StarmdInputError(located(xtc, f"has no topology {topology.name} beside it"))
        dt = _sidecar_dt(folder, name) or ATLAS_DT_PS
        found.append(TrajectorySource(name, int(match["replica"]), topology, xtc, dt))
    if found:
        return found
    for topology in sorted(folder.glob("*.pdb")):
        name = topology.stem
        trajectories = sorted(
            p for pattern in TRAJECTORY_GLOBS for p in folder.glob(f"{name}{pattern}")
        )
        for i, traj in enumerate(trajectories, start=1):
            m = _GENERIC_REPLICA.search(traj.stem)
            replica = int(m["replica"]) if m else i
            found.append(TrajectorySource(name, replica, topology, traj, _sidecar_dt(folder, name)))
    return found


def discover(path: str | Path) -> list[TrajectorySource]:
    """All trajectories under ``path``: one protein folder, or a folder of protein folders.

    Raises:
        StarmdInputError: path missing, or no trajectory found.
    """
    path = Path(path)
    if not path.exists():
        raise StarmdInputError(located(path, "not found"))
    if not path.is_dir():
        raise StarmdInputError(
            located(path, "expected a folder (ATLAS layout: NAME.pdb + NAME_prod_R1_fit.xtc)")
        )
    sources = _sources_in_folder(path)
    if not sources:
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            sources.extend(_sources_in_folder(sub))
    if not sources:
        raise StarmdInputError(
            located(
                path,
                "no trajectories found (expected NAME.pdb with NAME_prod_R<i>_fit.xtc, or "
                "NAME.pdb with NAME*.xtc/.dcd, here or in sub-folders)",
            )
        )
    keys = [(s.name, s.replica) for s in sources]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise StarmdInputError(located(path, f"protein/replica found twice: {sorted(duplicates)}"))
    return sources
