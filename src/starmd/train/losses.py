"""Training losses of the denoiser's clean-frame predictions; all masked, all per noisy frame.

Weights and the low-noise cut-off come from :class:`starmd.modelfile.config.LossSection` (STAR-MD
paper's weights as a starting point): rotation score, translation, torsion, backbone FAPE,
all-atom FAPE, and at low noise only an atom-coordinate and a local distance-map loss.
Lengths inside the losses are nanometres (Angstrom x 0.1) so terms are O(1).

Structural violations (AlphaFold 2's between-residue bond, angle and clash terms; weights 0 by
default, so they are computed only when a config turns them on): on the heavy atoms rebuilt
from the predicted frames and torsions, at low noise only. Their units are AlphaFold's:
Angstrom for lengths and overlaps, radians for angles.
"""

from __future__ import annotations

import torch

from starmd.diffusion import NoisyState, SE3TorusDiffuser
from starmd.modelfile.config import LossSection
from starmd.structure import geometry
from starmd.structure.local_geometry import (
    C_N_CA_DEG,
    CA_C_N_DEG,
    PEPTIDE_BOND_A,
    PROLINE,
    VDW_RADIUS_A,
    atom15_tables,
    backbone_geometry,
    flat_bottom,
    peptide_bonds,
)
from starmd.structure.rigid import Rigid

NM = 0.1  # Angstrom -> nm
_PLACEHOLDER_BACKBONE = ((-0.525, 1.363, 0.0), (0.0, 0.0, 0.0), (1.526, 0.0, 0.0))  # N, CA, C
VIOLATION_TERMS = ("bond_violation", "angle_violation", "clash")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def fape(
    pred_frames: Rigid,
    true_frames: Rigid,
    pred_points: torch.Tensor,
    true_points: torch.Tensor,
    frame_mask: torch.Tensor,
    point_mask: torch.Tensor,
    clamp: float = 10.0,
) -> torch.Tensor:
    """Frame-aligned point error (AlphaFold 2, Alg. 28), clamped, in units of ``clamp``.

    Args:
        pred_frames, true_frames: ``Rigid (..., L)``.
        pred_points, true_points: ``(..., N, 3)`` Angstrom.
        frame_mask: ``(..., L)``; point_mask: ``(..., N)``.
    """
    local_pred = pred_frames.unsqueeze(-1).invert_apply(pred_points[..., None, :, :])
    local_true = true_frames.unsqueeze(-1).invert_apply(true_points[..., None, :, :])
    error = torch.sqrt(((local_pred - local_true) ** 2).sum(-1) + 1e-8).clamp(max=clamp) / clamp
    mask = frame_mask[..., :, None] & point_mask[..., None, :]
    return _masked_mean(error, mask)


def torsion_loss(
    pred_sin_cos: torch.Tensor,
    pred_unnormalized: torch.Tensor,
    true_torsions: torch.Tensor,
    aatype: torch.Tensor,
    mask: torch.Tensor,
    norm_weight: float = 0.02,
) -> torch.Tensor:
    """Squared (sin, cos) error, the smaller of chi and chi + pi for symmetric side chains,
    plus AlphaFold's angle-norm term (``norm_weight``; 0 for a head whose output length means
    something, as the torsion skip's concentration does)."""
    true = torch.stack([torch.sin(true_torsions), torch.cos(true_torsions)], -1)
    alt_angles = geometry.alternative_torsions(true_torsions, aatype[:, None, :])
    alt = torch.stack([torch.sin(alt_angles), torch.cos(alt_angles)], -1)
    err = torch.minimum(((pred_sin_cos - true) ** 2).sum(-1), ((pred_sin_cos - alt) ** 2).sum(-1))
    norm = torch.linalg.vector_norm(pred_unnormalized, dim=-1)
    return _masked_mean(err, mask) + norm_weight * _masked_mean((norm - 1.0).abs(), mask)


