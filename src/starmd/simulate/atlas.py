"""The ATLAS on-disk layout written by :func:`starmd.simulate.simulate`, and its resume files.

One folder per protein ``name``::

    {name}.pdb                 heavy-atom protein topology (real residue names and numbers)
    {name}_prod_R{i}_fit.xtc   replica i (from 1): protein heavy atoms, CA-superposed on
                               {name}.pdb, one frame every save interval, time in ps
    {name}.json                settings and per-replica results (frames, seeds, ns/day, ...)
    state/{name}_setup.json    how the system was built (protocol, input checksum)
    state/{name}_system.xml.gz serialized openmm.System (portable, platform-independent)
    state/{name}_full.pdb      minimized full system (with hydrogens, and solvent if explicit)
    state/{name}_R{i}.xml      portable OpenMM State (positions, velocities, box, time)
    state/{name}_R{i}.json     replica progress: frames and XTC bytes that match the state
    state/{name}_setup.lock    present while a process sets the system up (flock)
    state/{name}_R{i}.lock     present while a process runs the replica (flock)

A replica's XTC is only ever appended whole chunks of frames; the progress file records its
byte length at the last saved state, so a run killed between appending and saving is repaired
by truncating back to that length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from starmd.data.sources import atlas_replica_xtc
from starmd.errors import StarmdInputError, located


def topology_pdb(out_dir: Path, name: str) -> Path:
    """Path of the heavy-atom topology PDB."""
    return out_dir / f"{name}.pdb"


def replica_xtc(out_dir: Path, name: str, replica: int) -> Path:
    """Path of replica ``replica``'s (1-based) fitted trajectory."""
    return out_dir / atlas_replica_xtc(name, replica)


def metadata_json(out_dir: Path, name: str) -> Path:
    """Path of the run's metadata file."""
    return out_dir / f"{name}.json"


def state_dir(out_dir: Path) -> Path:
    """Folder of the resume files."""
    return out_dir / "state"


def setup_json(out_dir: Path, name: str) -> Path:
    """Path of the system-setup record."""
    return state_dir(out_dir) / f"{name}_setup.json"


def system_xml(out_dir: Path, name: str) -> Path:
    """Path of the serialized ``openmm.System``."""
    return state_dir(out_dir) / f"{name}_system.xml.gz"


def full_pdb(out_dir: Path, name: str) -> Path:
    """Path of the minimized full-atom structure (topology of the saved states)."""
    return state_dir(out_dir) / f"{name}_full.pdb"


def replica_state_xml(out_dir: Path, name: str, replica: int) -> Path:
    """Path of a replica's portable OpenMM state."""
    return state_dir(out_dir) / f"{name}_R{replica}.xml"


def replica_progress_json(out_dir: Path, name: str, replica: int) -> Path:
    """Path of a replica's progress record."""
    return state_dir(out_dir) / f"{name}_R{replica}.json"


def setup_lock(out_dir: Path, name: str) -> Path:
    """Path of the lock file held while a process sets the system up (or checks it is)."""
    return state_dir(out_dir) / f"{name}_setup.lock"


def replica_lock(out_dir: Path, name: str, replica: int) -> Path:
    """Path of the lock file held while a process runs the replica."""
    return state_dir(out_dir) / f"{name}_R{replica}.lock"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically write ``data`` as indented JSON."""
    from starmd.structure.io import write_atomically

    write_atomically(path, json.dumps(data, indent=2, sort_keys=False) + "\n", durable=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a JSON record, or ``None`` if it does not exist.

    Raises:
        StarmdInputError: the file is truncated or not a JSON object (named, nothing changed).
    """
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise StarmdInputError(located(path, f"corrupt record ({exc}); {CORRUPT_ADVICE}")) from exc
    return record


CORRUPT_ADVICE = "nothing was changed: restore it, or remove the run's files to start it afresh"


def truncate_to(path: Path, valid_length: int) -> None:
    """Cut ``path`` back to ``valid_length`` bytes (drop frames appended after the last state)."""
    if path.exists() and path.stat().st_size != valid_length:
        with open(path, "r+b") as handle:
            handle.truncate(valid_length)


def write_metadata(
    out_dir: Path,
    name: str,
    *,
    setup: dict[str, Any] | None = None,
    wall_s_this_call: float | None = None,
) -> dict[str, Any]:
    """Assemble ``{name}.json`` from the setup record and every replica's progress record."""
    setup = setup or read_json(setup_json(out_dir, name)) or {}
    proto = setup.get("protocol", {})
    replicas = []
    save_every_ps = None
    for path in sorted(state_dir(out_dir).glob(f"{name}_R*.json")):
        record = read_json(path)
        if record is None:
            continue
        save_every_ps = record["save_every_ps"]
        replicas.append(
            {
                "replica": record["replica"],
                "trajectory": replica_xtc(out_dir, name, record["replica"]).name,
                "seed": record["seed"],
                "frames": record["frames_done"],
                "simulated_ns": record["time_ps"] / 1000.0,
                "wall_s": round(record["wall_s"], 1),
                "ns_per_day": round(record["ns_per_day"], 2),
                "platform": record["platform"],
                "resumes": record["resumes"],
            }
        )
    replicas.sort(key=lambda r: r["replica"])
    speeds = [r["ns_per_day"] for r in replicas if r["ns_per_day"] > 0]
    metadata = {
        "name": name,
        "topology": topology_pdb(out_dir, name).name,
        "structure": setup.get("structure"),
        "structure_sha256": setup.get("structure_sha256"),
        "protocol": proto.get("name"),
        "force_field": proto.get("force_field"),
        "solvent": proto.get("solvent"),
        "nonbonded_cutoff_nm": proto.get("nonbonded_cutoff_nm"),
        "temperature_k": proto.get("temperature_k"),
        "step_fs": proto.get("step_fs"),
        "hydrogen_mass_amu": proto.get("hydrogen_mass_amu"),
        "friction_per_ps": proto.get("friction_per_ps"),
        "pressure_bar": proto.get("pressure_bar"),
        "save_every_ps": save_every_ps,
        "time_unit": "ps",
        "n_residues": setup.get("n_residues"),
        "n_atoms_system": setup.get("n_atoms_system"),
        "n_atoms_trajectory": setup.get("n_atoms_heavy_protein"),
        "openmm_version": setup.get("openmm_version"),
        "replicas": replicas,
        "total_simulated_ns": sum(r["simulated_ns"] for r in replicas),
        "total_wall_s": round(sum(r["wall_s"] for r in replicas), 1),
        "ns_per_day": round(float(np.mean(speeds)), 2) if speeds else None,
    }
    if wall_s_this_call is not None:
        metadata["wall_s_last_call"] = round(wall_s_this_call, 1)
    write_json(metadata_json(out_dir, name), metadata)
    return metadata
