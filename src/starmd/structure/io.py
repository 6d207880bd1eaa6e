"""Reading and writing structures and trajectories through mdtraj (and OpenMM for mmCIF).

Everything that enters starmd passes :func:`protein_from_topology`, which strips solvent, ions,
ligands and hydrogens, maps residue-name variants, and refuses what cannot be modelled with a
one-line :class:`StarmdInputError` naming the file and the problem. Coordinates leave this module
in Angstrom (mdtraj uses nanometres).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from starmd.errors import StarmdInputError, located
from starmd.outputs import naming_file
from starmd.structure import residue_constants as rc
from starmd.structure.protein import CHAIN_BREAK_CA_CA, Protein

NM_TO_ANGSTROM = 10.0
STRUCTURE_SUFFIXES = {".pdb", ".cif", ".mmcif", ".pdbx", ".gro", ".h5", ".pqr"}
TRAJECTORY_SUFFIXES = {".xtc", ".dcd", ".trr", ".nc", ".h5", ".pdb", ".netcdf", ".xyz"}

_WATER_AND_IONS = {
    "HOH", "WAT", "SOL", "TIP3", "TIP4", "TIP5", "T3P", "SPC", "NA", "CL", "K", "MG", "CA", "ZN",
    "Na+", "Cl-", "K+", "NA+", "CL-", "SOD", "CLA", "POT", "CAL",
}  # fmt: skip


def _mdtraj():
    import mdtraj

    return mdtraj


def load_topology_frame(path: str | Path):
    """First model of a structure file as an ``mdtraj.Trajectory`` (PDB, mmCIF, GRO, ...)."""
    md = _mdtraj()
    path = Path(path)
    if not path.exists():
        raise StarmdInputError(located(path, "file not found"))
    if path.is_dir():
        raise StarmdInputError(located(path, "is a folder, expected a structure file"))
    suffix = path.suffix.lower()
    if suffix not in STRUCTURE_SUFFIXES:
        raise StarmdInputError(
            located(
                path,
                f"unsupported structure format {suffix or '(no extension)'!r}; "
                f"use one of {', '.join(sorted(STRUCTURE_SUFFIXES))}",
            )
        )
    try:
        if suffix in {".cif", ".mmcif", ".pdbx"}:
            return _load_mmcif(path)
        if suffix == ".pdb":
            traj = load_pdb_quietly(path, frame=0)
        else:
            traj = md.load_frame(str(path), 0)
    except StarmdInputError:
        raise
    except Exception as exc:  # mdtraj raises many types on malformed files
        raise StarmdInputError(
            located(path, f"cannot read as a structure ({_short(exc)})")
        ) from exc
    if traj.n_atoms == 0:
        raise StarmdInputError(located(path, "contains no atoms (not a structure file?)"))
    return traj


def load_pdb_quietly(path: str | Path, **kwargs):
    """``mdtraj.load_pdb`` without mdtraj's warnings about the file's records (dummy CRYST1
    unit cells are common in MD and NMR files; starmd uses no unit cell), which would only
    clutter the screen of every command that reads a PDB."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _mdtraj().load_pdb(str(path), **kwargs)


def _load_mmcif(path: Path):
    md = _mdtraj()
    from openmm.app import PDBxFile
    from openmm.unit import nanometer

    cif = PDBxFile(str(path))
    top = md.Topology.from_openmm(cif.topology)
    xyz = np.asarray(cif.getPositions(asNumpy=True, frame=0).value_in_unit(nanometer))
    return md.Trajectory(xyz[None], top)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def _canonical_residue(name: str) -> str | None:
    name = name.upper()
    name = rc.RESIDUE_ALIASES.get(name, name)
    return name if name in rc.RESTYPE_3_TO_INDEX else None


def _atom_slot(resname: str, atom_name: str) -> int | None:
    name = rc.ATOM_ALIASES.get(resname, {}).get(atom_name, atom_name)
    name = rc.ATOM_ALIASES["*"].get(name, name)
    if name == "OXT":
        return rc.OXT_SLOT
    names = rc.ATOM14_NAMES[resname]
    return names.index(name) if name in names else None


def _is_hydrogen(atom) -> bool:
    element = getattr(atom.element, "symbol", None)
    if element is not None:
        return element in {"H", "D"}
    return atom.name.upper().lstrip("0123456789").startswith("H")


