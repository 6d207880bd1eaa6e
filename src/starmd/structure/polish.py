"""Atom-level polish of heavy-atom frames: removes van der Waals clashes, Ramachandran and
rotamer outliers and non-planar peptides by small Cartesian moves that keep the covalent
geometry.

Why atoms and not frames + torsions: a frame rebuilt from residue frames and torsions has ideal
bond angles, and MD's own frames taken through that representation clash in almost every frame
(side-chain tips in salt bridges and hydrogen bonds land 0.6-0.9 A closer than in MD; see
docs/validity.md). Moving whole residues, or their side-chain torsions, did not remove the last
clash of a frame; letting every atom move a little, as a force field minimisation does, does.
This is a minimisation of a small restrained energy, each frame on its own, in compiled loops
(:mod:`starmd.structure.polish_kernel`; the torch reference is kept beside them: no OpenMM, no
hydrogens, no solvent: for MD-ready structures use the OpenMM relaxation,
:mod:`starmd.simulate.relax`).

Energy of a frame (positions in Angstrom, each term a squared deviation in units of its spread):

- covalent geometry kept at the input's: every bond length, every 1-3 distance (the bond
  angles), the signed volume at every atom with three heavy neighbours (chirality of CA, THR CB,
  ILE CB; pyramidality of LEU CG and VAL CB), and all distances within the planar or ring groups
  (aromatic rings with their CB, proline's ring, the carboxylate, amide and guanidinium ends,
  and the two halves of each peptide plane: CA(i), C(i), O(i), N(i+1) and C(i), N(i+1),
  CA(i+1)), which keep them planar. The input is taken as correct here: the polish does not
  mend a stretched peptide bond (the rollout's frame refinement does,
  :mod:`starmd.sample.refine`, before this runs). One exception: a proline's N, bonded to
  C(i), CA and CD, is held planar (signed volume 0) with C(i) to CD(i+1) at its ideal length
  (:data:`~starmd.structure.local_geometry.PROLINE_C_CD_A`). The refinement restrains that
  distance too, but only within its tolerance; without this the polish would keep an input
  whose C(i) lies within 1 A of CD, as rollouts had in some frames;
- omega, the rotation between the two halves of a peptide plane: free within
  ``omega_tolerance_deg`` of trans (of cis before a proline that is cis in the input), a square
  beyond (MD has almost no omega 30 degrees or more from planar; the frames the rollout writes
  had 2-7% before this term);
- van der Waals overlaps between atoms of residues at least two apart (or in different
  chains), by the evaluation's clash rule (:mod:`starmd.evaluate.validity`: Bondi radii, 0.3 A
  more for N/O pairs, SG-SG exempt) beyond ``target_overlap_a`` (below MolProbity's 0.4 A, so
  a polished pair does not sit on the limit); and between atoms of consecutive residues more
  than three bonds apart, beyond ``neighbour_overlap_a`` (the evaluation's clash rule does not
  judge neighbours, but rollouts put an aromatic ring onto the previous carbonyl or two side
  chain tips onto each other, closer than BioEmu's 1.0 A filter; MD's own frames reach
  0.46-0.63 A of overlap here, mostly O(i)-C(i+1), on 12 corpus proteins);
- Ramachandran outliers: the signed distance of each judged residue's (phi, psi) to the 99%
  region (:func:`~starmd.structure.ramachandran.ramachandran_distance_deg`), from
  ``rama_margin_deg`` inside its edge;
- rotamer outliers, as the evaluation judges them: (chi1, chi2) outside the 99% Janin region
  (signed distance field built as the Ramachandran one,
  :func:`~starmd.structure.ramachandran.janin_distance_slope`), chi1 of CYS, SER, THR and VAL
  more than 40 degrees from staggered, from ``rama_margin_deg`` inside the edge;
- a harmonic restraint of every atom to its input position (backbone atoms held tighter).

Minimised with L-BFGS (backtracking Armijo line search, every frame on its own) in rounds; the
list of watched atom pairs is rebuilt at the start of each round. A frame stops once nothing
left is worth a step (every overlap, Ramachandran and omega excess and every covalent deviation
within its settle slack, :class:`PolishSettings`), so the cost follows the frames that need
work. The gradient is assembled in closed form (distances, signed volumes, dihedrals by Blondel
and Karplus' formula), no autograd graph. Float64 throughout. Invariant under a global rotation
and translation of the input (only distances, volumes and dihedrals enter), so the polish is
equivariant to float rounding.

Approximation: the energy knows no electrostatics, hydrogen bonds or solvent; it removes
overlaps and keeps the covalent geometry, nothing more. The restraint bounds how far atoms move
(measured per frame and reported), not a hard limit.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import mdtraj as md
import numpy as np
import torch

from starmd.structure.geometry import dihedral_gradient
from starmd.structure.local_geometry import (
    CONTACT_SEARCH_A,
    POLAR_ALLOWANCE_A,
    PROLINE_C_CD_A,
    VDW_RADIUS_A,
)
from starmd.structure.ramachandran import (
    JANIN_BIN_DEG,
    RAMA_BIN_DEG,
    STAGGERED_TOLERANCE_DEG,
    distance_grid,
    janin_distance_slope,
    judged_chi_atoms,
    judged_residue_atoms,
    ramachandran_distance_slope,
    staggered_distance_slope,
)

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
        rotamer_weight: weight of the rotamer term (same spread and margin as Ramachandran's).
        omega_tolerance_deg, omega_sd_deg: omega is free within this many degrees of trans
            (of cis before a proline that is cis in the input); beyond, each ``omega_sd_deg``
            costs one unit.
        neighbour_overlap_a: overlap left unpenalised between atoms of consecutive residues
            that are more than three bonds apart (MD: at most 0.63 A).
        settle_overlap_a, settle_rama_deg, settle_omega_deg: a frame stops early once every
            overlap is within this of ``target_overlap_a`` (so below MolProbity's 0.4 A), every
            residue within this of the Ramachandran margin (so inside the allowed region) and
            every omega within this of its tolerance: what is left is not worth more steps
            (``settle_rotamer_deg``: the same for rotamers as for Ramachandran).
        settle_bond_a, settle_angle_a, settle_volume_a3: ... and every bond length within
            this of its input value, every 1-3 and rigid-group distance and every signed volume
            likewise (a frame stopped while an overlap still stretches a bond would keep the
            stretch; 0.15 A in a 1-3 distance is about 6 degrees of bond angle).
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
    neighbour_overlap_a: float = 0.7
    rama_sd_deg: float = 2.0
    rama_margin_deg: float = 4.0
    rama_weight: float = 3.0
    rotamer_weight: float = 3.0
    omega_tolerance_deg: float = 10.0
    omega_sd_deg: float = 2.0
    settle_overlap_a: float = 0.15
    settle_rama_deg: float = 3.0
    settle_omega_deg: float = 10.0
    settle_rotamer_deg: float = 3.0
    settle_bond_a: float = 0.02
    settle_angle_a: float = 0.15
    settle_volume_a3: float = 0.5
    backbone_restraint_a: float = 0.3
    sidechain_restraint_a: float = 0.6


@dataclass(frozen=True)
class PolishPlan:
    """Index tables of a heavy-atom topology (``N`` atoms), built once per protein.

    Attributes:
        bonds, angles, rigid: ``(P, 2)`` atom pairs whose distance is kept.
        ideal: ``(J, 3)`` atom pairs held at a fixed distance instead of their input one
            (first, second, distance in Angstrom): C(i) to CD(i+1) of every proline.
        planar: ``(V,)`` bool, branch atoms held planar (signed volume 0) instead of at their
            input volume: the N of every proline bonded to the residue before it.
        branches: ``(V, 4)`` centre atom and its three heavy neighbours (signed volume kept).
        phi_psi: ``(K, 5)`` C(i-1), N, CA, C, N(i+1) of the residues judged for Ramachandran.
        omega: ``(W, 5)`` CA(i), C(i), N(i+1), CA(i+1) of every peptide bond, and 1 where
            residue i + 1 is a proline (cis allowed).
        chi_pairs: ``(K, 2, 4)`` chi1 and chi2 atoms of the residues judged on the Janin plot;
            chi1_only: ``(K', 4)`` chi1 atoms of CYS, SER, THR, VAL (judged by staggering).
        bonded_neighbours: ``(E,)`` keys ``first * N + second`` (first < second) of the atom
            pairs of consecutive residues within three bonds of each other (never judged as
            overlapping).
        radius: ``(N,)`` van der Waals radius, Angstrom.
        polar, sulfur_gamma, backbone: ``(N,)`` bool.
        residue, chain, residue_number: ``(N,)`` residue index, chain index and number.
    """

    bonds: np.ndarray
    angles: np.ndarray
    rigid: np.ndarray
    ideal: np.ndarray
    planar: np.ndarray
    branches: np.ndarray
    phi_psi: np.ndarray
    omega: np.ndarray
    chi_pairs: np.ndarray
    chi1_only: np.ndarray
    bonded_neighbours: np.ndarray
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
    omega, ideal, planar_n = [], [], set()
    for prev, residue in zip(residues[:-1], residues[1:], strict=True):
        if not _bonded(prev, residue):
            continue
        if residue.name == "PRO" and {(prev.index, "C"), (residue.index, "CD")} <= named.keys():
            first, second = named[(prev.index, "C")], named[(residue.index, "CD")]
            ideal.append((min(first, second), max(first, second), PROLINE_C_CD_A[0]))
            planar_n.add(named.get((residue.index, "N")))
        # the peptide plane as two rigid halves that share the C-N bond: the carbonyl end
        # (CA, C, O of i and N of i + 1) and the amide end (C of i, N, CA and proline's CD of
        # i + 1); the rotation about C-N between them, omega, is held by its own term
        carbonyl = [(prev.index, "CA"), (prev.index, "C"), (prev.index, "O"), (residue.index, "N")]
        amide = [(prev.index, "C"), (residue.index, "N"), (residue.index, "CA")]
        amide += [(residue.index, "CD")] if residue.name == "PRO" else []
        for group in (carbonyl, amide):
            members = [named[key] for key in group if key in named]
            rigid += [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
        quad = [(prev.index, "CA"), (prev.index, "C"), (residue.index, "N"), (residue.index, "CA")]
        if all(key in named for key in quad):
            omega.append([named[key] for key in quad] + [residue.name == "PRO"])
    chi_pairs, chi1_only = judged_chi_atoms(topology)
    residue_of = np.array([a.residue.index for a in topology.atoms], dtype=np.int64)
    within_three: set[tuple[int, int]] = set()
    for origin in range(topology.n_atoms):  # breadth-first, three bonds deep
        frontier, seen = {origin}, {origin}
        for _ in range(3):
            frontier = {b for a in frontier for b in neighbours[a]} - seen
            seen |= frontier
        within_three |= {(origin, b) for b in seen if b > origin}
    bonded_neighbours = sorted(
        a * topology.n_atoms + b for a, b in within_three if abs(residue_of[a] - residue_of[b]) == 1
    )
    elements = [
        atom.element.symbol.upper() if atom.element is not None else atom.name[0]
        for atom in topology.atoms
    ]
    return PolishPlan(
        bonds=_pairs(bonds),
        angles=_pairs(angles),
        rigid=_pairs(rigid),
        ideal=np.array(ideal, dtype=np.float64).reshape(-1, 3),
        planar=np.array([row[0] in planar_n for row in branches], dtype=bool),
        branches=np.array(branches, dtype=np.int64).reshape(-1, 4),
        phi_psi=judged_residue_atoms(topology),
        omega=np.array(omega, dtype=np.int64).reshape(-1, 5),
        chi_pairs=chi_pairs,
        chi1_only=chi1_only,
        bonded_neighbours=np.array(bonded_neighbours, dtype=np.int64),
        radius=np.array([VDW_RADIUS_A.get(e, 1.7) for e in elements]),
        polar=np.array([e in ("N", "O") for e in elements]),
        sulfur_gamma=np.array([a.name == "SG" for a in topology.atoms]),
        backbone=np.array([a.name in BACKBONE for a in topology.atoms]),
        residue=residue_of,
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
    """Atom pairs that may overlap, listed per frame: ``frame, first, second`` ``(P,)``,
    ``limit`` (the distance below which they overlap by more than allowed), ``contact`` (the
    sum of their radii, less the N/O allowance) and ``judged`` (a pair the evaluation's clash
    rule judges: residues two or more apart). Found on a grid of cells per frame
    (:func:`starmd.structure.polish_kernel.watched_pairs`), so the cost grows with the atoms in
    contact, not with the square of the atom count."""

    def __init__(self, x: torch.Tensor, tables: dict, target: float, neighbour: float):
        from starmd.structure.polish_kernel import watched_pairs

        found = watched_pairs(
            np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float64),
            CONTACT_SEARCH_A + CLASH_WATCH_MARGIN_A,
            CLASH_WATCH_MARGIN_A,
            *(
                tables[k].numpy()
                for k in ("residue_number", "chain", "sulfur_gamma", "radius", "polar")
            ),
            tables["bonded_neighbours"].numpy(),
            POLAR_ALLOWANCE_A,
            target,
            neighbour,
        )
        self.frame, self.first, self.second, self.limit, self.contact, self.judged = (
            torch.from_numpy(a) for a in found
        )

    def select(self, keep: torch.Tensor) -> _Watched:
        """The pairs of the frames ``keep (T,)`` (bool), frames renumbered in their order."""
        out = copy.copy(self)
        mine = keep[self.frame]
        renumber = torch.cumsum(keep.long(), 0) - 1
        out.frame = renumber[self.frame[mine]]
        for name in ("first", "second", "limit", "contact", "judged"):
            setattr(out, name, getattr(self, name)[mine])
        return out


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
        "omega": torch.from_numpy(plan.omega),
        "chi_pairs": torch.from_numpy(plan.chi_pairs),
        "chi1_only": torch.from_numpy(plan.chi1_only),
        "bonded_neighbours": torch.from_numpy(plan.bonded_neighbours),
        "backbone": torch.from_numpy(plan.backbone),
    }


@dataclass
class Polished:
    """Polished frames ``xyz (T, N, 3)`` Angstrom, and per frame ``(T,)``: the largest atom
    displacement (Angstrom) and the largest van der Waals overlap (Angstrom, the evaluation's
    rule, among atom pairs within reach of overlapping) before and after (None when the polish
    was asked not to measure them)."""

    xyz: np.ndarray
    max_shift_a: np.ndarray
    overlap_before_a: np.ndarray | None
    overlap_after_a: np.ndarray | None


class _Energy:
    """The polish energy of frames ``(T, N, 3)`` around their input positions ``start``, per
    frame ``(T,)``, with its gradient assembled term by term in closed form (distances, signed
    volumes, dihedrals): no autograd graph, a few large gathers and scatters per term."""

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
        # per pair / branch and frame, (P, T) and (V, T), in the atom-major layout
        self.kept = _length(start, self.pairs).T.contiguous()
        n = start.shape[1]
        keys = self.pairs[:, 0] * n + self.pairs[:, 1]
        for first, second, length in plan.ideal:
            self.kept[keys == int(first) * n + int(second)] = float(length)
        self.settle_slack = torch.cat(
            [
                start.new_full((len(self.tables[name]),), slack)
                for name, slack in (
                    ("bonds", settings.settle_bond_a),
                    ("angles", settings.settle_angle_a),
                    ("rigid", settings.settle_angle_a),
                )
            ]
        )
        self.branches = self.tables["branches"]
        self.volume = _volume(start, self.branches).T.contiguous()
        self.volume[torch.from_numpy(plan.planar)] = 0.0
        # every dihedral of the torsion terms, one row each (atoms of its four corners)
        phi_psi, omega = self.tables["phi_psi"], self.tables["omega"]
        chi_pairs, chi1_only = self.tables["chi_pairs"], self.tables["chi1_only"]
        parts = {
            "phi": phi_psi[:, :4],
            "psi": phi_psi[:, 1:],
            "omega": omega[:, :4],
            "chi1": chi_pairs[:, 0],
            "chi2": chi_pairs[:, 1],
            "chi1_only": chi1_only,
        }
        self.dihedrals = torch.cat(list(parts.values())).reshape(-1, 4)
        bounds = np.cumsum([0] + [len(rows) for rows in parts.values()])
        self.dihedral_part = {
            name: slice(int(lo), int(hi))
            for name, lo, hi in zip(parts, bounds[:-1], bounds[1:], strict=True)
        }
        corners = start.transpose(0, 1).index_select(0, omega[:, :4].T.reshape(-1))
        measured = dihedral_gradient(*corners.view(4, len(omega), -1, 3))[0]  # (W, T)
        # cis kept where the input has it before a proline; trans everywhere else
        self.cis = (omega[:, 4:] == 1) & (measured.abs() < math.pi / 2)
        self.restraint = torch.where(
            self.tables["backbone"], settings.backbone_restraint_a, settings.sidechain_restraint_a
        ).to(start.dtype)
        self.watched = self.watch(start)

    def watch(self, x: torch.Tensor) -> _Watched:
        """List the atom pairs of ``x`` within reach of overlapping (done once per round)."""
        s = self.settings
        self.watched = _Watched(x, self.tables, s.target_overlap_a, s.neighbour_overlap_a)
        return self.watched

    def overlap(self, x: torch.Tensor) -> torch.Tensor:
        """Largest overlap per frame ``(T,)`` among the watched pairs that the evaluation's
        clash rule judges (residues two or more apart), Angstrom (>= 0)."""
        w = self.watched
        d = torch.linalg.vector_norm(x[w.frame, w.first] - x[w.frame, w.second], dim=-1)
        overlap = ((w.contact - d) * w.judged).clamp(min=0.0)
        out = x.new_zeros(x.shape[0])
        return out.scatter_reduce(0, w.frame, overlap, reduce="amax")

    def select(self, keep: torch.Tensor) -> _Energy:
        """The same energy for the frames ``keep (T,)`` (bool) only, in their order."""
        out = copy.copy(self)
        out.start = self.start[keep]
        out.kept, out.volume = self.kept[:, keep], self.volume[:, keep]
        out.cis = self.cis[:, keep]
        out.watched = self.watched.select(keep)
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(x, gradient=False)[0]

    def value_and_grad(
        self, x: torch.Tensor, gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Energy ``(T,)`` of frames ``x (T, N, 3)``, its strain ``(T,)`` (the largest remaining
        overlap, Ramachandran or omega excess or covalent deviation, each in units of its settle
        slack: a frame at or below 1 has nothing left worth fixing) and, if asked, the energy's
        gradient ``(T, N, 3)``; computed by the compiled loop of
        :mod:`starmd.structure.polish_kernel` (:meth:`value_and_grad_torch` is the same as
        tensor operations)."""
        from starmd.structure.polish_kernel import value_and_grad

        t = x.shape[0]
        total, strain = x.new_empty(t), x.new_empty(t)
        grad = torch.empty_like(x) if gradient else x.new_empty((0, 0, 3))
        value_and_grad(
            np.ascontiguousarray(x.numpy()),
            self.kernel_tables(),
            gradient,
            total.numpy(),
            strain.numpy(),
            grad.numpy(),
        )
        return total, strain, grad if gradient else None

    def kernel_tables(self) -> tuple:
        """The energy's tables as the compiled loops read them
        (:func:`starmd.structure.polish_kernel.value_and_grad`)."""
        s, w, part = self.settings, self.watched, self.dihedral_part
        params = np.array(
            [
                s.volume_sd_a3,
                s.settle_volume_a3,
                s.clash_sd_a,
                s.settle_overlap_a,
                s.rama_weight,
                s.rama_sd_deg,
                s.rama_margin_deg,
                s.settle_rama_deg,
                s.rotamer_weight,
                s.settle_rotamer_deg,
                s.omega_tolerance_deg,
                s.omega_sd_deg,
                s.settle_omega_deg,
                STAGGERED_TOLERANCE_DEG,
                RAMA_BIN_DEG,
                JANIN_BIN_DEG,
            ]
        )
        names = ("phi", "psi", "omega", "chi1", "chi2", "chi1_only")
        bounds = np.array([part[k].start for k in names] + [part["chi1_only"].stop])
        frames = np.arange(self.start.shape[0] + 1)
        watch_start = np.searchsorted(w.frame.numpy(), frames).astype(np.int64)

        def host(a: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(a.numpy())

        return (
            host(self.start),
            host(self.restraint),
            host(self.pairs),
            host(self.kept),
            host(self.inverse_sd),
            host(self.settle_slack),
            host(self.branches),
            host(self.volume),
            watch_start,
            host(w.first),
            host(w.second),
            host(w.limit),
            host(self.dihedrals),
            bounds,
            host(self.cis),
            distance_grid("rama"),
            distance_grid("janin"),
            params,
        )

    def value_and_grad_torch(
        self, x: torch.Tensor, gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`value_and_grad` as tensor operations (the reference of the compiled loop).

        Atoms are gathered and scattered in an atom-major copy ``(N, T, 3)``, so that each
        index names one contiguous row holding the atom in every frame."""
        s = self.settings
        t, n = x.shape[:2]
        atoms = x.transpose(0, 1).contiguous()
        grad = torch.zeros_like(atoms) if gradient else None
        # restraint to the input
        shift = (x - self.start) / self.restraint[None, :, None] ** 2
        total = (shift * (x - self.start)).sum((1, 2))
        # kept distances: bonds, 1-3 pairs, rigid groups
        bond = atoms.index_select(0, self.pairs[:, 0]) - atoms.index_select(0, self.pairs[:, 1])
        length = torch.linalg.vector_norm(bond, dim=-1)  # (P, T)
        error = (length - self.kept) * self.inverse_sd[:, None]
        total = total + (error**2).sum(0)
        strain = ((length - self.kept).abs() / self.settle_slack[:, None]).amax(0)
        if grad is not None:
            pull = (2 * error * self.inverse_sd[:, None] / length)[..., None] * bond
            grad.index_add_(0, self.pairs[:, 0], pull)
            grad.index_add_(0, self.pairs[:, 1], pull, alpha=-1)
        # signed volumes at branch atoms
        centre = atoms.index_select(0, self.branches[:, 0])
        u, v, w = (atoms.index_select(0, self.branches[:, k]) - centre for k in (1, 2, 3))
        uv = torch.linalg.cross(u, v, dim=-1)
        error = ((uv * w).sum(-1) - self.volume) / s.volume_sd_a3  # (V, T)
        total = total + (error**2).sum(0)
        drift = (error.abs() * s.volume_sd_a3 / s.settle_volume_a3).amax(0)
        strain = torch.maximum(strain, drift)
        if grad is not None:
            scale = (2 * error / s.volume_sd_a3)[..., None]
            du = scale * torch.linalg.cross(v, w, dim=-1)
            dv = scale * torch.linalg.cross(w, u, dim=-1)
            dw = scale * uv
            for k, part in ((1, du), (2, dv), (3, dw)):
                grad.index_add_(0, self.branches[:, k], part)
            grad.index_add_(0, self.branches[:, 0], du + dv + dw, alpha=-1)
        # van der Waals overlaps of the watched pairs (flat atom-major indices: atom * T + frame)
        pairs = self.watched
        first, second = pairs.first * t + pairs.frame, pairs.second * t + pairs.frame
        flat = atoms.view(-1, 3)
        contact = flat.index_select(0, first) - flat.index_select(0, second)
        d = torch.linalg.vector_norm(contact, dim=-1)
        excess = torch.relu(pairs.limit - d)
        overlap = excess / s.clash_sd_a
        total = total.index_add(0, pairs.frame, overlap**2)
        strain = strain.scatter_reduce(0, pairs.frame, excess / s.settle_overlap_a, reduce="amax")
        if grad is not None:
            push = (-2 * overlap / s.clash_sd_a / d)[:, None] * contact
            grad.view(-1, 3).index_add_(0, first, push)
            grad.view(-1, 3).index_add_(0, second, push, alpha=-1)
        value, worst = self._torsions(atoms, grad)
        total, strain = total + value, torch.maximum(strain, worst)
        if grad is None:
            return total, strain, None
        return total, strain, grad.transpose(0, 1) + 2 * shift

    def _torsions(
        self, atoms: torch.Tensor, grad: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The torsion terms ``(T,)`` of atom-major positions ``(N, T, 3)`` and their strain
        ``(T,)``, gradient into ``grad`` if given. Every dihedral they need (phi, psi, omega,
        the judged chi1 and chi2) is measured in one call on the table :attr:`dihedrals`:

        - Ramachandran: (phi, psi) from ``rama_margin_deg`` inside the 99% region's edge,
          squared in units of ``rama_sd_deg``, times ``rama_weight``;
        - omega: degrees beyond ``omega_tolerance_deg`` of trans (or cis), squared in units of
          ``omega_sd_deg``;
        - rotamers: (chi1, chi2) outside the Janin region, chi1 of CYS/SER/THR/VAL away from
          staggered, as the Ramachandran term, times ``rotamer_weight``.
        """
        s, table, part = self.settings, self.dihedrals, self.dihedral_part
        zero = atoms.new_zeros(atoms.shape[1])
        if not len(table):
            return zero, zero
        corners = [atoms.index_select(0, table[:, k]) for k in range(4)]  # each (Q, T, 3)
        angle, d_angle = dihedral_gradient(*corners)
        slope = torch.zeros_like(angle)  # dE/d(angle), (Q, T)
        total, strain = zero, zero

        def region(weight, sd, settle, distance, pieces):
            """A term on the signed distance to an allowed region; ``pieces``: (slice of the
            table, d(distance)/d(angle)) for each angle the distance depends on."""
            beyond = torch.relu(distance + s.rama_margin_deg)
            outside = beyond / sd
            for rows, d_distance in pieces:
                slope[rows] += 2 * weight * outside / sd * d_distance
            return weight * (outside**2).sum(0), (beyond / settle).amax(0)

        terms = []
        if s.rama_weight > 0 and part["phi"].stop > part["phi"].start:
            phi, psi = angle[part["phi"]], angle[part["psi"]]
            distance, d_phi, d_psi = ramachandran_distance_slope(phi, psi)
            pieces = ((part["phi"], d_phi), (part["psi"], d_psi))
            terms.append(region(s.rama_weight, s.rama_sd_deg, s.settle_rama_deg, distance, pieces))
        if s.rotamer_weight > 0:
            if part["chi1"].stop > part["chi1"].start:
                chi1, chi2 = angle[part["chi1"]], angle[part["chi2"]]
                distance, d_chi1, d_chi2 = janin_distance_slope(chi1, chi2)
                pieces = ((part["chi1"], d_chi1), (part["chi2"], d_chi2))
                terms.append(
                    region(s.rotamer_weight, s.rama_sd_deg, s.settle_rotamer_deg, distance, pieces)
                )
            if part["chi1_only"].stop > part["chi1_only"].start:
                distance, d_chi = staggered_distance_slope(angle[part["chi1_only"]])
                pieces = ((part["chi1_only"], d_chi),)
                terms.append(
                    region(s.rotamer_weight, s.rama_sd_deg, s.settle_rotamer_deg, distance, pieces)
                )
        if part["omega"].stop > part["omega"].start:
            degrees = torch.rad2deg(angle[part["omega"]])
            off = torch.where(self.cis, degrees, degrees - torch.sign(degrees) * 180.0)
            beyond = torch.relu(off.abs() - s.omega_tolerance_deg)
            excess = beyond / s.omega_sd_deg
            slope[part["omega"]] += 2 * excess / s.omega_sd_deg * torch.sign(off) * 180 / math.pi
            terms.append(((excess**2).sum(0), (beyond / s.settle_omega_deg).amax(0)))
        for value, worst in terms:
            total, strain = total + value, torch.maximum(strain, worst)
        if grad is not None:
            for k in range(4):
                grad.index_add_(0, table[:, k], slope[..., None] * d_angle[k])
        return total, strain


def polish(
    xyz: np.ndarray,
    plan: PolishPlan,
    settings: PolishSettings = PolishSettings(),
    measure: bool = True,
) -> Polished:
    """Polish heavy-atom frames ``xyz (T, N, 3)`` (Angstrom) of the topology of ``plan``; see the
    module docstring for the energy. Every frame is minimised on its own (its own L-BFGS
    history and line search), so a frame's result does not depend on which frames it is
    polished with. ``measure=False`` skips the overlaps before and after (a last pair search
    per frame) for a caller that judges the frames itself; the frames are the same."""
    start = torch.as_tensor(np.asarray(xyz), dtype=torch.float64)
    energy = _Energy(start, plan, settings)
    before = energy.overlap(start).numpy() if measure else None
    x = start.clone()
    with torch.inference_mode(False):
        for round_ in range(settings.rounds):
            if round_ > 0:  # the first round's pairs are those listed from the input at set-up
                energy.watch(x)
            x = _lbfgs(energy, x, settings.iterations)
    after = None
    if measure:
        energy.watch(x)
        after = energy.overlap(x).numpy()
    return Polished(
        xyz=x.numpy(),
        max_shift_a=torch.linalg.vector_norm(x - start, dim=-1).amax(-1).numpy(),
        overlap_before_a=before,
        overlap_after_a=after,
    )


HISTORY = 10
"""L-BFGS memory (pairs of steps and gradient changes kept per frame)."""
MAX_STEP_A = 0.2
"""No atom moves by more than this in one L-BFGS step (Angstrom)."""
ARMIJO = 1e-4
BACKTRACKS = 8


def _lbfgs(energy: _Energy, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """:func:`_lbfgs_torch`'s steps, every frame in the compiled loop of
    :func:`starmd.structure.polish_kernel.lbfgs` (same algorithm, same energy)."""
    from starmd.structure.polish_kernel import lbfgs

    out = np.ascontiguousarray(x.numpy(), dtype=np.float64).copy()
    lbfgs(out, energy.kernel_tables(), iterations, HISTORY, MAX_STEP_A, ARMIJO, BACKTRACKS)
    return torch.from_numpy(out)


def _lbfgs_torch(energy: _Energy, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Up to ``iterations`` L-BFGS steps on every frame of ``x (T, N, 3)`` independently:
    per-frame two-loop recursion over the last :data:`HISTORY` steps, then a backtracking
    (Armijo) line search per frame from the full step, capped at :data:`MAX_STEP_A` per atom.
    A frame whose line search fails keeps its position for that step; a frame with nothing left
    worth fixing (strain <= 1: every watched overlap, Ramachandran and omega excess and
    covalent deviation within its settle slack) stops there and leaves the batch, so the cost
    follows the frames that still need work."""
    out = x.clone()
    active = torch.arange(x.shape[0])
    value, strain, grad = energy.value_and_grad(x)
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for _ in range(iterations):
        settled = strain <= 1.0
        if bool(settled.any()):
            out[active[settled]] = x[settled]
            keep = ~settled
            if not bool(keep.any()):
                return out
            active, x, value, strain, grad = (a[keep] for a in (active, x, value, strain, grad))
            steps = [(s[keep], y[keep], rho[keep]) for s, y, rho in steps]
            energy = energy.select(keep)
        t = x.shape[0]
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
        new = [x.clone(), value.clone(), strain.clone(), grad.clone()]
        for _ in range(BACKTRACKS):
            # the gradient comes with each trial (in closed form it costs about one more
            # energy), so the usual case, a full step accepted, needs one evaluation
            trial = x + alpha[:, None, None] * direction
            trial_value, trial_strain, trial_grad = energy.value_and_grad(trial)
            ok = ~accepted & (trial_value <= value + ARMIJO * alpha * slope)
            tried = (trial, trial_value, trial_strain, trial_grad)
            for kept, candidate in zip(new, tried, strict=True):
                kept[ok] = candidate[ok]
            accepted |= ok
            if bool(accepted.all()):
                break
            alpha = torch.where(accepted, alpha, alpha / 2)
        new_x, new_value, new_strain, new_grad = new
        s = (new_x - x).flatten(1)
        y = (new_grad - grad).flatten(1)
        curvature = (s * y).sum(1)
        rho = torch.where(curvature > 1e-12, 1.0 / curvature.clamp(min=1e-12), 0.0)
        steps.append((s, y, rho))
        if len(steps) > HISTORY:
            steps.pop(0)
        x, value, strain, grad = new_x, new_value, new_strain, new_grad
    out[active] = x
    return out
