"""Per-frame structural validity: the CA and all-atom checks of the STAR-MD paper's table.

A frame is **CA-valid** when it has no CA-CA clash and no CA chain break; **AA-valid** when it has
no heavy-atom clash, no peptide-bond break, at most 4.12% Ramachandran outliers and at most 7.05%
rotamer outliers (the paper's thresholds, the 99th percentile of ATLAS MD); **valid** (CA+AA)
when both hold. Non-finite frames are invalid.

Thresholds (fixed; Angstrom):

- CA clash: two CA atoms not adjacent in sequence closer than 3.0 A.
- CA chain break: consecutive CA atoms (same chain, residue numbers differing by 1) farther than
  4.5 A (as BioEmu's filter).
- heavy-atom clash: atoms of residues at least two apart (or in different chains) closer than
  the sum of their Bondi van der Waals radii minus 0.4 A (MolProbity's clash overlap), or minus
  0.7 A when both are N/O (hydrogen bonds bring donor and acceptor to about 2.6-3.0 A; with
  hydrogens stripped the 0.4 A rule would call them clashes). Disulfide SG-SG pairs are exempt.
- peptide-bond break: C(i)-N(i+1) farther than 2.0 A.
- Ramachandran outlier: (phi, psi) of a non-glycine residue in a bin of the MDAnalysis reference
  histogram (Lovell et al. 2003 structure set, 4 degree bins) outside its 99% contour (count < 1).
- rotamer outlier: (chi1, chi2) of a residue outside the 99% contour of the MDAnalysis Janin
  reference histogram (6 degree bins; ALA CYS GLY PRO SER THR VAL excluded as in MDAnalysis);
  residues with chi1 only (CYS SER THR VAL) are outliers when chi1 is more than 40 degrees from
  every staggered value (60, 180, 300). These are documented substitutes for MolProbity's
  residue-specific contours; see ``data/README.md`` for source and licence.

Everything streams over frames (chunks) and finds close pairs with a KD-tree per frame, so memory
does not grow with the number of atom pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import mdtraj as md
import numpy as np
from scipy.spatial import cKDTree

from starmd.evaluate.geometry import dihedrals
from starmd.structure.checks import CA_BREAK_A, CA_CLASH_A
from starmd.structure.superpose import chunks

PEPTIDE_BREAK_A = 2.0
CLASH_OVERLAP_A = 0.4
POLAR_CLASH_OVERLAP_A = 0.7
RAMA_OUTLIER_MAX = 0.0412
ROTAMER_OUTLIER_MAX = 0.0705
STAGGERED_TOLERANCE_DEG = 40.0

VDW_RADIUS_A = {"C": 1.70, "N": 1.55, "O": 1.52, "S": 1.80, "SE": 1.90}
_JANIN_EXCLUDED = {"ALA", "CYS", "GLY", "PRO", "SER", "THR", "VAL"}
_CHI1_ONLY = {"CYS", "SER", "THR", "VAL"}


@cache
def _reference_histograms() -> tuple[np.ndarray, np.ndarray]:
    data = resources.files("starmd.evaluate") / "data"
    with (data / "rama_ref_data.npy").open("rb") as fh:
        rama = np.load(fh)
    with (data / "janin_ref_data.npy").open("rb") as fh:
        janin = np.load(fh)
    return rama, janin


def ramachandran_allowed(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Whether (phi, psi) in radians lie inside the 99% reference contour; same shape, bool."""
    rama, _ = _reference_histograms()
    phi, psi = np.nan_to_num(phi), np.nan_to_num(psi)  # undefined angles: judged elsewhere
    i = (np.floor((np.degrees(phi) + 180.0) / 4.0).astype(int)) % 90
    j = (np.floor((np.degrees(psi) + 180.0) / 4.0).astype(int)) % 90
    return rama[j, i] >= 1.0


def janin_allowed(chi1: np.ndarray, chi2: np.ndarray) -> np.ndarray:
    """Whether (chi1, chi2) in radians lie inside the 99% Janin reference contour; bool."""
    _, janin = _reference_histograms()
    chi1, chi2 = np.nan_to_num(chi1), np.nan_to_num(chi2)
    i = (np.floor((np.degrees(chi1) % 360.0) / 6.0).astype(int)) % 60
    j = (np.floor((np.degrees(chi2) % 360.0) / 6.0).astype(int)) % 60
    return janin[j, i] >= 1.0


def staggered(chi1: np.ndarray) -> np.ndarray:
    """Whether chi1 (radians) is within 40 degrees of a staggered rotamer (60, 180, 300 deg)."""
    deg = np.degrees(chi1) % 360.0
    diffs = [np.abs((deg - c + 180.0) % 360.0 - 180.0) for c in (60.0, 180.0, 300.0)]
    return np.min(diffs, axis=0) <= STAGGERED_TOLERANCE_DEG


