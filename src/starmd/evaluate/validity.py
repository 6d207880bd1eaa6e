"""Per-frame structural validity: the CA and all-atom checks of the STAR-MD paper's table.

A frame is **CA-valid** when it has no CA-CA clash and no CA chain break; **AA-valid** when it has
no heavy-atom clash, no peptide-bond break, at most 4.12% Ramachandran outliers and at most 7.05%
rotamer outliers (the paper's thresholds, the 99th percentile of ATLAS MD); **valid** (CA+AA)
when both hold. Non-finite frames are invalid.

Headline thresholds (fixed, :data:`HEADLINE`; Angstrom):

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
  residue-specific contours; the histograms live in :mod:`starmd.structure.ramachandran`
  (source and licence: ``starmd/structure/data/README.md``).

Every check thresholds one continuous per-frame measure (:func:`measure_frames`), so the same
frames can be judged under other conventions (:func:`judge`): ConfDiff/MDGen's CA break at 4.19 A
(:data:`CA_BREAK_CONFDIFF`), and thresholds derived from the reference MD at hand, each at the
99th percentile of the MD's own frames as the paper derived its thresholds from ATLAS
(:func:`thresholds_from_md`). The evaluation reports all three; the headline stays.

Everything streams over frames (chunks) and finds close pairs with a KD-tree per frame, so memory
does not grow with the number of atom pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj as md
import numpy as np
from scipy.spatial import cKDTree

from starmd.evaluate.geometry import dihedrals
from starmd.structure.checks import CA_BREAK_A, CA_CLASH_A
from starmd.structure.local_geometry import CLASH_OVERLAP_A, POLAR_ALLOWANCE_A, VDW_RADIUS_A
from starmd.structure.ramachandran import (
    STAGGERED_TOLERANCE_DEG,
    janin_allowed,
    judged_chi_atoms,
    judged_residue_atoms,
    ramachandran_allowed,
)
from starmd.structure.residue_constants import PEPTIDE_BREAK_A
from starmd.structure.superpose import chunks

# ConfDiff's and MDGen's chain-break threshold (reported as an extra row).
CA_BREAK_CONFDIFF_A = 4.19
# Non-bonded CA pairs are searched within this radius; the closest distance is capped here.
CA_SEARCH_A = 8.0
MD_PERCENTILE = 99.0
RAMA_OUTLIER_MAX = 0.0412
ROTAMER_OUTLIER_MAX = 0.0705


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
    peptide = []
    for r1, r2 in zip(residues[:-1], residues[1:], strict=True):
        if _consecutive(topology, r1, r2) and (r1.index, "C") in atoms and (r2.index, "N") in atoms:
            peptide.append((atoms[(r1.index, "C")], atoms[(r2.index, "N")]))
    chi_pairs, chi1_only = judged_chi_atoms(topology)
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
        phi_psi=judged_residue_atoms(topology),
        chi_pairs=chi_pairs,
        chi1_only=chi1_only,
    )


def _frame_close_contacts(x: np.ndarray, plan: ValidityPlan) -> tuple[float, float]:
    """(closest non-bonded CA-CA distance, largest heavy-atom overlap) of one finite frame.

    The CA distance is over CA pairs not adjacent in sequence, capped at
    :data:`CA_SEARCH_A`. The overlap is ``r_i + r_j - d`` over atoms of residues at least two
    apart (or in different chains), less the extra hydrogen-bond allowance for N/O pairs and
    excluding disulfide SG-SG, floored at 0; so the fixed rule "clash" reads ``overlap > 0.4``.
    Angstrom.
    """
    ca_xyz = x[plan.ca]
    closest = CA_SEARCH_A
    pairs = cKDTree(ca_xyz).query_pairs(CA_SEARCH_A, output_type="ndarray")
    if len(pairs):
        ri, rj = plan.ca_residue[pairs[:, 0]], plan.ca_residue[pairs[:, 1]]
        bonded = (plan.residue_chain[ri] == plan.residue_chain[rj]) & (
            np.abs(plan.residue_number[ri] - plan.residue_number[rj]) <= 1
        )
        pairs = pairs[~bonded]
        if len(pairs):
            closest = float(np.linalg.norm(ca_xyz[pairs[:, 0]] - ca_xyz[pairs[:, 1]], axis=1).min())
    overlap = 0.0
    pairs = cKDTree(x).query_pairs(2 * max(VDW_RADIUS_A.values()), output_type="ndarray")
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        ri, rj = plan.atom_residue[i], plan.atom_residue[j]
        far = (plan.residue_chain[ri] != plan.residue_chain[rj]) | (
            np.abs(plan.residue_number[ri] - plan.residue_number[rj]) >= 2
        )
        far &= ~(plan.atom_is_sg[i] & plan.atom_is_sg[j])
        polar = plan.atom_polar[i] & plan.atom_polar[j]
        allowance = np.where(polar, POLAR_ALLOWANCE_A, 0.0)
        distance = np.linalg.norm(x[i] - x[j], axis=1)
        excess = plan.atom_radius[i] + plan.atom_radius[j] - distance - allowance
        if far.any():
            overlap = max(0.0, float(excess[far].max()))
    return closest, overlap


def _close_contacts(
    x: np.ndarray, finite: np.ndarray, plan: ValidityPlan
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_frame_close_contacts` of every finite frame of ``x (T, N, 3)`` (0 for the
    others), by the compiled loop of :mod:`starmd.evaluate.contacts_kernel` (the same pairs and
    the same arithmetic: equal values, a fraction of the time)."""
    from starmd.evaluate.contacts_kernel import close_contacts  # numba: imported on first use

    return close_contacts(
        np.ascontiguousarray(x, dtype=np.float64),
        finite,
        plan.ca.astype(np.int64),
        plan.ca_residue.astype(np.int64),
        plan.atom_residue.astype(np.int64),
        plan.residue_chain.astype(np.int64),
        plan.residue_number.astype(np.int64),
        plan.atom_is_sg.astype(np.bool_),
        plan.atom_polar.astype(np.bool_),
        plan.atom_radius.astype(np.float64),
        CA_SEARCH_A,
        2 * max(VDW_RADIUS_A.values()),
        POLAR_ALLOWANCE_A,
    )


