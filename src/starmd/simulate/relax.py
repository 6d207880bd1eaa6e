"""MD-ready relaxation: a restrained OpenMM energy minimization of every frame of a trajectory.

The precedent is AlphaFold 2's Amber relax: hydrogens are added, the heavy atoms are held to
their input positions by harmonic restraints (``0.5 k d^2``, ``k`` = 10 kcal/mol/A^2) while the
force field (here the implicit-solvent protocols of :mod:`starmd.simulate.protocols`) removes
stretched bonds and clashes; if violations remain after a round, the restraints of the residues
involved are released and the frame is minimized again (at most ``max_rounds`` rounds). BioEmu's
side-chain relax follows the same idea with a short restrained MD; we only minimize.

Hydrogens come from PDBFixer once per trajectory, on the topology file (the template). For each
frame, every atom the input lacks (hydrogens, and heavy atoms PDBFixer adds such as a terminal
OXT) is placed from the template by its local frame: three bonded neighbours known in the input
fix a rigid frame in the template and in the frame, and the atom keeps its template coordinates
in that frame (ideal bond lengths and angles; the minimization then relaxes it). That costs a few
microseconds per frame, where OpenMM's ``Modeller.addHydrogens`` builds and minimizes a system.

The output has the input's topology and frame count, frame by frame (heavy atoms only unless
hydrogens are asked for, in which case a PDB topology with hydrogens is written beside the XTC),
and a JSON sidecar with the settings, the cost and per-frame results: energy before and after,
heavy-atom RMSD moved, rounds, and the violations (peptide bonds outside 1.2-1.5 A, heavy-atom
clashes) before and after. Every file is written atomically once all frames are done, so a
failed or interrupted run leaves nothing half-written; a frame that fails to minimize fails the
run, named in the error, never dropped.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from starmd.errors import StarmdInputError, StarmdSimulationError, located

KCAL_PER_KJ = 1.0 / 4.184
NM_PER_A = 0.1
PEPTIDE_RANGE_A = (1.2, 1.5)
"""A C(i)-N(i+1) bond outside this range (Angstrom) is a violation (MD: 1.34 +- 0.03 A)."""
CHUNK_FRAMES = 8
"""Frames per job handed to a worker (the unit of the progress bar)."""


@dataclass(frozen=True)
class RelaxSettings:
    """Settings of the relaxation (recorded in the sidecar).

    Attributes:
        protocol: an implicit-solvent protocol of :data:`starmd.simulate.protocols.PROTOCOLS`
            (``implicit``: amber99sb-ildn + OBC2; ``implicit-gbn2``: amber14 + GBn2).
        stiffness_kcal_mol_a2: harmonic restraint constant on heavy atoms, kcal/mol/A^2
            (energy ``0.5 k d^2``; AlphaFold's value is 10).
        tolerance_kj_mol_nm: minimizer convergence, root-mean-square force in kJ/mol/nm.
        max_iterations: minimizer iterations per round (0 = until converged), a bound on the
            cost of a badly broken frame.
        max_rounds: minimization rounds; after each but the last, residues still in violation
            lose their restraints and the minimization continues.
        hydrogens: keep the hydrogens in the output (a new PDB topology is written).
        platform: OpenMM platform (``CPU`` by default: many small minimizations in parallel
            processes use the cores better than one GPU context each).
        threads: CPU threads per worker process.
        workers: worker processes (frames are split among them in chunks).
    """

    protocol: str = "implicit"
    stiffness_kcal_mol_a2: float = 10.0
    tolerance_kj_mol_nm: float = 10.0
    max_iterations: int = 500
    max_rounds: int = 3
    hydrogens: bool = False
    platform: str = "CPU"
    threads: int = 1
    workers: int = 1

    @property
    def stiffness_kj_mol_nm2(self) -> float:
        """The restraint constant in OpenMM's units, kJ/mol/nm^2."""
        return self.stiffness_kcal_mol_a2 / KCAL_PER_KJ / NM_PER_A**2


@dataclass
class FrameResult:
    """What relaxing one frame did.

    Attributes:
        xyz_nm: ``(n_atoms, 3)`` relaxed positions of the full (hydrogenated) system, nm.
        energy_before_kj_mol, energy_after_kj_mol: force-field energy (restraints excluded) of
            the placed and of the relaxed frame, kJ/mol.
        rmsd_a: heavy-atom RMSD between the input and the relaxed frame (no fit), Angstrom.
        rounds: minimization rounds run.
        released_residues: residues whose restraints were released (0-based topology index).
        violations_before, violations_after: ``{"peptide": n, "clash": n}`` counts.
        wall_s: wall time of this frame, seconds.
        error: why the frame failed (None when it did not).
    """

    xyz_nm: np.ndarray | None
    energy_before_kj_mol: float = math.nan
    energy_after_kj_mol: float = math.nan
    rmsd_a: float = math.nan
    rounds: int = 0
    released_residues: list[int] = field(default_factory=list)
    violations_before: dict[str, int] = field(default_factory=dict)
    violations_after: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """The frame's entry in the sidecar (positions left out)."""
        out = asdict(self)
        del out["xyz_nm"]
        for key in ("energy_before_kj_mol", "energy_after_kj_mol", "rmsd_a", "wall_s"):
            out[key] = _finite_or_none(out[key], 4)
        return out


def _finite_or_none(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def check_openmm() -> None:
    """Raise a one-line :class:`StarmdInputError` if OpenMM or PDBFixer cannot be imported."""
    try:
        import openmm  # noqa: F401
        import openmm.app  # noqa: F401
        import pdbfixer  # noqa: F401
    except ImportError as err:
        raise StarmdInputError(
            f"relaxation needs OpenMM and PDBFixer, which cannot be imported here ({err}); "
            "install them (pip install openmm pdbfixer) or run without --relax"
        ) from None


class FrameRelaxer:
    """The OpenMM system of one protein, set up once, that relaxes its frames one at a time.

    Args:
        topology_path: PDB/PDBx topology of the trajectory (its coordinates are the template
            for the atoms the trajectory lacks).
        settings: the relaxation settings.

    Raises:
        StarmdInputError: PDBFixer or the force field cannot handle the protein, or an atom of
            the topology has no counterpart in PDBFixer's (e.g. water, ligands).
    """

    def __init__(self, topology_path: str | Path, settings: RelaxSettings):
        import openmm
        import openmm.unit as unit

        from starmd.simulate.fixing import fix_structure
        from starmd.simulate.platforms import select_platform
        from starmd.simulate.protocols import build_system, get_protocol
        from starmd.simulate.replica import first_line
        from starmd.structure.io import load_topology_frame

        self.path = Path(topology_path)
        self.settings = settings
        protocol = get_protocol(settings.protocol)
        if protocol.solvent != "implicit":
            raise StarmdInputError(
                f"--protocol {settings.protocol}: relax minimizes in implicit solvent; "
                "use implicit or implicit-gbn2"
            )
        self.input_topology = load_topology_frame(self.path).topology
        with _seeded_python_random(0):  # Modeller.addHydrogens starts hydrogens at random
            topology, positions = fix_structure(self.path)
        try:
            system, _, _ = build_system(protocol, topology, positions, rigid_hydrogens=False)
        except Exception as err:
            raise StarmdInputError(
                located(self.path, f"force field cannot parametrize it ({first_line(err)})")
            ) from None
        self.topology = topology
        self.input_index = _match_atoms(self.path, self.input_topology, topology)
        self.heavy = _heavy_input_atoms(self.input_topology)
        self.template_nm = np.asarray(positions.value_in_unit(unit.nanometer))
        self.placement = _plan_placement(self.path, topology, self.input_index)
        self.violation_plan = _plan_violations(self.input_topology)
        self.residue_of = np.array([a.residue.index for a in self.input_topology.atoms])
        for force in system.getForces():
            force.setForceGroup(0)
        self.restraint = _restraint_force(openmm, self.input_index[self.heavy])
        system.addForce(self.restraint)
        platform, properties = select_platform(settings.platform, settings.threads)
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)
        self._unit = unit
        self._openmm = openmm

    @property
    def n_atoms(self) -> int:
        """Atoms of the hydrogenated system."""
        return self.topology.getNumAtoms()

    def full_positions(self, frame_nm: np.ndarray) -> np.ndarray:
        """The hydrogenated system's positions ``(n_atoms, 3)`` nm for one input frame
        ``(n_input_atoms, 3)`` nm: input atoms copied, the others placed from the template."""
        full = np.zeros((self.n_atoms, 3))
        full[self.input_index] = frame_nm
        return self.placement.place(full, self.template_nm)

    def relax(self, frame_nm: np.ndarray) -> FrameResult:
        """Minimize one frame ``(n_input_atoms, 3)`` nm under the restraints; never raises for a
        frame that fails to minimize (the result carries the error)."""
        started = time.perf_counter()
        frame_nm = np.asarray(frame_nm, dtype=np.float64)
        result = FrameResult(xyz_nm=None)
        if not np.isfinite(frame_nm).all():
            result.error = "has NaN/inf coordinates"
            return result
        heavy_a = frame_nm[self.heavy] / NM_PER_A
        result.violations_before = self.violations(frame_nm / NM_PER_A)
        try:
            positions = self._minimize(frame_nm, result)
        except self._openmm.OpenMMException as err:
            result.error = f"minimization failed ({str(err).strip().splitlines()[0]})"
            positions = None
        if positions is not None:
            relaxed_a = positions[self.input_index] / NM_PER_A
            result.xyz_nm = positions
            result.rmsd_a = float(np.sqrt(((relaxed_a[self.heavy] - heavy_a) ** 2).sum(1).mean()))
            result.violations_after = self.violations(relaxed_a)
        result.wall_s = time.perf_counter() - started
        return result

    def _minimize(self, frame_nm: np.ndarray, result: FrameResult) -> np.ndarray | None:
        """Up to ``max_rounds`` restrained minimizations; fills ``result``'s energies and
        rounds; returns the relaxed positions (nm), or None (with ``result.error``)."""
        s = self.settings
        k = np.full(len(self.heavy), s.stiffness_kj_mol_nm2)
        self._set_restraints(frame_nm[self.heavy], k)
        self.context.setPositions(self.full_positions(frame_nm))
        result.energy_before_kj_mol = self._energy()
        released: set[int] = set()
        for round_ in range(1, s.max_rounds + 1):
            self._openmm.LocalEnergyMinimizer.minimize(
                self.context, s.tolerance_kj_mol_nm, s.max_iterations
            )
            result.rounds = round_
            state = self.context.getState(getPositions=True)
            positions = np.asarray(
                state.getPositions(asNumpy=True).value_in_unit(self._unit.nanometer)
            )
            energy = self._energy()
            if not (np.isfinite(positions).all() and math.isfinite(energy)):
                result.error = "energy is not finite after minimization"
                return None
            result.energy_after_kj_mol = energy
            bad = self.violating_residues(positions[self.input_index] / NM_PER_A)
            if not bad or round_ == s.max_rounds:
                break
            released |= bad  # a residue released before gets more iterations, free
            k[np.isin(self.residue_of[self.heavy], sorted(released))] = 0.0
            self._set_restraints(frame_nm[self.heavy], k)
        result.released_residues = sorted(released)
        return positions

    def _set_restraints(self, reference_nm: np.ndarray, k: np.ndarray) -> None:
        """Restrain the heavy atoms to ``reference_nm (H, 3)`` with constants ``k (H,)``."""
        for i, (atom, xyz, k_i) in enumerate(
            zip(self.input_index[self.heavy], reference_nm, k, strict=True)
        ):
            self.restraint.setParticleParameters(i, int(atom), [float(k_i), *map(float, xyz)])
        self.restraint.updateParametersInContext(self.context)

    def _energy(self) -> float:
        """Force-field potential energy without the restraints, kJ/mol."""
        state = self.context.getState(getEnergy=True, groups={0})
        return state.getPotentialEnergy().value_in_unit(self._unit.kilojoule_per_mole)

    def violations(self, frame_a: np.ndarray) -> dict[str, int]:
        """Counts of peptide bonds outside :data:`PEPTIDE_RANGE_A` and of heavy-atom clash
        pairs in one input frame ``(n_input_atoms, 3)`` Angstrom."""
        peptide, clash = _violations(frame_a, self.violation_plan)
        return {"peptide": len(peptide), "clash": len(clash)}

    def violating_residues(self, frame_a: np.ndarray) -> set[int]:
        """Residues (topology index) in a peptide-bond violation or a clash, ``frame_a``
        ``(n_input_atoms, 3)`` Angstrom."""
        peptide, clash = _violations(frame_a, self.violation_plan)
        atoms = np.concatenate([peptide.reshape(-1), clash.reshape(-1)]).astype(int)
        return {int(r) for r in self.residue_of[atoms]}


@contextlib.contextmanager
def _seeded_python_random(seed: int) -> Iterator[None]:
    """Seed Python's ``random`` for the block (OpenMM's hydrogen placement draws from it, so the
    template, and with it every relaxed frame, is reproducible), then restore its state."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _restraint_force(openmm: Any, atoms: np.ndarray) -> Any:
    """A harmonic position restraint ``0.5 k |x - x0|^2`` on ``atoms``, in force group 1 (so
    that reported energies leave it out); parameters set per frame."""
    force = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    for name in ("k", "x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    for atom in atoms:
        force.addParticle(int(atom), [0.0, 0.0, 0.0, 0.0])
    force.setForceGroup(1)
    return force


def _heavy_input_atoms(topology: Any) -> np.ndarray:
    """Indices of the non-hydrogen atoms of an mdtraj topology."""
    return np.array(
        [a.index for a in topology.atoms if a.element is None or a.element.symbol not in "HD"],
        dtype=int,
    )


def _match_atoms(path: Path, input_topology: Any, fixed_topology: Any) -> np.ndarray:
    """For every atom of the input (mdtraj) topology, its index in PDBFixer's (OpenMM)
    topology, matched by residue order and atom name; ``(n_input_atoms,)``."""
    fixed_residues = list(fixed_topology.residues())
    input_residues = list(input_topology.residues)
    if len(fixed_residues) != len(input_residues):
        extra = [r for r in input_residues if not r.is_protein]
        what = f"non-protein residue {extra[0]}" if extra else "residues PDBFixer could not keep"
        raise StarmdInputError(
            located(path, f"has {what}; relax handles protein-only trajectories")
        )
    index = np.full(input_topology.n_atoms, -1, dtype=int)
    for r_in, r_fix in zip(input_residues, fixed_residues, strict=True):
        by_name = {a.name: a.index for a in r_fix.atoms()}
        for atom in r_in.atoms:
            if atom.name not in by_name:
                raise StarmdInputError(
                    located(
                        path,
                        f"atom {atom.name} of residue {r_in} has no counterpart after PDBFixer "
                        f"({r_fix.name}{r_fix.id}); relax cannot map it",
                    )
                )
            index[atom.index] = by_name[atom.name]
    return index


@dataclass(frozen=True)
class _Placement:
    """How to place the atoms the input lacks: atom ``targets[i]`` sits at fixed coordinates
    in the frame of its anchors ``anchors[i] = (p, a, b)`` (origin ``p``, first axis towards
    ``a``, ``b`` in the first plane), taken from the template. Applied group by group, so
    that an atom placed earlier can anchor a later one."""

    groups: tuple[tuple[np.ndarray, np.ndarray], ...]  # (targets (M,), anchors (M, 3)) each

    def place(self, full_nm: np.ndarray, template_nm: np.ndarray) -> np.ndarray:
        """Fill the missing atoms of ``full_nm (n_atoms, 3)`` in place and return it."""
        for targets, anchors in self.groups:
            local = _to_local(template_nm[targets], *(template_nm[anchors[:, k]] for k in range(3)))
            full_nm[targets] = _from_local(local, *(full_nm[anchors[:, k]] for k in range(3)))
        return full_nm


def _local_axes(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Orthonormal axes ``(M, 3, 3)`` (rows) from points ``(M, 3)`` by Gram-Schmidt."""
    # A collapsed frame (coincident anchors) gives NaN axes: its minimization then fails and
    # is reported, so the warning would only repeat that.
    with np.errstate(invalid="ignore", divide="ignore"):
        e1 = a - p
        e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
        e2 = b - p
        e2 -= (e2 * e1).sum(-1, keepdims=True) * e1
        e2 /= np.linalg.norm(e2, axis=-1, keepdims=True)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def _to_local(x: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("mij,mj->mi", _local_axes(p, a, b), x - p)


def _from_local(local: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return p + np.einsum("mij,mi->mj", _local_axes(p, a, b), local)


def _plan_placement(path: Path, topology: Any, input_index: np.ndarray) -> _Placement:
    """Anchors for every atom of the hydrogenated topology that the input lacks, heavy atoms
    first, then in waves so that each atom's anchors are known when it is placed."""
    neighbours: dict[int, list[int]] = {a.index: [] for a in topology.atoms()}
    for bond in topology.bonds():
        i, j = bond[0].index, bond[1].index
        neighbours[i].append(j)
        neighbours[j].append(i)
    atoms = list(topology.atoms())
    known = set(int(i) for i in input_index)
    missing = [a.index for a in atoms if a.index not in known]
    missing.sort(key=lambda i: atoms[i].element is not None and atoms[i].element.symbol == "H")
    groups = []
    while missing:
        wave = [(i, _anchors(i, neighbours, known)) for i in missing]
        placed = [(i, anchors) for i, anchors in wave if anchors is not None]
        if not placed:
            atom = atoms[missing[0]]
            raise StarmdInputError(
                located(path, f"cannot place atom {atom.name} of {atom.residue} (no anchors)")
            )
        groups.append(
            (np.array([i for i, _ in placed]), np.array([anchors for _, anchors in placed]))
        )
        known |= {i for i, _ in placed}
        missing = [i for i in missing if i not in known]
    return _Placement(tuple(groups))


def _anchors(atom: int, neighbours: dict[int, list[int]], known: set[int]) -> tuple | None:
    """``(p, a, b)``: a known bonded neighbour ``p`` of ``atom``, a known neighbour ``a`` of
    ``p`` (not ``atom``) and a known neighbour ``b`` of ``a`` or of ``p``; None if there are
    none yet."""
    for p in neighbours[atom]:
        if p not in known:
            continue
        for a in neighbours[p]:
            if a == atom or a not in known:
                continue
            for b in neighbours[a] + neighbours[p]:
                if b not in (atom, p, a) and b in known:
                    return (p, a, b)
    return None


@dataclass(frozen=True)
class _ViolationPlan:
    """Atom indices of the violation checks (input topology, heavy atoms)."""

    peptide: np.ndarray  # (J, 2): C(i), N(i+1)
    heavy: np.ndarray  # (H,)
    residue: np.ndarray  # (H,) residue index of each heavy atom
    chain: np.ndarray  # (H,)
    number: np.ndarray  # (H,) residue number
    radius: np.ndarray  # (H,) Angstrom
    polar: np.ndarray  # (H,) bool
    sulfur_sg: np.ndarray  # (H,) bool


def _plan_violations(topology: Any) -> _ViolationPlan:
    """Peptide bonds (same chain, consecutive residue numbers) and per-atom clash data."""
    from starmd.structure.local_geometry import VDW_RADIUS_A

    residues = list(topology.residues)
    peptide = []
    for r1, r2 in zip(residues[:-1], residues[1:], strict=True):
        if r1.chain.index == r2.chain.index and r2.resSeq - r1.resSeq == 1:
            c = [a.index for a in r1.atoms if a.name == "C"]
            n = [a.index for a in r2.atoms if a.name == "N"]
            if c and n:
                peptide.append((c[0], n[0]))
    heavy = _heavy_input_atoms(topology)
    atoms = [topology.atom(int(i)) for i in heavy]
    elements = [a.element.symbol.upper() if a.element is not None else a.name[0] for a in atoms]
    return _ViolationPlan(
        peptide=np.array(peptide, dtype=int).reshape(-1, 2),
        heavy=heavy,
        residue=np.array([a.residue.index for a in atoms], dtype=int),
        chain=np.array([a.residue.chain.index for a in atoms], dtype=int),
        number=np.array([a.residue.resSeq for a in atoms], dtype=int),
        radius=np.array([VDW_RADIUS_A.get(e, 1.7) for e in elements]),
        polar=np.array([e in ("N", "O") for e in elements]),
        sulfur_sg=np.array([a.name == "SG" for a in atoms]),
    )


def _violations(frame_a: np.ndarray, plan: _ViolationPlan) -> tuple[np.ndarray, np.ndarray]:
    """Peptide bonds outside :data:`PEPTIDE_RANGE_A` ``(P, 2)`` and clashing heavy-atom pairs
    ``(Q, 2)`` (input atom indices) of one frame ``(n_atoms, 3)`` Angstrom.

    The clash rule is the evaluation's (:mod:`starmd.structure.local_geometry`): atoms of
    residues two or more apart, or in different chains, overlapping their Bondi radii by more
    than 0.4 A (0.7 A for two N/O atoms), disulfide SG pairs exempt; here per atom pair, since
    the relaxation needs to know which residues to release.
    """
    from scipy.spatial import cKDTree

    from starmd.structure.local_geometry import (
        CLASH_OVERLAP_A,
        CONTACT_SEARCH_A,
        POLAR_ALLOWANCE_A,
    )

    low, high = PEPTIDE_RANGE_A
    c_n = np.linalg.norm(frame_a[plan.peptide[:, 0]] - frame_a[plan.peptide[:, 1]], axis=1)
    peptide = plan.peptide[(c_n < low) | (c_n > high)]
    x = frame_a[plan.heavy]
    pairs = cKDTree(x).query_pairs(CONTACT_SEARCH_A, output_type="ndarray")
    if len(pairs) == 0:
        return peptide, np.zeros((0, 2), dtype=int)
    i, j = pairs[:, 0], pairs[:, 1]
    apart = (plan.chain[i] != plan.chain[j]) | (np.abs(plan.number[i] - plan.number[j]) >= 2)
    apart &= ~(plan.sulfur_sg[i] & plan.sulfur_sg[j])
    allowance = np.where(plan.polar[i] & plan.polar[j], POLAR_ALLOWANCE_A, 0.0)
    overlap = plan.radius[i] + plan.radius[j] - allowance - np.linalg.norm(x[i] - x[j], axis=1)
    clash = pairs[apart & (overlap > CLASH_OVERLAP_A)]
    return peptide, plan.heavy[clash]


def _relaxer(topology_path: str, settings: RelaxSettings) -> FrameRelaxer:
    """One relaxer per protein and settings in each process (worker processes keep theirs
    across the chunks they are given); a topology file rewritten since gets a new one."""
    stat = Path(topology_path).stat()
    return _cached_relaxer(topology_path, stat.st_mtime_ns, stat.st_size, settings)


@cache
def _cached_relaxer(
    topology_path: str, mtime_ns: int, size: int, settings: RelaxSettings
) -> FrameRelaxer:
    return FrameRelaxer(topology_path, settings)


@dataclass(frozen=True)
class _Chunk:
    """Frames ``first, first + 1, ...`` of a trajectory, for one worker call (picklable)."""

    first: int
    xyz_nm: np.ndarray


def _relax_chunk(chunk: _Chunk, topology_path: str, settings: RelaxSettings) -> list[FrameResult]:
    """Relax the frames of one chunk (the task of :func:`starmd.workers.run_jobs`)."""
    relaxer = _relaxer(topology_path, settings)
    return [relaxer.relax(frame) for frame in chunk.xyz_nm]


def relax_trajectory(
    trajectory: str | Path,
    topology: str | Path,
    out: str | Path,
    settings: RelaxSettings = RelaxSettings(),
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Relax every frame of a trajectory and write the relaxed one.

    Args:
        trajectory: the input trajectory (any format mdtraj reads with ``topology``).
        topology: its PDB/PDBx topology; PDBFixer adds hydrogens to it.
        out: the relaxed trajectory, XTC (same atoms and frame count as the input; with
            ``settings.hydrogens``, the hydrogenated system's atoms and ``out`` with suffix
            ``.pdb`` as its topology). The sidecar goes to ``out`` with suffix ``.json``.
        settings: restraint, minimizer and parallelism settings.
        overwrite: replace an existing ``out``.
        progress: ``progress(frames_done, frames_total)`` after every chunk of frames.

    Returns:
        The sidecar: settings, timings (``seconds_per_frame`` of one worker, ``setup_s``,
        ``wall_s``), a summary and one record per frame (see :class:`FrameResult`).

    Raises:
        StarmdInputError: missing or unreadable input, an existing ``out`` without
            ``overwrite``, or a protein PDBFixer or the force field cannot handle.
        StarmdSimulationError: frames failed to minimize (all are named; nothing is written).
    """
    from starmd.structure.io import atomic_write, load_topology_frame, write_atomically, xtc_bytes
    from starmd.workers import run_jobs

    check_openmm()
    trajectory, topology, out = Path(trajectory), Path(topology), Path(out)
    if out.suffix.lower() != ".xtc":
        raise StarmdInputError(located(out, "the relaxed trajectory is written as XTC (.xtc)"))
    if out.exists() and not overwrite:
        raise StarmdInputError(located(out, "exists; pass --overwrite to replace it"))
    frames = _load_frames(trajectory, topology, load_topology_frame(topology).topology)
    started = time.perf_counter()
    relaxer = _relaxer(str(topology.resolve()), settings)  # fails fast on a bad protein
    setup_s = time.perf_counter() - started
    chunks = [
        _Chunk(first, frames.xyz[first : first + CHUNK_FRAMES])
        for first in range(0, frames.n_frames, CHUNK_FRAMES)
    ]
    results: dict[int, list[FrameResult]] = {}

    def done(chunk: _Chunk, chunk_results: list[FrameResult] | None, error: str | None) -> None:
        results[chunk.first] = chunk_results or []
        if progress is not None:
            progress(sum(len(r) for r in results.values()), frames.n_frames)

    task = partial(_relax_chunk, topology_path=str(topology.resolve()), settings=settings)
    run_jobs(task, chunks, settings.workers, on_failure="raise", on_done=done)
    ordered = [r for first in sorted(results) for r in results[first]]
    failed = [(i, r.error) for i, r in enumerate(ordered) if r.error is not None]
    if failed:
        listed = "; ".join(f"frame {i}: {e}" for i, e in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise StarmdSimulationError(
            located(
                trajectory,
                f"{len(failed)} frame(s) failed to relax: {listed}{more}; nothing written",
            )
        )
    wall_s = time.perf_counter() - started
    keep = slice(None) if settings.hydrogens else relaxer.input_index
    xyz = np.stack([r.xyz_nm[keep] for r in ordered]).astype(np.float32)
    if settings.hydrogens:
        _write_hydrogen_topology(out.with_suffix(".pdb"), relaxer, xyz[0])
    data = xtc_bytes(xyz, frames.time, np.arange(frames.n_frames))
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    sidecar = _sidecar(trajectory, topology, out, settings, relaxer, ordered, setup_s, wall_s)
    write_atomically(out.with_suffix(".json"), json.dumps(sidecar, indent=1))
    return sidecar


def _load_frames(trajectory: Path, topology: Path, top: Any) -> Any:
    """The whole trajectory as an ``mdtraj.Trajectory`` (a one-line error if unreadable)."""
    import mdtraj

    if not trajectory.is_file():
        raise StarmdInputError(located(trajectory, "file not found"))
    try:
        frames = mdtraj.load(str(trajectory), top=top)
    except Exception as err:
        raise StarmdInputError(
            located(
                trajectory,
                f"cannot read with topology {topology.name} ({str(err).splitlines()[0][:160]})",
            )
        ) from None
    if frames.n_frames == 0:
        raise StarmdInputError(located(trajectory, "contains no frames"))
    return frames


def _write_hydrogen_topology(path: Path, relaxer: FrameRelaxer, xyz_nm: np.ndarray) -> None:
    """The hydrogenated topology with the first relaxed frame, as PDB (atomically)."""
    import io

    import openmm.app as app
    import openmm.unit as unit

    from starmd.structure.io import write_atomically

    buffer = io.StringIO()
    app.PDBFile.writeFile(relaxer.topology, xyz_nm * unit.nanometer, buffer, keepIds=True)
    write_atomically(path, buffer.getvalue())


def _sidecar(
    trajectory: Path,
    topology: Path,
    out: Path,
    settings: RelaxSettings,
    relaxer: FrameRelaxer,
    results: list[FrameResult],
    setup_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """The JSON record of a relaxation: inputs, settings, cost, summary, per-frame results."""
    import openmm

    from starmd import __version__

    rmsd = np.array([r.rmsd_a for r in results])
    frame_s = np.array([r.wall_s for r in results])

    def frames_with(key: str, when: str) -> int:
        return sum(1 for r in results if getattr(r, f"violations_{when}")[key] > 0)

    return {
        "starmd_version": __version__,
        "openmm_version": openmm.version.version,
        "trajectory": str(trajectory),
        "topology": str(topology),
        "output": out.name,
        "output_topology": out.with_suffix(".pdb").name if settings.hydrogens else str(topology),
        "settings": asdict(settings),
        "force_field": list(_protocol_files(settings.protocol)),
        "frames": len(results),
        "atoms_input": int(len(relaxer.input_index)),
        "atoms_with_hydrogens": relaxer.n_atoms,
        "setup_s": round(setup_s, 3),
        "wall_s": round(wall_s, 3),
        "seconds_per_frame": round(float(frame_s.mean()), 4),
        "summary": {
            "rmsd_a_mean": round(float(rmsd.mean()), 4),
            "rmsd_a_max": round(float(rmsd.max()), 4),
            "frames_with_peptide_violation_before": frames_with("peptide", "before"),
            "frames_with_peptide_violation_after": frames_with("peptide", "after"),
            "frames_with_clash_before": frames_with("clash", "before"),
            "frames_with_clash_after": frames_with("clash", "after"),
            "frames_with_released_restraints": sum(1 for r in results if r.released_residues),
        },
        "per_frame": [r.record() for r in results],
    }


def _protocol_files(name: str) -> tuple[str, ...]:
    from starmd.simulate.protocols import get_protocol

    return get_protocol(name).force_field
