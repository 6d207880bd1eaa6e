"""Finding, loading and atom-matching the trajectories that the evaluation compares.

Folder layouts (one protein at the top level, or one sub-folder per protein ``{dir}/{name}/``):

- generated: ``{name}.pdb`` (heavy-atom topology) + ``{name}_R{i}.xtc`` (i = 1..n) and an
  optional ``{name}.json`` sidecar with ``dt_ps``;
- reference MD (ATLAS layout): ``{name}.pdb`` + ``{name}_prod_R{i}_fit.xtc`` and an optional
  ``{name}.json`` with ``save_every_ps`` (ATLAS saves every 10 ps).

Coordinates are held in Angstrom as float32 arrays of shape ``(T, N, 3)``. Atoms are matched per
topology by ``(chain index, residue number, residue name, atom name)`` over heavy atoms, never by
index.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj as md
import numpy as np

from starmd.data.sources import ATLAS_REPLICA, atlas_replica_xtc
from starmd.errors import StarmdInputError, located
from starmd.structure.io import load_pdb_quietly
from starmd.structure.residue_constants import RESIDUE_ALIASES, RESTYPE_3_TO_INDEX

NM_TO_ANGSTROM = 10.0
ATLAS_DT_PS = 10.0

# Protonation / disulfide variants that name the same amino acid (one table for all of starmd).
_RESNAME_ALIASES = RESIDUE_ALIASES
_ATOM_ALIASES = {"OT1": "O", "OT2": "OXT", "O1": "O", "O2": "OXT"}

AtomKey = tuple[int, int, str, str]


@dataclass
class Ensemble:
    """Trajectories of one protein from one source, in Angstrom.

    Attributes:
        name: protein name.
        topology: heavy-atom mdtraj topology, ``N`` atoms.
        replicas: list of coordinate arrays ``(T_i, N, 3)`` float32, Angstrom.
        dt_ps: time between saved frames, ps.
        source: file or label the trajectories came from (for messages).
    """

    name: str
    topology: md.Topology
    replicas: list[np.ndarray]
    dt_ps: float
    source: str = ""
    replica_files: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return sum(len(r) for r in self.replicas)

    def concatenated(self) -> np.ndarray:
        """All replicas stacked along time, ``(sum T_i, N, 3)`` Angstrom."""
        return np.concatenate(self.replicas, axis=0)

    def subset(self, atom_indices: np.ndarray) -> Ensemble:
        """The same ensemble restricted to ``atom_indices`` (in this topology's order)."""
        return Ensemble(
            self.name,
            self.topology.subset(atom_indices),
            [r[:, atom_indices] for r in self.replicas],
            self.dt_ps,
            self.source,
            list(self.replica_files),
        )


@dataclass(frozen=True)
class ProteinFiles:
    """Paths of one protein's files in one folder."""

    name: str
    pdb: Path
    xtcs: tuple[Path, ...]
    sidecar: Path | None


def _replica_number(file_name: str, name: str, kind: str) -> int | None:
    """The replica of ``file_name`` if it is one of protein ``name``'s trajectories in the
    ``kind`` layout (reference: ATLAS ``{name}_prod_R{i}_fit.xtc``; generated:
    ``{name}_R{i}.xtc``), else None."""
    if kind == "reference":
        match = ATLAS_REPLICA.fullmatch(file_name)
        return int(match["replica"]) if match and match["name"] == name else None
    match = re.fullmatch(re.escape(name) + r"_R(\d+)\.xtc", file_name)
    return int(match.group(1)) if match else None


def _find_in_folder(folder: Path, name: str, kind: str) -> ProteinFiles | None:
    pdb = folder / f"{name}.pdb"
    if not pdb.is_file():
        return None
    replicas = {p: _replica_number(p.name, name, kind) for p in folder.iterdir()}
    xtcs = sorted((p for p, r in replicas.items() if r is not None), key=lambda p: replicas[p])
    sidecar = folder / f"{name}.json"
    return ProteinFiles(name, pdb, tuple(xtcs), sidecar if sidecar.is_file() else None)


def discover_proteins(folder: str | Path, kind: str = "generated") -> dict[str, ProteinFiles]:
    """Find the proteins of a folder in either layout.

    Args:
        folder: folder holding ``{name}.pdb`` + XTCs at its top level, or one sub-folder per
            protein.
        kind: ``"generated"`` (``{name}_R{i}.xtc``) or ``"reference"``
            (``{name}_prod_R{i}_fit.xtc``).

    Returns:
        protein name -> files, sorted by name; only proteins with at least one trajectory.

    Raises:
        StarmdInputError: the folder does not exist or holds no protein.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StarmdInputError(located(folder, f"{kind} folder does not exist"))
    found: dict[str, ProteinFiles] = {}
    candidates = [(folder, p.stem) for p in folder.glob("*.pdb")]
    candidates += [(sub, sub.name) for sub in folder.iterdir() if sub.is_dir()]
    for where, name in candidates:
        files = _find_in_folder(where, name, kind)
        if files is not None and files.xtcs:
            found[name] = files
    if not found:
        expected = atlas_replica_xtc("{name}", 1) if kind == "reference" else "{name}_R1.xtc"
        raise StarmdInputError(
            located(folder, f"no {kind} trajectories found (expected {{name}}.pdb + {expected})")
        )
    return dict(sorted(found.items()))


def _is_amino_acid(residue) -> bool:
    """Standard residues and their variants (mdtraj's ``is_protein`` misses e.g. HID)."""
    name = residue.name.upper()
    return residue.is_protein or RESIDUE_ALIASES.get(name, name) in RESTYPE_3_TO_INDEX


def _read_structure(pdb: Path) -> tuple[md.Trajectory, np.ndarray]:
    try:
        structure = load_pdb_quietly(pdb, standard_names=False)
    except Exception as err:  # mdtraj raises many types for malformed files
        raise StarmdInputError(located(pdb, f"cannot read PDB ({err})")) from err
    heavy = np.array(
        [
            a.index
            for a in structure.topology.atoms
            if _is_amino_acid(a.residue) and (a.element is None or a.element.symbol != "H")
        ],
        dtype=int,
    )
    if heavy.size == 0:
        raise StarmdInputError(located(pdb, "no protein heavy atoms"))
    return structure, heavy


def load_heavy_topology(pdb: str | Path) -> tuple[md.Topology, np.ndarray]:
    """Heavy-atom protein topology and coordinates of a PDB.

    Returns:
        (topology, coordinates ``(N, 3)`` Angstrom float32).
    """
    structure, heavy = _read_structure(Path(pdb))
    structure = structure.atom_slice(heavy)
    return structure.topology, (structure.xyz[0] * NM_TO_ANGSTROM).astype(np.float32)


def _dt_from_sidecar(sidecar: Path | None, key: str) -> float | None:
    if sidecar is None:
        return None
    try:
        value = json.loads(sidecar.read_text()).get(key)
    except (json.JSONDecodeError, AttributeError) as err:
        raise StarmdInputError(located(sidecar, f"not a JSON object ({err})")) from err
    return float(value) if value is not None else None


def load_ensemble(files: ProteinFiles, kind: str = "generated") -> Ensemble:
    """Load every replica of a protein (heavy atoms, Angstrom) and its time step.

    The time step comes from the XTC time stamps (ps) when they advance, else from the sidecar
    (``dt_ps`` for generated, ``save_every_ps`` for reference), else 10 ps for the reference
    (ATLAS) and an error for generated output.

    A generated replica whose first frame is stamped t = 0 and whose stamps then advance starts
    with the structure it was generated from (``starmd generate`` writes the input as frame 0):
    that frame is not model output and is left out, so every generated frame scored is at
    t >= dt, as the reference MD's saved frames are.

    Raises:
        StarmdInputError: unreadable files, atom counts that disagree with the PDB, or an
            unknown time step.
    """
    structure, heavy = _read_structure(files.pdb)
    topology, n_pdb_atoms = structure.topology.subset(heavy), structure.n_atoms
    replicas: list[np.ndarray] = []
    dts: list[float] = []
    for xtc in files.xtcs:
        try:
            traj = md.load_xtc(str(xtc), top=structure.topology)
        except Exception as err:
            n_xtc = _xtc_atom_count(xtc)
            if n_xtc is not None and n_xtc != n_pdb_atoms:
                problem = f"has {n_xtc} atoms but {files.pdb.name} has {n_pdb_atoms}"
            else:
                problem = f"cannot read XTC ({err})"
            raise StarmdInputError(located(xtc, problem)) from err
        advancing = traj.n_frames > 1 and traj.time[1] > traj.time[0]
        if advancing:
            dts.append(float(np.median(np.diff(traj.time))))
        first = 1 if kind == "generated" and advancing and traj.time[0] == 0 else 0
        replicas.append((traj.xyz[first:, heavy] * NM_TO_ANGSTROM).astype(np.float32))
    key = "save_every_ps" if kind == "reference" else "dt_ps"
    dt = _dt_from_sidecar(files.sidecar, key)
    if dt is None and dts:
        dt = dts[0]
    if dt is None and kind == "reference":
        dt = ATLAS_DT_PS
    if dt is None or dt <= 0:
        raise StarmdInputError(
            located(files.xtcs[0], f"unknown time step: no XTC time stamps and no '{key}' sidecar")
        )
    return Ensemble(
        files.name, topology, replicas, dt, str(files.pdb.parent), [str(p) for p in files.xtcs]
    )


def _xtc_atom_count(xtc: Path) -> int | None:
    try:
        with md.formats.XTCTrajectoryFile(str(xtc)) as handle:
            xyz, *_ = handle.read(n_frames=1)
        return int(xyz.shape[1])
    except Exception:
        return None


def atom_keys(topology: md.Topology) -> list[AtomKey]:
    """Matching key of each atom: (chain index, residue number, residue name, atom name)."""
    return [
        (
            a.residue.chain.index,
            a.residue.resSeq,
            _RESNAME_ALIASES.get(a.residue.name, a.residue.name),
            _ATOM_ALIASES.get(a.name, a.name),
        )
        for a in topology.atoms
    ]


def _residue_names(topology: md.Topology) -> dict[tuple[int, int], str]:
    return {
        (r.chain.index, r.resSeq): _RESNAME_ALIASES.get(r.name, r.name) for r in topology.residues
    }


def match_atoms(
    topology: md.Topology, reference: md.Topology, label: str = "generated"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the heavy atoms two topologies share, in the reference's order.

    Args:
        topology: topology to evaluate (e.g. generated; may hold fewer atoms, e.g. backbone).
        reference: reference topology.
        label: name of ``topology`` in error messages (a file path).

    Returns:
        (indices into ``topology``, indices into ``reference``), same length, paired.

    Raises:
        StarmdInputError: the proteins differ (a residue number carries different amino acids,
            or the topology has residues the reference lacks), or no CA atoms are shared.
    """
    own, ref = _residue_names(topology), _residue_names(reference)
    for key, name in own.items():
        if key not in ref:
            raise StarmdInputError(
                located(label, f"residue {name}{key[1]} (chain {key[0]}) is not in the reference")
            )
        if ref[key] != name:
            raise StarmdInputError(
                located(
                    label,
                    f"sequence differs from the reference at chain {key[0]} residue {key[1]}: "
                    f"{name} vs {ref[key]}",
                )
            )
    index_of = {key: i for i, key in enumerate(atom_keys(topology))}
    own_idx, ref_idx = [], []
    for j, key in enumerate(atom_keys(reference)):
        i = index_of.get(key)
        if i is not None:
            own_idx.append(i)
            ref_idx.append(j)
    own_idx_arr, ref_idx_arr = np.array(own_idx, dtype=int), np.array(ref_idx, dtype=int)
    n_ca = sum(1 for j in ref_idx if reference.atom(j).name == "CA")
    if n_ca < 3:
        raise StarmdInputError(located(label, "shares fewer than 3 CA atoms with the reference"))
    return own_idx_arr, ref_idx_arr