@dataclass(frozen=True)
class ValidityPlan:
    """Atom indices and thresholds that the per-frame checks need, derived once per topology."""

    ca: np.ndarray
    ca_adjacent: np.ndarray
    ca_residue: np.ndarray
    peptide_bonds: np.ndarray
    atom_residue: np.ndarray
    atom_radius: np.ndarray
    atom_polar: np.ndarray
    atom_is_sg: np.ndarray
    residue_chain: np.ndarray
    residue_number: np.ndarray
    phi_psi: np.ndarray
    chi_pairs: np.ndarray
    chi1_only: np.ndarray

    @property
    def n_rama(self) -> int:
        return len(self.phi_psi)

    @property
    def n_rotamer(self) -> int:
        return len(self.chi_pairs) + len(self.chi1_only)


def _named(topology: md.Topology) -> dict[tuple[int, str], int]:
    return {(a.residue.index, a.name): a.index for a in topology.atoms}


def _consecutive(topology: md.Topology, r1: md.core.topology.Residue, r2) -> bool:
    return r1.chain.index == r2.chain.index and r2.resSeq - r1.resSeq == 1


def plan_validity(topology: md.Topology) -> ValidityPlan:
    """Precompute the atom groups of the checks for a heavy-atom topology."""
    atoms = _named(topology)
    residues = list(topology.residues)
    ca, ca_residue = [], []
    for r in residues:
        if (r.index, "CA") in atoms:
            ca.append(atoms[(r.index, "CA")])
            ca_residue.append(r.index)
    adjacent = []
    for k in range(len(ca) - 1):
        r1, r2 = residues[ca_residue[k]], residues[ca_residue[k + 1]]
        if _consecutive(topology, r1, r2):
            adjacent.append((k, k + 1))
    peptide, phi_psi = [], []
    for r1, r2 in zip(residues[:-1], residues[1:], strict=True):
        if _consecutive(topology, r1, r2) and (r1.index, "C") in atoms and (r2.index, "N") in atoms:
            peptide.append((atoms[(r1.index, "C")], atoms[(r2.index, "N")]))
    for k in range(1, len(residues) - 1):
        prev, r, nxt = residues[k - 1], residues[k], residues[k + 1]
        names = [
            (prev.index, "C"),
            (r.index, "N"),
            (r.index, "CA"),
            (r.index, "C"),
            (nxt.index, "N"),
        ]
        if (
            r.name != "GLY"
            and all(n in atoms for n in names)
            and _consecutive(topology, prev, r)
            and _consecutive(topology, r, nxt)
        ):
            idx = [atoms[n] for n in names]
            phi_psi.append((idx[0], idx[1], idx[2], idx[3], idx[4]))
    chi_pairs, chi1_only = _chi_quartets(topology)
    elements = [
        (a.element.symbol.upper() if a.element is not None else a.name[0]) for a in topology.atoms
    ]
    return ValidityPlan(
        ca=np.array(ca, dtype=int),
        ca_adjacent=np.array(adjacent, dtype=int).reshape(-1, 2),
        ca_residue=np.array(ca_residue, dtype=int),
        peptide_bonds=np.array(peptide, dtype=int).reshape(-1, 2),
        atom_residue=np.array([a.residue.index for a in topology.atoms], dtype=int),
        atom_radius=np.array([VDW_RADIUS_A.get(e, 1.7) for e in elements]),
        atom_polar=np.array([e in ("N", "O") for e in elements]),
        atom_is_sg=np.array([a.name == "SG" for a in topology.atoms]),
        residue_chain=np.array([r.chain.index for r in residues], dtype=int),
        residue_number=np.array([r.resSeq for r in residues], dtype=int),
        phi_psi=np.array(phi_psi, dtype=int).reshape(-1, 5),
        chi_pairs=chi_pairs,
        chi1_only=chi1_only,
    )


def _chi_quartets(topology: md.Topology) -> tuple[np.ndarray, np.ndarray]:
    """(chi1, chi2) quartet pairs ``(K, 2, 4)`` of Janin residues; chi1 quartets ``(K', 4)``."""
    dummy = md.Trajectory(np.zeros((1, topology.n_atoms, 3), dtype=np.float32), topology)
    chi1_idx, _ = md.compute_chi1(dummy)
    chi2_idx, _ = md.compute_chi2(dummy)
    chi2_by_residue = {topology.atom(q[1]).residue.index: q for q in chi2_idx}
    pairs, singles = [], []
    for q in chi1_idx:
        residue = topology.atom(q[1]).residue
        if residue.name in _CHI1_ONLY:
            singles.append(q)
        elif residue.name not in _JANIN_EXCLUDED and residue.index in chi2_by_residue:
            pairs.append((q, chi2_by_residue[residue.index]))
    return (
        np.array(pairs, dtype=int).reshape(-1, 2, 4),
        np.array(singles, dtype=int).reshape(-1, 4),
    )