@dataclass(frozen=True)
class ValidityThresholds:
    """The limits that turn per-frame measures into pass/fail (Angstrom; fractions in [0, 1]).

    The defaults are the headline convention (module docstring); :func:`thresholds_from_md`
    derives a set from reference MD instead, as the STAR-MD paper derived its own.
    """

    ca_clash_a: float = CA_CLASH_A
    ca_break_a: float = CA_BREAK_A
    clash_overlap_a: float = CLASH_OVERLAP_A
    peptide_break_a: float = PEPTIDE_BREAK_A
    rama_outlier_max: float = RAMA_OUTLIER_MAX
    rotamer_outlier_max: float = ROTAMER_OUTLIER_MAX


HEADLINE = ValidityThresholds()
CA_BREAK_CONFDIFF = ValidityThresholds(ca_break_a=CA_BREAK_CONFDIFF_A)


def measure_frames(frames: np.ndarray, plan: ValidityPlan) -> dict[str, np.ndarray]:
    """The continuous per-frame quantities that every validity check thresholds.

    Args:
        frames: ``(T, N, 3)`` Angstrom, in the topology of ``plan``.
        plan: from :func:`plan_validity`.

    Returns:
        arrays ``(T,)``: ``finite`` (bool); ``ca_min_nonbonded_a`` (closest CA pair not adjacent
        in sequence, capped at 8 A), ``ca_max_consecutive_a`` (longest CA(i)-CA(i+1)),
        ``clash_max_overlap_a`` (largest heavy-atom vdW overlap, see
        :func:`_frame_close_contacts`), ``peptide_max_a`` (longest C(i)-N(i+1)), all Angstrom
        (0 where the topology has no such pair); ``rama_outlier_fraction``,
        ``rotamer_outlier_fraction`` (in [0, 1]). Non-finite frames hold 0 and are judged by
        ``finite``.
    """
    n = len(frames)
    out = {"finite": np.zeros(n, dtype=bool)}
    for key in (
        "ca_min_nonbonded_a", "ca_max_consecutive_a", "clash_max_overlap_a", "peptide_max_a",
        "rama_outlier_fraction", "rotamer_outlier_fraction",
    ):  # fmt: skip
        out[key] = np.zeros(n)
    for block in chunks(n, 256):
        x = frames[block].astype(np.float64)
        finite = np.isfinite(x).all(axis=(1, 2))
        out["finite"][block] = finite
        x[~finite] = 0.0  # judged invalid by `finite`; zeros keep the vectorised checks quiet
        if len(plan.ca_adjacent):
            a, b = plan.ca[plan.ca_adjacent[:, 0]], plan.ca[plan.ca_adjacent[:, 1]]
            out["ca_max_consecutive_a"][block] = np.linalg.norm(x[:, a] - x[:, b], axis=2).max(1)
        if len(plan.peptide_bonds):
            a, b = plan.peptide_bonds[:, 0], plan.peptide_bonds[:, 1]
            out["peptide_max_a"][block] = np.linalg.norm(x[:, a] - x[:, b], axis=2).max(1)
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
        closest, overlap = _close_contacts(x, finite, plan)
        out["ca_min_nonbonded_a"][block] = closest
        out["clash_max_overlap_a"][block] = overlap
    return out