def between_residue_clash(
    atoms: torch.Tensor,
    atom_mask: torch.Tensor,
    aatype: torch.Tensor,
    bonded: torch.Tensor,
    tolerance_a: float,
) -> torch.Tensor:
    """Heavy-atom overlap between residues (AlphaFold 2's clash loss), per frame.

    Every pair of atoms of two different residues, except the peptide bond C(i)-N(i+1) and a
    cysteine SG-SG pair, adds ``relu(r_a + r_b - tolerance_a - d)`` (van der Waals radii of
    :data:`starmd.structure.local_geometry.VDW_RADIUS_A`); the sum is divided by the frame's
    number of atoms. Only residue pairs whose C-alpha atoms are close enough for any of their
    atoms to overlap are measured (found without gradient), so the cost follows the contacts.

    Args:
        atoms: ``(F, L, 15, 3)`` Angstrom; atom_mask ``(F, L, 15)`` bool; aatype ``(F, L)``.
        bonded: ``(F, L-1)`` bool, :func:`peptide_bonds`.
        tolerance_a: overlap allowed before a pair counts (AlphaFold 2: 1.5 A).

    Returns:
        ``(F,)`` Angstrom of overlap per atom.
    """
    tables = atom15_tables()
    radius = torch.as_tensor(tables["radius"], dtype=atoms.dtype, device=atoms.device)[aatype]
    sulfur_gamma = torch.as_tensor(tables["sulfur_gamma"], device=atoms.device)[aatype]
    residue_present = atom_mask.any(-1)
    ca = atoms[..., geometry.CA_SLOT, :].detach()
    reach = torch.where(
        atom_mask, torch.linalg.vector_norm(atoms.detach() - ca[..., None, :], dim=-1), 0.0
    ).amax(-1)
    contact = 2 * max(VDW_RADIUS_A.values()) - tolerance_a
    near = torch.cdist(ca, ca) <= reach[..., :, None] + reach[..., None, :] + contact
    near = near & residue_present[..., :, None] & residue_present[..., None, :]
    f, i, j = torch.triu(near, diagonal=1).nonzero(as_tuple=True)
    diff = atoms[f, i][:, :, None] - atoms[f, j][:, None]  # (P, 15, 15, 3)
    d = torch.sqrt((diff**2).sum(-1) + 1e-10)
    pair_mask = atom_mask[f, i][:, :, None] & atom_mask[f, j][:, None]
    pair_mask &= ~(sulfur_gamma[f, i][:, :, None] & sulfur_gamma[f, j][:, None])
    padded = torch.cat([bonded, torch.zeros_like(bonded[..., :1])], dim=-1)
    peptide = (j == i + 1) & padded[f, i]
    pair_mask[:, geometry.C_SLOT, geometry.N_SLOT] &= ~peptide
    limit = radius[f, i][:, :, None] + radius[f, j][:, None] - tolerance_a
    overlap = torch.where(pair_mask, torch.relu(limit - d), 0.0).sum((1, 2))
    per_frame = atoms.new_zeros(atoms.shape[0]).index_add(0, f, overlap)
    return per_frame / atom_mask.sum((-1, -2)).clamp(min=1)