def protein_from_topology(
    topology, path: str | Path, xyz_nm: np.ndarray, chains: Sequence[str] | None = None
) -> tuple[Protein, np.ndarray]:
    """Map an mdtraj topology onto starmd's residue layout.

    Args:
        topology: ``mdtraj.Topology``.
        path: the file it came from (for messages and the protein's name).
        xyz_nm: ``(n_atoms, 3)`` one frame in nm, used to detect chain breaks and bad values.
        chains: keep only these chain ids (default: all chains with protein).

    Returns:
        The :class:`Protein` and ``atom_index (L, 15)``: the topology atom index of each slot,
        -1 where absent.

    Raises:
        StarmdInputError: no protein, unknown residue inside a chain, missing backbone atoms,
            NaN/inf coordinates, unknown chain id.
    """
    path = Path(path)
    if not np.all(np.isfinite(xyz_nm)):
        bad = int(np.flatnonzero(~np.isfinite(xyz_nm).all(-1))[0])
        raise StarmdInputError(located(path, f"atom {bad + 1} has NaN/inf coordinates"))

    chain_labels = [_chain_label(c) for c in topology.chains]
    if chains:
        unknown = [c for c in chains if c not in chain_labels]
        if unknown:
            raise StarmdInputError(
                located(
                    path,
                    f"chain(s) {', '.join(unknown)} not found "
                    f"(has {list(dict.fromkeys(chain_labels))})",  # water may repeat a chain id
                )
            )

    aatype, chain_ids, numbers, rows = [], [], [], []
    for chain, label in zip(topology.chains, chain_labels, strict=True):
        if chains and label not in chains:
            continue
        for residue in chain.residues:
            canonical = _canonical_residue(residue.name)
            has_backbone = {"N", "CA", "C"} <= {a.name for a in residue.atoms}
            if canonical is None:
                if residue.name.upper() in _WATER_AND_IONS or residue.is_water or not has_backbone:
                    continue  # solvent, ion or ligand: not part of the model
                raise StarmdInputError(
                    located(
                        path,
                        f"residue {label}:{residue.name}{residue.resSeq} is not one of the 20 "
                        "standard amino acids (or a known variant); starmd cannot model it",
                    )
                )
            row = np.full(rc.ATOMS_PER_RESIDUE, -1, dtype=np.int64)
            for atom in residue.atoms:
                if _is_hydrogen(atom):
                    continue
                slot = _atom_slot(canonical, atom.name.upper())
                if slot is not None and row[slot] < 0:
                    row[slot] = atom.index
            missing = [a for a, s in zip(rc.BACKBONE_ATOMS, range(4), strict=True) if row[s] < 0]
            if missing:
                raise StarmdInputError(
                    located(
                        path,
                        f"residue {label}:{residue.name}{residue.resSeq} is missing backbone "
                        f"atom(s) {', '.join(missing)}",
                    )
                )
            aatype.append(rc.RESTYPE_3_TO_INDEX[canonical])
            chain_ids.append(label)
            numbers.append(residue.resSeq)
            rows.append(row)

    if not aatype:
        raise StarmdInputError(located(path, "contains no protein residues"))
    atom_index = np.stack(rows)
    ca = xyz_nm[atom_index[:, 1]] * NM_TO_ANGSTROM
    same_chain = np.array(chain_ids[1:]) == np.array(chain_ids[:-1])
    close = np.linalg.norm(ca[1:] - ca[:-1], axis=-1) < CHAIN_BREAK_CA_CA
    linked_prev = np.concatenate([[False], same_chain & close])
    protein = Protein(
        name=path.stem,
        aatype=np.array(aatype, dtype=np.int64),
        chain_ids=tuple(chain_ids),
        residue_numbers=np.array(numbers, dtype=np.int64),
        linked_prev=linked_prev,
        atom_mask=atom_index >= 0,
        source=str(path),
    )
    return protein, atom_index


def _chain_label(chain) -> str:
    chain_id = str(getattr(chain, "chain_id", None) or "").strip()
    return chain_id or chr(ord("A") + chain.index % 26)


