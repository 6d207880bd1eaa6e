"""Atom-level polish of heavy-atom frames: removes van der Waals clashes and Ramachandran
outliers by small Cartesian moves that keep the covalent geometry.

Why atoms and not frames + torsions: a frame rebuilt from residue frames and torsions has ideal
bond angles, and MD's own frames taken through that representation clash in almost every frame
(side-chain tips in salt bridges and hydrogen bonds land 0.6-0.9 A closer than in MD; see
docs/validity.md). Moving whole residues, or their side-chain torsions, did not remove the last
clash of a frame; letting every atom move a little, as a force field minimisation does, does.
This is a minimisation of a small restrained energy in torch, batched over frames, so a chunk of
written frames is polished at once (no OpenMM, no hydrogens, no solvent: for MD-ready
structures use the OpenMM relaxation, :mod:`starmd.simulate.relax`).

Energy of a frame (positions in Angstrom, each term a squared deviation in units of its spread):

- covalent geometry kept at the input's: every bond length, every 1-3 distance (the bond
  angles), the signed volume at every atom with three heavy neighbours (chirality of CA, THR CB,
  ILE CB; pyramidality of LEU CG and VAL CB), and all distances within the planar or ring groups
  (aromatic rings with their CB, proline's ring, the carboxylate, amide and guanidinium ends,
  and each peptide plane CA(i), C(i), O(i), N(i+1), CA(i+1)), which keep them planar and keep
  omega. The input is taken as correct here: the polish does not mend a stretched peptide bond
  (the rollout's frame refinement does, :mod:`starmd.sample.refine`, before this runs);
- van der Waals overlaps between atoms of residues at least two apart (or in different
  chains), by the evaluation's clash rule (:mod:`starmd.evaluate.validity`: Bondi radii, 0.3 A
  more for N/O pairs, SG-SG exempt) beyond ``target_overlap_a`` (below MolProbity's 0.4 A, so
  a polished pair does not sit on the limit);
- Ramachandran outliers: the signed distance of each judged residue's (phi, psi) to the 99%
  region (:func:`~starmd.structure.ramachandran.ramachandran_distance_deg`), from
  ``rama_margin_deg`` inside its edge;
- a harmonic restraint of every atom to its input position (backbone atoms held tighter).

Minimised with L-BFGS (strong Wolfe line search) in rounds; the list of watched atom pairs is
rebuilt at the start of each round. Float64 throughout. Invariant under a global rotation and
translation of the input (only distances, volumes and dihedrals enter), so the polish is
equivariant to float rounding.

Approximation: the energy knows no electrostatics, hydrogen bonds or solvent; it removes
overlaps and keeps the covalent geometry, nothing more. The restraint bounds how far atoms move
(measured per frame and reported), not a hard limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj as md
import numpy as np
import torch
from scipy.spatial import cKDTree

from starmd.structure.geometry import dihedral
from starmd.structure.local_geometry import (
    CONTACT_SEARCH_A,
    POLAR_ALLOWANCE_A,
    VDW_RADIUS_A,
)
from starmd.structure.ramachandran import judged_residue_atoms, ramachandran_distance_deg

# Atoms whose mutual distances are all kept: rings and planar groups (with the atom that
# anchors them, so the group stays in the plane of its bond).
RIGID_GROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "PHE": (("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"),),
    "TYR": (("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"),),
    "TRP": (("CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"),),
    "HIS": (("CB", "CG", "ND1", "CD2", "CE1", "NE2"),),
    "PRO": (("N", "CA", "CB", "CG", "CD"),),
    "ARG": (("CD", "NE", "CZ", "NH1", "NH2"),),
    "ASN": (("CB", "CG", "OD1", "ND2"),),
    "GLN": (("CG", "CD", "OE1", "NE2"),),
    "ASP": (("CB", "CG", "OD1", "OD2"),),
    "GLU": (("CG", "CD", "OE1", "OE2"),),
}
BACKBONE = ("N", "CA", "C", "O", "OXT")
CLASH_WATCH_MARGIN_A = 1.0
"""Atom pairs within this distance of overlapping at the start of a round are watched."""


@dataclass(frozen=True)
class PolishSettings:
    """Spreads (Angstrom, Angstrom^3, degrees) and iteration budget of the polish.

    Attributes:
        rounds: pair-list rebuilds; each runs ``iterations`` L-BFGS iterations (0 = off).
        iterations: L-BFGS iterations per round.
        bond_sd_a, angle_sd_a, rigid_sd_a: spread of bond lengths, 1-3 distances and distances
            within rigid groups about their input values.
        volume_sd_a3: spread of the signed volume at branch atoms.
        clash_sd_a: unit of an overlap beyond ``target_overlap_a``.
        target_overlap_a: overlap left unpenalised (MolProbity's clash is 0.4 A).
        rama_sd_deg, rama_margin_deg: unit of a Ramachandran outlier's distance to the allowed
            region, and how far inside the region's edge the term starts (0 weight = off via
            ``rama_weight``).
        rama_weight: weight of the Ramachandran term.
        backbone_restraint_a, sidechain_restraint_a: displacement from the input that costs one
            unit, per atom.
    """

    rounds: int = 2
    iterations: int = 30
    bond_sd_a: float = 0.01
    angle_sd_a: float = 0.03
    rigid_sd_a: float = 0.03
    volume_sd_a3: float = 0.1
    clash_sd_a: float = 0.02
    target_overlap_a: float = 0.15
    rama_sd_deg: float = 2.0
    rama_margin_deg: float = 4.0
    rama_weight: float = 3.0
    backbone_restraint_a: float = 0.3
    sidechain_restraint_a: float = 0.6


@dataclass(frozen=True)
class PolishPlan:
    """Index tables of a heavy-atom topology (``N`` atoms), built once per protein.

    Attributes:
        bonds, angles, rigid: ``(P, 2)`` atom pairs whose distance is kept.
        branches: ``(V, 4)`` centre atom and its three heavy neighbours (signed volume kept).
        phi_psi: ``(K, 5)`` C(i-1), N, CA, C, N(i+1) of the residues judged for Ramachandran.
        radius: ``(N,)`` van der Waals radius, Angstrom.
        polar, sulfur_gamma, backbone: ``(N,)`` bool.
        residue, chain, residue_number: ``(N,)`` residue index, chain index and number.
    """

    bonds: np.ndarray
    angles: np.ndarray
    rigid: np.ndarray
    branches: np.ndarray
    phi_psi: np.ndarray
    radius: np.ndarray
    polar: np.ndarray
    sulfur_gamma: np.ndarray
    backbone: np.ndarray
    residue: np.ndarray
    chain: np.ndarray
    residue_number: np.ndarray


def _pairs(rows: list[tuple[int, int]]) -> np.ndarray:
    unique = sorted({(min(a, b), max(a, b)) for a, b in rows if a != b})
    return np.array(unique, dtype=np.int64).reshape(-1, 2)


def plan_polish(topology: md.Topology) -> PolishPlan:
    """The polish tables of a heavy-atom topology with bonds (mdtraj's standard bonds; a
    topology read from a PDB has them)."""
    if topology.n_bonds == 0:
        topology = md.Topology.from_dataframe(*topology.to_dataframe())
        topology.create_standard_bonds()
    neighbours: list[list[int]] = [[] for _ in range(topology.n_atoms)]
    bonds = []
    for bond in topology.bonds:
        a, b = bond[0].index, bond[1].index
        bonds.append((a, b))
        neighbours[a].append(b)
        neighbours[b].append(a)
    angles = [(a, c) for nbrs in neighbours for i, a in enumerate(nbrs) for c in nbrs[i + 1 :]]
    branches = [(k, *nbrs) for k, nbrs in enumerate(neighbours) if len(nbrs) == 3]
    named = {(atom.residue.index, atom.name): atom.index for atom in topology.atoms}
    residues = list(topology.residues)
    rigid: list[tuple[int, int]] = []
    for residue in residues:
        for group in RIGID_GROUPS.get(residue.name, ()):
            members = [named[(residue.index, n)] for n in group if (residue.index, n) in named]
            rigid += [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
    for prev, residue in zip(residues[:-1], residues[1:], strict=True):
        if not _bonded(prev, residue):
            continue
        plane = [(prev.index, "CA"), (prev.index, "C"), (prev.index, "O"), (residue.index, "N")]
        plane += [(residue.index, "CA")] + (
            [(residue.index, "CD")] if residue.name == "PRO" else []
        )
        members = [named[key] for key in plane if key in named]
        rigid += [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
    elements = [
        atom.element.symbol.upper() if atom.element is not None else atom.name[0]
        for atom in topology.atoms
    ]
    return PolishPlan(
        bonds=_pairs(bonds),
        angles=_pairs(angles),
        rigid=_pairs(rigid),
        branches=np.array(branches, dtype=np.int64).reshape(-1, 4),
        phi_psi=judged_residue_atoms(topology),
        radius=np.array([VDW_RADIUS_A.get(e, 1.7) for e in elements]),
        polar=np.array([e in ("N", "O") for e in elements]),
        sulfur_gamma=np.array([a.name == "SG" for a in topology.atoms]),
        backbone=np.array([a.name in BACKBONE for a in topology.atoms]),
        residue=np.array([a.residue.index for a in topology.atoms], dtype=np.int64),
        chain=np.array([a.residue.chain.index for a in topology.atoms], dtype=np.int64),
        residue_number=np.array([a.residue.resSeq for a in topology.atoms], dtype=np.int64),
    )


def _bonded(r1: md.core.topology.Residue, r2: md.core.topology.Residue) -> bool:
    return r1.chain.index == r2.chain.index and r2.resSeq - r1.resSeq == 1


def _volume(x: torch.Tensor, branches: torch.Tensor) -> torch.Tensor:
    """Signed volume (Angstrom^3) spanned by the three bonds of each branch atom, ``(T, V)``."""
    centre = x[:, branches[:, 0]]
    u, v, w = (x[:, branches[:, k]] - centre for k in (1, 2, 3))
    return (torch.cross(u, v, dim=-1) * w).sum(-1)


def _length(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x[:, pairs[:, 0]] - x[:, pairs[:, 1]], dim=-1)


class _Watched:
    """Atom pairs that may overlap, listed per frame: ``frame, first, second`` ``(P,)`` and
    ``limit`` (the distance below which they overlap by more than the target). Found with a
    k-d tree per frame, so memory grows with the atoms in contact, not with the square of the
    atom count."""

    def __init__(self, x: torch.Tensor, tables: dict, target: float):
        reach = CONTACT_SEARCH_A + CLASH_WATCH_MARGIN_A
        coordinates = x.detach().cpu().numpy()
        found = [cKDTree(frame).query_pairs(reach, output_type="ndarray") for frame in coordinates]
        frame = np.concatenate([np.full(len(p), t) for t, p in enumerate(found)]).astype(np.int64)
        pairs = np.concatenate([p.reshape(-1, 2) for p in found]).astype(np.int64)
        self.frame, self.first, self.second = (
            torch.from_numpy(a) for a in (frame, pairs[:, 0], pairs[:, 1])
        )
        i, j = self.first, self.second
        number, chain, sg = tables["residue_number"], tables["chain"], tables["sulfur_gamma"]
        far = ((number[i] - number[j]).abs() >= 2) | (chain[i] != chain[j])
        may_clash = far & ~(sg[i] & sg[j])
        radius, polar = tables["radius"], tables["polar"]
        allowance = POLAR_ALLOWANCE_A * (polar[i] & polar[j]).to(x.dtype)
        contact = radius[i] + radius[j] - allowance
        d = torch.linalg.vector_norm(x[self.frame, i] - x[self.frame, j], dim=-1)
        keep = may_clash & (d < contact - target + CLASH_WATCH_MARGIN_A)
        self.frame, self.first, self.second = (
            a[keep] for a in (self.frame, self.first, self.second)
        )
        self.limit = (contact - target)[keep]


def _tables(plan: PolishPlan) -> dict[str, torch.Tensor]:
    return {
        "residue_number": torch.from_numpy(plan.residue_number),
        "chain": torch.from_numpy(plan.chain),
        "sulfur_gamma": torch.from_numpy(plan.sulfur_gamma),
        "radius": torch.from_numpy(plan.radius).double(),
        "polar": torch.from_numpy(plan.polar),
        "bonds": torch.from_numpy(plan.bonds),
        "angles": torch.from_numpy(plan.angles),
        "rigid": torch.from_numpy(plan.rigid),
        "branches": torch.from_numpy(plan.branches),
        "phi_psi": torch.from_numpy(plan.phi_psi),
        "backbone": torch.from_numpy(plan.backbone),
    }


@dataclass
class Polished:
    """Polished frames ``xyz (T, N, 3)`` Angstrom, and per frame ``(T,)``: the largest atom
    displacement (Angstrom) and the largest van der Waals overlap (Angstrom, the evaluation's
    rule, among atom pairs within reach of overlapping) before and after."""

    xyz: np.ndarray
    max_shift_a: np.ndarray
    overlap_before_a: np.ndarray
    overlap_after_a: np.ndarray


class _Energy:
    """The polish energy of frames ``(T, N, 3)`` around their input positions ``start``,
    per frame ``(T,)``."""

    def __init__(self, start: torch.Tensor, plan: PolishPlan, settings: PolishSettings):
        self.tables = _tables(plan)
        self.plan, self.settings, self.start = plan, settings, start
        # bonds, 1-3 pairs and rigid-group pairs in one table, each with its spread
        groups = (
            ("bonds", settings.bond_sd_a),
            ("angles", settings.angle_sd_a),
            ("rigid", settings.rigid_sd_a),
        )
        self.pairs = torch.cat([self.tables[name] for name, _ in groups])
        self.inverse_sd = torch.cat(
            [start.new_full((len(self.tables[name]),), 1.0 / sd) for name, sd in groups]
        )
        self.kept = _length(start, self.pairs)
        self.volume = _volume(start, self.tables["branches"])
        self.restraint = torch.where(
            self.tables["backbone"], settings.backbone_restraint_a, settings.sidechain_restraint_a
        ).to(start.dtype)
        self.watched = self.watch(start)

    def watch(self, x: torch.Tensor) -> _Watched:
        """List the atom pairs of ``x`` within reach of overlapping (done once per round)."""
        self.watched = _Watched(x, self.tables, self.settings.target_overlap_a)
        return self.watched

    def overlap(self, x: torch.Tensor) -> torch.Tensor:
        """Largest overlap per frame ``(T,)`` among the watched pairs, Angstrom (>= 0)."""
        w = self.watched
        d = torch.linalg.vector_norm(x[w.frame, w.first] - x[w.frame, w.second], dim=-1)
        overlap = (w.limit + self.settings.target_overlap_a - d).clamp(min=0.0)
        out = x.new_zeros(x.shape[0])
        return out.scatter_reduce(0, w.frame, overlap, reduce="amax")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s, tables = self.settings, self.tables
        total = (((x - self.start) / self.restraint[None, :, None]) ** 2).sum((1, 2))
        total = total + (((_length(x, self.pairs) - self.kept) * self.inverse_sd) ** 2).sum(1)
        volume = _volume(x, tables["branches"])
        total = total + (((volume - self.volume) / s.volume_sd_a3) ** 2).sum(1)
        w = self.watched
        d = torch.linalg.vector_norm(x[w.frame, w.first] - x[w.frame, w.second], dim=-1)
        clash = (torch.relu(w.limit - d) / s.clash_sd_a) ** 2
        total = total.index_add(0, w.frame, clash)
        q = tables["phi_psi"]
        if s.rama_weight > 0 and len(q):
            phi = dihedral(x[:, q[:, 0]], x[:, q[:, 1]], x[:, q[:, 2]], x[:, q[:, 3]])
            psi = dihedral(x[:, q[:, 1]], x[:, q[:, 2]], x[:, q[:, 3]], x[:, q[:, 4]])
            outside = torch.relu(ramachandran_distance_deg(phi, psi) + s.rama_margin_deg)
            total = total + s.rama_weight * ((outside / s.rama_sd_deg) ** 2).sum(1)
        return total

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = self(x)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), grad


def polish(
    xyz: np.ndarray, plan: PolishPlan, settings: PolishSettings = PolishSettings()
) -> Polished:
    """Polish heavy-atom frames ``xyz (T, N, 3)`` (Angstrom) of the topology of ``plan``; see the
    module docstring for the energy. Every frame is minimised on its own (its own L-BFGS
    history and line search, vectorised over the batch), so a frame's result does not depend on
    which frames it is polished with."""
    start = torch.as_tensor(np.asarray(xyz), dtype=torch.float64)
    energy = _Energy(start, plan, settings)
    before = energy.overlap(start)
    x = start.clone()
    with torch.inference_mode(False):
        for _ in range(settings.rounds):
            energy.watch(x)
            x = _lbfgs(energy, x, settings.iterations)
    energy.watch(x)
    return Polished(
        xyz=x.numpy(),
        max_shift_a=torch.linalg.vector_norm(x - start, dim=-1).amax(-1).numpy(),
        overlap_before_a=before.numpy(),
        overlap_after_a=energy.overlap(x).numpy(),
    )


HISTORY = 10
"""L-BFGS memory (pairs of steps and gradient changes kept per frame)."""
MAX_STEP_A = 0.2
"""No atom moves by more than this in one L-BFGS step (Angstrom)."""
ARMIJO = 1e-4
BACKTRACKS = 8


def _lbfgs(energy: _Energy, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` L-BFGS steps on every frame of ``x (T, N, 3)`` independently: per-frame
    two-loop recursion over the last :data:`HISTORY` steps, then a backtracking (Armijo) line
    search per frame from the full step, capped at :data:`MAX_STEP_A` per atom. A frame whose
    line search fails keeps its position for that step."""
    t = x.shape[0]
    value, grad = energy.value_and_grad(x)
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for _ in range(iterations):
        q = grad.flatten(1).clone()
        alphas = []
        for s, y, rho in reversed(steps):
            a = rho * (s * q).sum(1)
            q -= a[:, None] * y
            alphas.append(a)
        if steps:
            s, y, _ = steps[-1]
            scale = (s * y).sum(1) / (y * y).sum(1).clamp(min=1e-30)
            scale = torch.where(scale > 0, scale, 1e-3)
        else:
            scale = x.new_full((t,), 1e-3)
        r = scale[:, None] * q
        for (s, y, rho), a in zip(steps, reversed(alphas), strict=True):
            b = rho * (y * r).sum(1)
            r += s * (a - b)[:, None]
        direction = -r
        slope = (direction * grad.flatten(1)).sum(1)
        uphill = slope >= 0
        direction[uphill] = -grad.flatten(1)[uphill] * 1e-3
        slope = (direction * grad.flatten(1)).sum(1)
        direction = direction.view_as(x)
        longest = torch.linalg.vector_norm(direction, dim=-1).amax(-1)
        alpha = torch.clamp(MAX_STEP_A / longest.clamp(min=1e-30), max=1.0)
        accepted = torch.zeros(t, dtype=torch.bool)
        new_x, new_value = x.clone(), value.clone()
        for _ in range(BACKTRACKS):
            trial = x + alpha[:, None, None] * direction
            with torch.no_grad():
                trial_value = energy(trial)
            ok = ~accepted & (trial_value <= value + ARMIJO * alpha * slope)
            new_x[ok], new_value[ok] = trial[ok], trial_value[ok]
            accepted |= ok
            if bool(accepted.all()):
                break
            alpha = torch.where(accepted, alpha, alpha / 2)
        new_value, new_grad = energy.value_and_grad(new_x)
        s = (new_x - x).flatten(1)
        y = (new_grad - grad).flatten(1)
        curvature = (s * y).sum(1)
        rho = torch.where(curvature > 1e-12, 1.0 / curvature.clamp(min=1e-12), 0.0)
        steps.append((s, y, rho))
        if len(steps) > HISTORY:
            steps.pop(0)
        x, value, grad = new_x, new_value, new_grad
    return x
