"""Training losses of the denoiser's clean-frame predictions; all masked, all per noisy frame.

Weights and the low-noise cut-off come from :class:`starmd.modelfile.config.LossSection` (STAR-MD
paper's weights as a starting point): rotation score, translation, torsion, backbone FAPE,
all-atom FAPE, and at low noise only an atom-coordinate and a local distance-map loss.
Lengths inside the losses are nanometres (Angstrom x 0.1) so terms are O(1).
"""

from __future__ import annotations

import torch

from starmd.diffusion import NoisyState, SE3TorusDiffuser
from starmd.modelfile.config import LossSection
from starmd.structure import geometry
from starmd.structure.rigid import Rigid

NM = 0.1  # Angstrom -> nm


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
) -> torch.Tensor:
    """Squared (sin, cos) error, the smaller of chi and chi + pi for symmetric side chains,
    plus AlphaFold's angle-norm term (weight 0.02)."""
    true = torch.stack([torch.sin(true_torsions), torch.cos(true_torsions)], -1)
    alt_angles = geometry.alternative_torsions(true_torsions, aatype[:, None, :])
    alt = torch.stack([torch.sin(alt_angles), torch.cos(alt_angles)], -1)
    err = torch.minimum(((pred_sin_cos - true) ** 2).sum(-1), ((pred_sin_cos - alt) ** 2).sum(-1))
    norm = torch.linalg.vector_norm(pred_unnormalized, dim=-1)
    return _masked_mean(err, mask) + 0.02 * _masked_mean((norm - 1.0).abs(), mask)


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
) -> dict[str, torch.Tensor]:
    """All loss terms for predictions of ``K`` noisy frames.

    Shapes: frames ``(B, K, L)``, torsions ``(B, K, L, 7)`` (predictions as unit (sin, cos)
    ``(B, K, L, 7, 2)``), ``aatype``/``residue_mask`` ``(B, L)``, ``torsion_mask (B, L, 7)``.

    ``pred_frames_per_block`` (``Rigid (n_blocks, B, K, L)``): when given, the backbone FAPE is
    averaged over the blocks' intermediate frames (AlphaFold's auxiliary loss); the denoiser
    stops rotation gradients between blocks, so earlier blocks learn only through this term.

    ``frame_mask`` ``(B, K)`` bool (default all): which noisy frames count in the loss.

    Returns:
        dict of scalar terms and ``"loss"``, their weighted sum.
    """
    res_mask = residue_mask[:, None, :].expand(true_frames.shape)
    if frame_mask is not None:
        res_mask = res_mask & frame_mask[..., None]
    tau = noisy.tau  # (B, K, L)

    trans = ((pred_frames.trans - true_frames.trans) * NM).pow(2).sum(-1)
    rot_pred_score = diffuser.rot_score(noisy.frames.rots, pred_frames.rots, tau)
    rot = ((rot_pred_score - noisy.rot_score) / noisy.rot_score_scaling[..., None]).pow(2).mean(-1)
    tors = torsion_loss(
        pred_torsions,
        pred_torsions_unnormalized,
        true_torsions,
        aatype,
        torsion_mask[:, None] & res_mask[..., None],
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
    terms["loss"] = sum(getattr(weights, name) * value for name, value in terms.items())
    return terms