def positions_from_xyz(xyz_nm: np.ndarray, atom_index: np.ndarray) -> np.ndarray:
    """``(T, n_atoms, 3)`` nm -> ``(T, L, 15, 3)`` Angstrom, atom15 layout (zeros where absent)."""
    safe = np.where(atom_index >= 0, atom_index, 0)
    positions = xyz_nm[:, safe] * NM_TO_ANGSTROM
    positions[:, atom_index < 0] = 0.0
    return positions.astype(np.float64)


def load_structure(
    path: str | Path, chains: Sequence[str] | None = None
) -> tuple[Protein, np.ndarray]:
    """Read the first model of a structure file.

    Returns:
        The :class:`Protein` and positions ``(L, 15, 3)`` in Angstrom (zero where absent).
    """
    traj = load_topology_frame(path)
    protein, atom_index = protein_from_topology(traj.topology, path, traj.xyz[0], chains)
    return protein, positions_from_xyz(traj.xyz, atom_index)[0]


def iter_trajectory(
    topology_path: str | Path,
    trajectory_path: str | Path,
    chunk: int = 1000,
    chains: Sequence[str] | None = None,
) -> Iterator[tuple[Protein, np.ndarray, np.ndarray]]:
    """Stream a trajectory in chunks without loading it whole.

    Yields:
        ``(protein, positions (t, L, 15, 3) Angstrom, time_ps (t,))`` per chunk.

    Raises:
        StarmdInputError: unreadable/empty/truncated trajectory, atom count not matching the
            topology, NaN coordinates.
    """
    md = _mdtraj()
    top_traj = load_topology_frame(topology_path)
    protein, atom_index = protein_from_topology(
        top_traj.topology, topology_path, top_traj.xyz[0], chains
    )
    trajectory_path = Path(trajectory_path)
    if not trajectory_path.exists():
        raise StarmdInputError(located(trajectory_path, "file not found"))
    if trajectory_path.stat().st_size == 0:
        raise StarmdInputError(located(trajectory_path, "is empty"))
    n_frames = 0
    try:
        for piece in md.iterload(str(trajectory_path), top=top_traj.topology, chunk=chunk):
            if not np.all(np.isfinite(piece.xyz)):
                raise StarmdInputError(located(trajectory_path, "contains NaN/inf coordinates"))
            n_frames += piece.n_frames
            yield protein, positions_from_xyz(piece.xyz, atom_index), np.asarray(piece.time)
    except StarmdInputError:
        raise
    except Exception as exc:
        raise StarmdInputError(
            located(
                trajectory_path,
                f"cannot read with topology {Path(topology_path).name} ({_short(exc)}); "
                "does the atom count match the topology?",
            )
        ) from exc
    if n_frames == 0:
        raise StarmdInputError(located(trajectory_path, "contains no frames"))


def build_topology(protein: Protein, atom_mask: np.ndarray):
    """An ``mdtraj.Topology`` with the atoms of ``atom_mask (L, 15)``, standard bonds added.

    Returns:
        ``(topology, slot_index (n_atoms, 2))``: the (residue, slot) of every topology atom.
    """
    md = _mdtraj()
    top = md.Topology()
    slots = []
    chain = None
    for i in range(protein.n_residues):
        if chain is None or protein.chain_starts[i]:
            chain = top.add_chain(chain_id=protein.chain_ids[i])
        resname = rc.RESTYPE_3[protein.aatype[i]]
        residue = top.add_residue(resname, chain, resSeq=int(protein.residue_numbers[i]))
        names = rc.ATOM14_NAMES[resname] + (None,) * (14 - len(rc.ATOM14_NAMES[resname])) + ("OXT",)
        for slot in np.flatnonzero(atom_mask[i]):
            name = names[slot]
            top.add_atom(name, md.element.get_by_symbol(rc.ELEMENTS[name[0]]), residue)
            slots.append((i, slot))
    top.create_standard_bonds()
    return top, np.array(slots, dtype=np.int64).reshape(-1, 2)


