"""Local geometry of heavy-atom coordinates: backbone bonds, angles, omega and atom contacts.

One torch implementation (any dtype and device, differentiable where the quantity is), used by
the evaluation's local-geometry section, the training loss's structural-violation terms
(:mod:`starmd.train.losses`) and the rollout's refinement (:mod:`starmd.sample.refine`), which
also share the literature values of the peptide junction and the atom15 van der Waals tables
defined here. Angstrom and degrees in, Angstrom and degrees out; leading batch dimensions
(frames) broadcast.

Backbone quantities are returned for every residue (``n_ca``, ``ca_c``) or every consecutive
pair of residues (``c_n``, ``ca_c_n``, ``c_n_ca``, ``omega``, ``ca_ca``: junction i joins
residue i to i+1); the caller keeps the junctions that are real peptide bonds (same chain,
consecutive residue numbers).

Atom contacts: van der Waals overlaps between atoms of residues at least ``min_separation``
apart in sequence (or in different chains), and the closest approach of atoms of different
residues (BioEmu's filter). Candidate residue pairs are found from residue centres first, so
the cost grows with the number of residues in contact, not with the square of the atom count.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from starmd.structure import residue_constants as rc
from starmd.structure.geometry import PROLINE as PROLINE  # re-exported: one definition
from starmd.structure.geometry import dihedral

# Bondi van der Waals radii (Angstrom) of the heavy elements of proteins.
VDW_RADIUS_A = {"C": 1.70, "N": 1.55, "O": 1.52, "S": 1.80, "SE": 1.90}
# MolProbity's clash: atoms overlapping by more than this (Angstrom).
CLASH_OVERLAP_A = 0.4
# Extra overlap allowed between two N/O atoms (hydrogen-bonded donor and acceptor sit at
# 2.6-3.0 A, closer than their radii allow once hydrogens are stripped).
POLAR_ALLOWANCE_A = 0.3
# Atom pairs farther apart than this never overlap (twice the largest radius).
CONTACT_SEARCH_A = 2 * max(VDW_RADIUS_A.values())
_PAIR_BUDGET = 20_000_000  # atom-pair distances computed at once (memory bound)
# Between-residue geometry (Engh & Huber 1991, the values AlphaFold 2's violation loss uses):
# (mean, sd) of the peptide bond C(i)-N(i+1) in Angstrom (i+1 not proline, proline) and of the
# angles CA(i)-C(i)-N(i+1) and C(i)-N(i+1)-CA(i+1) in degrees.
PEPTIDE_BOND_A = ((1.329, 0.014), (1.341, 0.016))
CA_C_N_DEG = (116.568, 1.995)
C_N_CA_DEG = (121.352, 2.315)
# C(i) to CD(i+1) of a proline, the 1-3 distance across its N (mean, sd; Angstrom): C-N 1.341 A
# and N-CD 1.473 A at a C-N-CD angle of about 127 degrees (Engh & Huber) give 2.52 A; the corpus
# MD's own frames 2.508 +- 0.049 A (24 proteins, 84 X-Pro junctions).
PROLINE_C_CD_A = (2.51, 0.05)
PROLINE_CD_SLOT = rc.ATOM14_NAMES["PRO"].index("CD")


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distances ``(...)`` between points ``(..., 3)``."""
    return torch.linalg.vector_norm(a - b, dim=-1)


