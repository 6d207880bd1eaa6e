"""What a noisy frame is denoised against: the previous clean frame and the posterior base.

The denoiser predicts every frame as an update of a Gaussian posterior base
(:meth:`~starmd.diffusion.se3_diffuser.SE3TorusDiffuser.posterior_base`): the optimal Gaussian
guess of the clean frame from its noisy state and a prior around the clean frame before it,
whose translations may follow the elastic-network prior of :mod:`starmd.diffusion.elastic`.
Training (every frame of a window at once) and rollout (one frame after the other) pose the
same task, so both build it here, from the model's :class:`DiffusionSection`: what the rollout
conditions on cannot drift from what the network was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from starmd.diffusion.elastic import TransPrior, bonded_pairs, elastic_prior
from starmd.diffusion.se3_diffuser import SE3TorusDiffuser
from starmd.diffusion.settings import DiffusionSection
from starmd.structure.rigid import Rigid


@dataclass(frozen=True)
class PreviousFrame:
    """The clean frames ``(..., L)`` a noisy frame is predicted against, and the translation
    prior around them (None: residues move independently)."""

    frames: Rigid
    trans_prior: TransPrior | None


class FrameConditioner:
    """Builds the previous-frame prior and the posterior base of a model's diffusion settings."""

    def __init__(self, settings: DiffusionSection, diffuser: SE3TorusDiffuser):
        self.settings = settings
        self.diffuser = diffuser

    def previous_frame(
        self,
        frames: Rigid,
        rest_trans: torch.Tensor,
        residue_mask: torch.Tensor,
        residue_index: torch.Tensor,
        chain_index: torch.Tensor,
    ) -> PreviousFrame:
        """The prior of the next frame around clean ``frames (..., L)``.

        Args:
            frames: the previous clean frames (Angstrom), e.g. ``(B, K, L)`` in training (each
                window frame's predecessor) or ``(B, L)`` in a rollout.
            rest_trans: C-alpha positions ``(..., L, 3)`` of the input structure, whose bonded
                distances are the elastic prior's rest lengths.
            residue_mask, residue_index, chain_index: ``(..., L)``; their leading dims
                broadcast against ``frames``' (training passes ``(B, 1, L)``).
        """
        s = self.settings
        if not s.elastic_reference:
            return PreviousFrame(frames, None)
        prior = elastic_prior(
            frames.trans,
            rest_trans,
            residue_mask,
            bonded_pairs(residue_index, chain_index),
            s.reference_trans_spread,
            s.reference_bond_stiffness,
            s.reference_contact_stiffness,
            s.reference_contact_cutoff,
            s.reference_contact_restoring,
            s.reference_contact_deadband,
        )
        return PreviousFrame(frames, prior)

    def posterior_base(
        self, noisy: Rigid, previous: PreviousFrame, tau: float | torch.Tensor
    ) -> Rigid:
        """The base ``(..., L)`` the denoiser's prediction of the clean frame updates, for the
        noisy frames ``noisy`` at diffusion time ``tau`` (broadcasting over residues)."""
        s = self.settings
        return self.diffuser.posterior_base(
            noisy,
            previous.frames,
            tau,
            s.reference_trans_spread,
            s.reference_rot_spread,
            previous.trans_prior,
        )