def structural_violations(
    atoms: torch.Tensor,
    atom_mask: torch.Tensor,
    aatype: torch.Tensor,
    bonded: torch.Tensor,
    tolerance_sd: float = 12.0,
    clash_tolerance_a: float = 1.5,
) -> dict[str, torch.Tensor]:
    """AlphaFold 2's between-residue violations of heavy-atom frames, per frame.

    Flat-bottomed: a peptide bond length or angle counts only by how far it lies beyond
    ``mean +- tolerance_sd * sd`` of the literature values (:data:`PEPTIDE_BOND_A`,
    :data:`CA_C_N_DEG`, :data:`C_N_CA_DEG`; AlphaFold 2 uses 12 sd, wide enough for the
    spread of MD frames).

    Args:
        atoms: ``(F, L, 15, 3)`` Angstrom (atom15 layout); atom_mask ``(F, L, 15)`` bool.
        aatype: ``(F, L)``; bonded: ``(F, L-1)`` bool, :func:`peptide_bonds`.

    Returns:
        ``(F,)`` each: ``bond_violation`` (Angstrom, mean over peptide bonds),
        ``angle_violation`` (radians, mean over the two angles of each peptide bond),
        ``clash`` (:func:`between_residue_clash`).
    """
    present = atom_mask[..., geometry.CA_SLOT, None]
    # absent residues (padding: possibly degenerate or non-finite frames) get a fixed
    # non-degenerate N, CA, C triangle, so that angles of masked junctions and their
    # gradients stay finite
    n, ca, c = (
        torch.where(present, atoms[..., slot, :], atoms.new_tensor(placeholder))
        for slot, placeholder in zip(
            (geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT), _PLACEHOLDER_BACKBONE, strict=True
        )
    )
    backbone = backbone_geometry(n, ca, c)
    proline = aatype[..., 1:] == PROLINE
    bond_mean = torch.where(proline, PEPTIDE_BOND_A[1][0], PEPTIDE_BOND_A[0][0])
    bond_sd = torch.where(proline, PEPTIDE_BOND_A[1][1], PEPTIDE_BOND_A[0][1])
    bond = flat_bottom(backbone["c_n"], (bond_mean, bond_sd), tolerance_sd)
    angle = flat_bottom(backbone["ca_c_n"], CA_C_N_DEG, tolerance_sd) + flat_bottom(
        backbone["c_n_ca"], C_N_CA_DEG, tolerance_sd
    )
    weight = (bonded & present[..., 1:, 0] & present[..., :-1, 0]).to(atoms.dtype)
    count = weight.sum(-1).clamp(min=1.0)
    return {
        "bond_violation": (bond * weight).sum(-1) / count,
        "angle_violation": torch.deg2rad(angle * weight).sum(-1) / (2 * count),
        "clash": between_residue_clash(atoms, atom_mask, aatype, bonded, clash_tolerance_a),
    }


def translation_weight(
    diffuser: SE3TorusDiffuser, tau: torch.Tensor, sigma_data_angstrom: float
) -> torch.Tensor:
    """``1 + (s / sigma(tau))^2``: the weight of a translation error at diffusion time ``tau``
    (any shape), ``sigma`` the forward process's noise in Angstrom per coordinate and ``s`` the
    target's spread (:attr:`LossSection.trans_sigma_data_angstrom`)."""
    _, std = diffuser.r3.marginal_params(tau)
    sigma = std / diffuser.r3.coordinate_scale
    return 1.0 + (sigma_data_angstrom / sigma) ** 2