def bond_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle a-b-c at ``b`` in degrees, ``(...)`` from points ``(..., 3)``."""
    u, v = a - b, c - b
    cosine = (u * v).sum(-1) / (
        torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(v, dim=-1)
    )
    return torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0)))


def backbone_geometry(
    n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Bond lengths, bond angles and omega of a backbone.

    Args:
        n, ca, c: ``(..., L, 3)`` Angstrom, residues in chain order.

    Returns:
        ``n_ca``, ``ca_c`` ``(..., L)`` Angstrom; ``c_n`` (C(i)-N(i+1)), ``ca_ca``
        (CA(i)-CA(i+1)) ``(..., L-1)`` Angstrom; ``ca_c_n`` (CA(i)-C(i)-N(i+1)), ``c_n_ca``
        (C(i)-N(i+1)-CA(i+1)), ``omega`` (dihedral CA(i)-C(i)-N(i+1)-CA(i+1), +-180 = trans)
        ``(..., L-1)`` degrees.
    """
    ca0, c0, n1, ca1 = ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :]
    return {
        "n_ca": distance(n, ca),
        "ca_c": distance(ca, c),
        "c_n": distance(c0, n1),
        "ca_ca": distance(ca0, ca1),
        "ca_c_n": bond_angle(ca0, c0, n1),
        "c_n_ca": bond_angle(c0, n1, ca1),
        "omega": torch.rad2deg(dihedral(ca0, c0, n1, ca1)),
    }


def peptide_bonds(
    residue_index: torch.Tensor, chain_index: torch.Tensor, residue_mask: torch.Tensor
) -> torch.Tensor:
    """Junctions that are peptide bonds: ``(..., L) -> (..., L-1)`` bool, residue i bonded to
    i+1 (both present, same chain, consecutive segment index: a chain break or a spatial crop
    leaves a gap in the index)."""
    consecutive = residue_index[..., 1:] - residue_index[..., :-1] == 1
    same_chain = chain_index[..., 1:] == chain_index[..., :-1]
    return consecutive & same_chain & residue_mask[..., 1:] & residue_mask[..., :-1]


def flat_bottom(value: torch.Tensor, mean_sd: tuple, tolerance_sd: float) -> torch.Tensor:
    """How far ``value`` lies outside ``mean +- tolerance_sd * sd`` (0 inside)."""
    mean, sd = mean_sd
    return torch.relu((value - mean).abs() - tolerance_sd * sd)


@functools.cache
def atom15_tables() -> dict[str, np.ndarray]:
    """Per residue type (index 20 = unknown: empty) and atom15 slot: ``radius`` (van der Waals,
    Angstrom, 0 for empty slots; OXT as an O), ``polar`` (N or O) and ``sulfur_gamma`` (a
    cysteine SG: two of them may form a disulfide bond), ``(21, 15)``."""
    radius = np.zeros((len(rc.RESTYPE_3) + 1, rc.ATOMS_PER_RESIDUE))
    polar = np.zeros_like(radius, dtype=bool)
    sulfur_gamma = np.zeros_like(radius, dtype=bool)
    for t, name in enumerate(rc.RESTYPE_3):
        for slot, atom in enumerate(rc.ATOM14_NAMES[name]):
            radius[t, slot] = VDW_RADIUS_A[rc.ELEMENTS[atom[0]]]
            polar[t, slot] = rc.ELEMENTS[atom[0]] in ("N", "O")
        radius[t, rc.OXT_SLOT] = VDW_RADIUS_A["O"]
        polar[t, rc.OXT_SLOT] = True
        if name == "CYS":
            sulfur_gamma[t, rc.ATOM14_NAMES[name].index("SG")] = True
    return {"radius": radius, "polar": polar, "sulfur_gamma": sulfur_gamma}