def judge(
    measures: dict[str, np.ndarray], thresholds: ValidityThresholds = HEADLINE
) -> dict[str, np.ndarray]:
    """Pass/fail per frame of :func:`measure_frames`' output under ``thresholds``.

    Returns:
        bool arrays ``(T,)``: ``ca_clash``, ``ca_break``, ``aa_clash``, ``aa_break``,
        ``valid_ca``, ``valid_aa``, ``valid`` (non-finite frames are invalid).
    """
    t = thresholds
    finite = measures["finite"]
    out = {
        "ca_clash": finite & (measures["ca_min_nonbonded_a"] < t.ca_clash_a),
        "ca_break": finite & (measures["ca_max_consecutive_a"] > t.ca_break_a),
        "aa_clash": finite & (measures["clash_max_overlap_a"] > t.clash_overlap_a),
        "aa_break": finite & (measures["peptide_max_a"] > t.peptide_break_a),
    }
    out["valid_ca"] = finite & ~out["ca_clash"] & ~out["ca_break"]
    out["valid_aa"] = (
        finite
        & ~out["aa_clash"]
        & ~out["aa_break"]
        & (measures["rama_outlier_fraction"] <= t.rama_outlier_max)
        & (measures["rotamer_outlier_fraction"] <= t.rotamer_outlier_max)
    )
    out["valid"] = out["valid_ca"] & out["valid_aa"]
    return out


def check_validity(
    frames: np.ndarray, plan: ValidityPlan, thresholds: ValidityThresholds = HEADLINE
) -> dict[str, np.ndarray]:
    """Measure every frame and judge it: :func:`measure_frames` merged with :func:`judge`.

    Args:
        frames: ``(T, N, 3)`` Angstrom, in the topology of ``plan``.
        plan: from :func:`plan_validity`.
        thresholds: the limits (default: the headline convention).

    Returns:
        the per-frame measures plus ``ca_clash``, ``ca_break``, ``aa_clash``, ``aa_break``,
        ``valid_ca``, ``valid_aa``, ``valid`` (bool, ``(T,)``).
    """
    measures = measure_frames(frames, plan)
    return measures | judge(measures, thresholds)


def thresholds_from_md(
    measures: dict[str, np.ndarray], percentile: float = MD_PERCENTILE
) -> ValidityThresholds:
    """Thresholds set where the reference MD's own frames put them, as the STAR-MD paper did.

    Each limit is the ``percentile`` (99th) of the MD's per-frame measure over its finite
    frames, the 1st percentile for the CA clash distance (small is bad), so that about 1% of MD
    frames fail each check. With few MD frames this is close to the worst frame.
    """
    finite = measures["finite"]
    if not finite.any():
        raise ValueError("no finite reference frame to derive validity thresholds from")

    def upper(key: str) -> float:
        return float(np.percentile(measures[key][finite], percentile))

    return ValidityThresholds(
        ca_clash_a=float(np.percentile(measures["ca_min_nonbonded_a"][finite], 100 - percentile)),
        ca_break_a=upper("ca_max_consecutive_a"),
        clash_overlap_a=upper("clash_max_overlap_a"),
        peptide_break_a=upper("peptide_max_a"),
        rama_outlier_max=upper("rama_outlier_fraction"),
        rotamer_outlier_max=upper("rotamer_outlier_fraction"),
    )


def validity_summary(checks: dict[str, np.ndarray], suffix: str = "") -> dict[str, float]:
    """Percentages of valid frames: ``validity_ca_pct``, ``validity_aa_pct``, ``validity_pct``,
    each key followed by ``suffix`` (e.g. ``"_md99"`` for the MD-derived thresholds)."""
    return {
        f"validity_ca_pct{suffix}": 100.0 * float(checks["valid_ca"].mean()),
        f"validity_aa_pct{suffix}": 100.0 * float(checks["valid_aa"].mean()),
        f"validity_pct{suffix}": 100.0 * float(checks["valid"].mean()),
    }


def pooled_checks(checks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-frame check arrays of several trajectories, concatenated."""
    return {k: np.concatenate([c[k] for c in checks]) for k in checks[0]}


def validity_scores(checks: dict[str, np.ndarray], md_thresholds: ValidityThresholds) -> dict:
    """Validity percentages under the three conventions the table shows side by side.

    Headline (``validity_*_pct``), ConfDiff/MDGen's 4.19 A CA break (``*_ca419``) and thresholds
    at the reference MD's 99th percentile (``*_md99``), plus those thresholds themselves
    (``md99_*``: Angstrom, outlier limits in %).
    """
    out = validity_summary(checks)
    out |= validity_summary(judge(checks, CA_BREAK_CONFDIFF), "_ca419")
    out |= validity_summary(judge(checks, md_thresholds), "_md99")
    t = md_thresholds
    out |= {
        "md99_ca_clash_a": t.ca_clash_a,
        "md99_ca_break_a": t.ca_break_a,
        "md99_clash_overlap_a": t.clash_overlap_a,
        "md99_peptide_break_a": t.peptide_break_a,
        "md99_rama_outlier_pct": 100.0 * t.rama_outlier_max,
        "md99_rotamer_outlier_pct": 100.0 * t.rotamer_outlier_max,
    }
    return out