def denoising_losses(
    *,
    diffuser: SE3TorusDiffuser,
    noisy: NoisyState,
    pred_frames: Rigid,
    pred_torsions: torch.Tensor,
    pred_torsions_unnormalized: torch.Tensor,
    pred_frames_per_block: Rigid | None,
    true_frames: Rigid,
    true_torsions: torch.Tensor,
    aatype: torch.Tensor,
    residue_mask: torch.Tensor,
    torsion_mask: torch.Tensor,
    oxt_mask: torch.Tensor | None,
    weights: LossSection,
    frame_mask: torch.Tensor | None = None,
    residue_index: torch.Tensor | None = None,
    chain_index: torch.Tensor | None = None,
    angle_norm: bool = True,
) -> dict[str, torch.Tensor]:
    """All loss terms for predictions of ``K`` noisy frames.

    Shapes: frames ``(B, K, L)``, torsions ``(B, K, L, 7)`` (predictions as unit (sin, cos)
    ``(B, K, L, 7, 2)``), ``aatype``/``residue_mask`` ``(B, L)``, ``torsion_mask (B, L, 7)``.

    ``pred_frames_per_block`` (``Rigid (n_blocks, B, K, L)``): when given, the backbone FAPE is
    averaged over the blocks' intermediate frames (AlphaFold's auxiliary loss); the denoiser
    stops rotation gradients between blocks, so earlier blocks learn only through this term.

    ``frame_mask`` ``(B, K)`` bool (default all): which noisy frames count in the loss.

    ``residue_index``, ``chain_index`` ``(B, L)``: where the peptide bonds are; needed only when
    a structural-violation weight is non-zero (the terms are then added, averaged over the
    low-noise frames, :func:`structural_violations`).

    ``angle_norm``: add AlphaFold's angle-norm term on ``pred_torsions_unnormalized`` (off for
    a denoiser with ``torsion_skip``, whose head output length is a concentration).

    Returns:
        dict of scalar terms and ``"loss"``, their weighted sum.
    """
    res_mask = residue_mask[:, None, :].expand(true_frames.shape)
    if frame_mask is not None:
        res_mask = res_mask & frame_mask[..., None]
    tau = noisy.tau  # (B, K, L)

    trans = ((pred_frames.trans - true_frames.trans) * NM).pow(2).sum(-1)
    if weights.trans_sigma_data_angstrom > 0:
        trans = trans * translation_weight(diffuser, tau, weights.trans_sigma_data_angstrom)
    rot_pred_score = diffuser.rot_score(noisy.frames.rots, pred_frames.rots, tau)
    rot = ((rot_pred_score - noisy.rot_score) / noisy.rot_score_scaling[..., None]).pow(2).mean(-1)
    tors = torsion_loss(
        pred_torsions,
        pred_torsions_unnormalized,
        true_torsions,
        aatype,
        torsion_mask[:, None] & res_mask[..., None],
        norm_weight=0.02 if angle_norm else 0.0,
    )

    pred_angles = torch.atan2(pred_torsions[..., 0], pred_torsions[..., 1])
    oxt = oxt_mask[:, None] if oxt_mask is not None else None
    pred_atoms = geometry.frames_to_atoms(pred_frames, pred_angles, aatype[:, None], oxt)
    true_atoms = geometry.frames_to_atoms(true_frames, true_torsions, aatype[:, None], oxt)
    atom_mask = geometry.rebuilt_atom_mask(aatype, oxt_mask)[:, None] & res_mask[..., None]
    b, k, l = true_frames.shape
    flat = (b, k, l * 15, 3)
    per_block = pred_frames_per_block if pred_frames_per_block is not None else pred_frames[None]
    bb_fape = fape(
        per_block,
        true_frames,
        per_block.trans,
        true_frames.trans,
        res_mask,
        res_mask,
        weights.fape_clamp_angstrom,
    )
    sc_fape = fape(
        pred_frames,
        true_frames,
        pred_atoms.reshape(flat),
        true_atoms.reshape(flat),
        res_mask,
        atom_mask.reshape(b, k, l * 15),
        weights.fape_clamp_angstrom,
    )

    low = (tau[..., 0] < weights.low_noise_tau)[..., None]  # (B, K, 1)
    atom_err = ((pred_atoms - true_atoms) * NM).pow(2).sum(-1)
    atom = _masked_mean(atom_err, atom_mask & low[..., None])
    bb_pred = pred_atoms[..., :4, :].reshape(b, k, l * 4, 3)
    bb_true = true_atoms[..., :4, :].reshape(b, k, l * 4, 3)
    d_pred = torch.cdist(bb_pred, bb_pred)
    d_true = torch.cdist(bb_true, bb_true)
    bb_mask = atom_mask[..., :4].reshape(b, k, l * 4)
    pair_mask = bb_mask[..., :, None] & bb_mask[..., None, :] & (d_true < 6.0) & low[..., None]
    distance = _masked_mean(((d_pred - d_true) * NM).pow(2), pair_mask)

    terms = {
        "trans": _masked_mean(trans, res_mask),
        "rot": _masked_mean(rot, res_mask),
        "torsion": tors,
        "backbone_fape": bb_fape,
        "sidechain_fape": sc_fape,
        "atom": atom,
        "distance": distance,
    }
    if any(getattr(weights, name) for name in VIOLATION_TERMS):
        if residue_index is None or chain_index is None:
            raise ValueError("structural violation terms need residue_index and chain_index")
        counted = res_mask.any(-1) & low[..., 0]  # (B, K)
        aatype_frames = aatype[:, None].expand(b, k, l)
        bonded = peptide_bonds(residue_index, chain_index, residue_mask)[:, None].expand(b, k, -1)
        violations = structural_violations(
            pred_atoms[counted],
            atom_mask[counted],
            aatype_frames[counted],
            bonded[counted],
            weights.violation_tolerance_sd,
            weights.clash_tolerance_angstrom,
        )
        terms |= {name: value.sum() / max(1, len(value)) for name, value in violations.items()}
    terms["loss"] = sum(getattr(weights, name) * value for name, value in terms.items())
    return terms