def _residue_pairs(centres: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """Residue pairs ``(P, 2)``, i < j, that may have atoms within the contact search radius
    in any of the frames ``centres (T, R, 3)`` (``reach (T, R)``: farthest atom from the
    centre)."""
    near = torch.cdist(centres, centres) <= (
        reach[:, :, None] + reach[:, None, :] + CONTACT_SEARCH_A
    )
    return torch.triu(near.any(dim=0), diagonal=1).nonzero()


def atom_contacts(
    positions: torch.Tensor,
    residue_atoms: torch.Tensor,
    chain: torch.Tensor,
    residue_number: torch.Tensor,
    radius: torch.Tensor,
    polar: torch.Tensor,
    disulfide: torch.Tensor,
    clash_overlap_a: float = CLASH_OVERLAP_A,
    min_separation: int = 2,
) -> dict[str, torch.Tensor]:
    """Per-frame van der Waals overlaps and closest approach between residues.

    Args:
        positions: ``(T, N, 3)`` heavy atoms, Angstrom.
        residue_atoms: ``(R, A)`` atom indices of each residue, padded with -1.
        chain, residue_number: ``(R,)`` chain index and residue number of each residue.
        radius: ``(N,)`` van der Waals radius of each atom (:data:`VDW_RADIUS_A`).
        polar: ``(N,)`` bool, N or O atoms (pairs of two get :data:`POLAR_ALLOWANCE_A` more).
        disulfide: ``(N,)`` bool, cysteine SG atoms (an SG-SG pair may bond: no overlap).
        clash_overlap_a: an overlap above this is a clash (MolProbity's 0.4 A).
        min_separation: residues this far apart in sequence, or in different chains, can clash.

    Returns:
        ``(T,)`` arrays: ``max_overlap_a`` (largest ``r_i + r_j - d`` less the polar allowance
        over atom pairs of residues ``min_separation`` apart, floored at 0), ``clash_pairs``
        (count of such pairs above ``clash_overlap_a``), ``min_interresidue_a`` (closest atoms
        of any two different residues, capped at the search radius of 3.8 A).
    """
    t = positions.shape[0]
    valid = residue_atoms >= 0
    safe = residue_atoms.clamp(min=0)
    atoms = positions[:, safe]  # (T, R, A, 3)
    weight = valid.to(positions.dtype)[None, :, :, None]
    centres = (atoms * weight).sum(2) / weight.sum(2).clamp(min=1.0)
    spread = torch.where(valid[None], distance(atoms, centres[:, :, None]), 0.0)
    same_chain = chain[:, None] == chain[None, :]
    gap = (residue_number[:, None] - residue_number[None, :]).abs()
    pairs = _residue_pairs(centres, spread.amax(dim=2))
    far = ~same_chain[pairs[:, 0], pairs[:, 1]] | (gap[pairs[:, 0], pairs[:, 1]] >= min_separation)
    out = {
        "max_overlap_a": positions.new_zeros(t),
        "clash_pairs": torch.zeros(t, dtype=torch.long, device=positions.device),
        "min_interresidue_a": positions.new_full((t,), CONTACT_SEARCH_A),
    }
    if len(pairs) == 0:
        return out
    a_i, a_j = safe[pairs[:, 0]], safe[pairs[:, 1]]  # (P, A)
    real = valid[pairs[:, 0]][:, :, None] & valid[pairs[:, 1]][:, None, :]  # (P, A, A)
    limit = radius[a_i][:, :, None] + radius[a_j][:, None, :]
    both_polar = polar[a_i][:, :, None] & polar[a_j][:, None, :]
    limit = limit - POLAR_ALLOWANCE_A * both_polar.to(limit.dtype)
    can_clash = (
        far[:, None, None] & real & ~(disulfide[a_i][:, :, None] & disulfide[a_j][:, None, :])
    )
    # Padding and exempt pairs are pushed out of reach once, not masked in every frame.
    limit = torch.where(can_clash, limit, -float("inf")).to(positions.dtype)
    padding = torch.where(real, 0.0, float("inf")).to(positions.dtype)
    per_frame = max(1, _PAIR_BUDGET // max(1, real.numel()))
    for start in range(0, t, per_frame):
        block = positions[start : start + per_frame]
        d = torch.cdist(block[:, a_i], block[:, a_j])  # (t, P, A, A)
        overlap = (limit - d).flatten(1)
        frames = slice(start, start + len(block))
        closest = (d + padding).flatten(1).amin(dim=1)
        out["min_interresidue_a"][frames] = closest.clamp(max=CONTACT_SEARCH_A)
        out["max_overlap_a"][frames] = overlap.amax(dim=1).clamp(min=0.0)
        out["clash_pairs"][frames] = (overlap > clash_overlap_a).sum(dim=1)
    return out