def to_mdtraj(
    protein: Protein,
    positions: np.ndarray,
    atom_mask: np.ndarray | None = None,
    time_ps: np.ndarray | None = None,
):
    """Positions ``(T, L, 15, 3)`` (Angstrom) -> ``mdtraj.Trajectory`` (nm) with a heavy-atom
    topology of real residue names, chain ids and residue numbers."""
    md = _mdtraj()
    positions = np.asarray(positions)
    if positions.ndim == 3:
        positions = positions[None]
    mask = protein.atom_mask if atom_mask is None else atom_mask
    top, slots = build_topology(protein, mask)
    xyz = positions[:, slots[:, 0], slots[:, 1]] / NM_TO_ANGSTROM
    return md.Trajectory(xyz.astype(np.float32), top, time=time_ps)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], object], durable: bool = False) -> Path:
    """Call ``write(tmp_path)`` then move the file into place, so a crash never leaves half a file.

    The one atomic writer of every starmd output. The temporary file is created beside the
    target (same file system) with the same suffix, so format detection by extension still
    works; the result gets the permissions of a normally created file (``0666`` minus the
    umask), not ``mkstemp``'s private ``0600``. ``durable`` forces the bytes to disk before the
    move (what a resumable run's state needs: after a power cut the move is only as good as the
    data behind it).

    A failure (disk full, read-only folder) removes the temporary file and leaves an existing
    ``path`` as it was; the error names ``path``, not the temporary file.
    """
    path = Path(path)
    temporary = f".{path.stem}."
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary, suffix=path.suffix)
        os.close(fd)
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; use the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            if Path(os.fsdecode(exc.filename or "")).name.startswith(temporary):
                exc.filename = None  # the user knows the target, not the temporary name
            raise naming_file(exc, path) from None
        raise
    return path


def write_atomically(path: str | Path, data: bytes | str, durable: bool = False) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` through :func:`atomic_write`."""
    payload = data.encode() if isinstance(data, str) else data
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(payload), durable=durable)


def append_bytes(path: str | Path, valid_length: int, payload: bytes) -> int:
    """Truncate ``path`` to ``valid_length`` bytes (dropping whatever an interrupted run wrote
    after its last commit), append ``payload`` and fsync; returns the new length in bytes.

    A write that fails part-way (disk full) is cut back to ``valid_length`` before the error
    is raised, so the file stays what it was: a readable trajectory up to its last commit.
    The error names ``path``. A file that lost committed bytes (deleted or cut while the run
    was writing) is an error, never padded.
    """
    path = Path(path)
    size = path.stat().st_size if path.exists() else None
    if size is None and valid_length > 0:
        raise FileNotFoundError(
            errno.ENOENT,
            f"{os.strerror(errno.ENOENT)}: its {valid_length} committed bytes are gone "
            "(removed while the run was writing?)",
            str(path),
        )
    if size is not None and size < valid_length:
        raise StarmdInputError(
            located(path, f"holds {size} bytes, fewer than the {valid_length} committed "
                    "(changed while the run was writing?)")
        )  # fmt: skip
    mode = "r+b" if size is not None else "w+b"
    try:
        with open(path, mode) as handle:
            handle.truncate(valid_length)
            handle.seek(valid_length)
            try:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                handle.truncate(valid_length)  # freeing space never needs space
                raise
    except OSError as exc:
        raise naming_file(exc, path) from None
    return valid_length + len(payload)


def xtc_bytes(xyz_nm: np.ndarray, time_ps: np.ndarray, steps: np.ndarray) -> bytes:
    """Frames ``(T, N, 3)`` (nm) with their time stamps ``(T,)`` (ps) and step numbers ``(T,)``
    encoded as XTC. XTC frames are self-contained, so these bytes appended to an XTC file make
    a valid, longer XTC: the one trajectory encoder of ``generate`` and ``simulate``."""
    from mdtraj.formats import XTCTrajectoryFile

    fd, tmp = tempfile.mkstemp(suffix=".xtc")
    os.close(fd)
    try:
        with XTCTrajectoryFile(tmp, "w") as handle:
            handle.write(
                np.asarray(xyz_nm, dtype=np.float32),
                time=np.asarray(time_ps, dtype=np.float32),
                step=np.asarray(steps, dtype=np.int32),
            )
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_structure(
    path: str | Path, protein: Protein, positions: np.ndarray, atom_mask: np.ndarray | None = None
) -> Path:
    """Write one structure (``(L, 15, 3)`` Angstrom) as PDB, atomically."""
    traj = to_mdtraj(protein, positions, atom_mask)
    return atomic_write(path, lambda tmp: traj.save_pdb(tmp))