def _frame_clashes(x: np.ndarray, plan: ValidityPlan) -> tuple[bool, bool]:
    """(CA clash, heavy-atom clash) of one finite frame ``(N, 3)``."""
    ca_xyz = x[plan.ca]
    pairs = cKDTree(ca_xyz).query_pairs(CA_CLASH_A, output_type="ndarray")
    ca_clash = False
    if len(pairs):
        ri, rj = plan.ca_residue[pairs[:, 0]], plan.ca_residue[pairs[:, 1]]
        bonded = (plan.residue_chain[ri] == plan.residue_chain[rj]) & (
            np.abs(plan.residue_number[ri] - plan.residue_number[rj]) <= 1
        )
        ca_clash = bool((~bonded).any())
    cutoff = 2 * max(VDW_RADIUS_A.values()) - CLASH_OVERLAP_A
    pairs = cKDTree(x).query_pairs(cutoff, output_type="ndarray")
    aa_clash = False
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        ri, rj = plan.atom_residue[i], plan.atom_residue[j]
        far = (plan.residue_chain[ri] != plan.residue_chain[rj]) | (
            np.abs(plan.residue_number[ri] - plan.residue_number[rj]) >= 2
        )
        polar = plan.atom_polar[i] & plan.atom_polar[j]
        allowed = np.where(polar, POLAR_CLASH_OVERLAP_A, CLASH_OVERLAP_A)
        limit = plan.atom_radius[i] + plan.atom_radius[j] - allowed
        distance = np.linalg.norm(x[i] - x[j], axis=1)
        disulfide = plan.atom_is_sg[i] & plan.atom_is_sg[j]
        aa_clash = bool((far & ~disulfide & (distance < limit)).any())
    return ca_clash, aa_clash


def check_validity(frames: np.ndarray, plan: ValidityPlan) -> dict[str, np.ndarray]:
    """Run every check on every frame.

    Args:
        frames: ``(T, N, 3)`` Angstrom, in the topology of ``plan``.
        plan: from :func:`plan_validity`.

    Returns:
        per-frame arrays ``(T,)``: ``finite``, ``ca_clash``, ``ca_break``, ``aa_clash``,
        ``aa_break`` (bool), ``rama_outlier_fraction``, ``rotamer_outlier_fraction`` (in [0, 1];
        0 when the topology has no residue to check), and ``valid_ca``, ``valid_aa``,
        ``valid`` (bool).
    """
    n = len(frames)
    out = {
        key: np.zeros(n, dtype=bool)
        for key in ("finite", "ca_clash", "ca_break", "aa_clash", "aa_break")
    }
    out["rama_outlier_fraction"] = np.zeros(n)
    out["rotamer_outlier_fraction"] = np.zeros(n)
    for block in chunks(n, 256):
        x = frames[block].astype(np.float64)
        finite = np.isfinite(x).all(axis=(1, 2))
        out["finite"][block] = finite
        x[~finite] = 0.0  # judged invalid below; zeros keep the vectorised checks warning-free
        if len(plan.ca_adjacent):
            a, b = plan.ca[plan.ca_adjacent[:, 0]], plan.ca[plan.ca_adjacent[:, 1]]
            out["ca_break"][block] = (np.linalg.norm(x[:, a] - x[:, b], axis=2) > CA_BREAK_A).any(1)
        if len(plan.peptide_bonds):
            a, b = plan.peptide_bonds[:, 0], plan.peptide_bonds[:, 1]
            gap = np.linalg.norm(x[:, a] - x[:, b], axis=2)
            out["aa_break"][block] = (gap > PEPTIDE_BREAK_A).any(1)
        if plan.n_rama:
            phi = dihedrals(x, plan.phi_psi[:, :4])
            psi = dihedrals(x, plan.phi_psi[:, 1:])
            out["rama_outlier_fraction"][block] = (~ramachandran_allowed(phi, psi)).mean(axis=1)
        if plan.n_rotamer:
            outliers = np.zeros(len(x))
            if len(plan.chi_pairs):
                chi1 = dihedrals(x, plan.chi_pairs[:, 0])
                chi2 = dihedrals(x, plan.chi_pairs[:, 1])
                outliers += (~janin_allowed(chi1, chi2)).sum(axis=1)
            if len(plan.chi1_only):
                outliers += (~staggered(dihedrals(x, plan.chi1_only))).sum(axis=1)
            out["rotamer_outlier_fraction"][block] = outliers / plan.n_rotamer
        for k in np.flatnonzero(finite):
            ca_clash, aa_clash = _frame_clashes(x[k], plan)
            out["ca_clash"][block.start + k] = ca_clash
            out["aa_clash"][block.start + k] = aa_clash
    finite = out["finite"]
    out["valid_ca"] = finite & ~out["ca_clash"] & ~out["ca_break"]
    out["valid_aa"] = (
        finite
        & ~out["aa_clash"]
        & ~out["aa_break"]
        & (out["rama_outlier_fraction"] <= RAMA_OUTLIER_MAX)
        & (out["rotamer_outlier_fraction"] <= ROTAMER_OUTLIER_MAX)
    )
    out["valid"] = out["valid_ca"] & out["valid_aa"]
    return out


def validity_summary(checks: dict[str, np.ndarray]) -> dict[str, float]:
    """Percentages of valid frames: ``validity_ca_pct``, ``validity_aa_pct``, ``validity_pct``."""
    return {
        "validity_ca_pct": 100.0 * float(checks["valid_ca"].mean()),
        "validity_aa_pct": 100.0 * float(checks["valid_aa"].mean()),
        "validity_pct": 100.0 * float(checks["valid"].mean()),
    }
