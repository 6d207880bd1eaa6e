"""Inputs and outputs of the denoiser as small typed containers.

A *token* is one residue of one frame; a *group* is the ``L`` tokens of one frame. Per protein
(frame independent) inputs live in :class:`ProteinConditioning`; per group inputs in
:class:`FrameTokens`. Lengths are Angstrom, times picoseconds, angles radians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from starmd.errors import StarmdInputError
from starmd.structure.rigid import Rigid


@dataclass(frozen=True)
class ProteinConditioning:
    """Frame-independent inputs of one batch of proteins.

    Attributes:
        aatype: residue types ``(B, L)`` long, 0..19 in the order ``ARNDCQEGHILKMFPSTWYV``,
            20 = unknown / padding.
        residue_index: ``(B, L)`` long; contiguous within a chain, a large jump at chain breaks.
        chain_index: ``(B, L)`` long.
        residue_mask: ``(B, L)`` bool, False for padding.
        init_frames: the initial structure's residue frames, :class:`Rigid` of shape ``(B, L)``.
        dt_ps: physical time step of the trajectory ``(B,)`` in ps (enters through adaptive
            LayerNorm as ``log dt``).
        torsion_mask: ``(B, L, 7)`` bool, which of (omega, phi, psi, chi1-4) exist; a property of
            the residue, hence here and not per frame.
        prior_single: optional pretrained single features ``(B, L, c_prior_single)``.
        prior_pair: optional pretrained pair features ``(B, L, L, c_prior_pair)``.
    """

    aatype: torch.Tensor
    residue_index: torch.Tensor
    chain_index: torch.Tensor
    residue_mask: torch.Tensor
    init_frames: Rigid
    dt_ps: torch.Tensor
    torsion_mask: torch.Tensor
    prior_single: torch.Tensor | None = None
    prior_pair: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.aatype.shape[0]

    @property
    def num_residues(self) -> int:
        return self.aatype.shape[1]

    def validate(self) -> None:
        """Raise :class:`StarmdInputError` when shapes disagree."""
        b, l = self.aatype.shape
        expected = {
            "residue_index": (self.residue_index.shape, (b, l)),
            "chain_index": (self.chain_index.shape, (b, l)),
            "residue_mask": (self.residue_mask.shape, (b, l)),
            "init_frames": (tuple(self.init_frames.shape), (b, l)),
            "dt_ps": (self.dt_ps.shape, (b,)),
            "torsion_mask": (self.torsion_mask.shape, (b, l, 7)),
        }
        for name, (got, want) in expected.items():
            if tuple(got) != want:
                raise StarmdInputError(f"ProteinConditioning.{name}: shape {tuple(got)} != {want}")
        if self.residue_mask.dtype != torch.bool:
            raise StarmdInputError("ProteinConditioning.residue_mask must be bool")
        if self.prior_single is not None and self.prior_single.shape[:2] != (b, l):
            raise StarmdInputError(
                f"ProteinConditioning.prior_single: shape {tuple(self.prior_single.shape)}, "
                f"expected ({b}, {l}, c)"
            )
        if self.prior_pair is not None and self.prior_pair.shape[:3] != (b, l, l):
            raise StarmdInputError(
                f"ProteinConditioning.prior_pair: shape {tuple(self.prior_pair.shape)}, "
                f"expected ({b}, {l}, {l}, c)"
            )


@dataclass(frozen=True)
class FrameTokens:
    """Per-group inputs: ``G`` frames of the ``L`` residues each.

    Attributes:
        frames: residue frames, :class:`Rigid` of shape ``(B, G, L)``, translations in Angstrom.
        torsions: ``(B, G, L, 7)`` radians (omega, phi, psi, chi1-4).
        tau: diffusion time ``(B, G)`` in ``[0, 1]`` (clean context frames: the contextual noise
            level).
        time_ps: physical time of each frame ``(B, G)`` in ps (rotary encoding; only differences
            matter).
        reference: frames ``Rigid (B, G, L)`` the clean prediction is expressed relative to
            (None: the token's own frames). For a noisy frame it is the previous clean frame,
            so that an untrained model predicts "no motion" and training learns the dynamics
            as a residual; the model also sees the reference's pose in each token's frame.
    """

    frames: Rigid
    torsions: torch.Tensor
    tau: torch.Tensor
    time_ps: torch.Tensor
    reference: Rigid | None = None

    @property
    def reference_frames(self) -> Rigid:
        """``reference`` or, when absent, the token's own frames."""
        return self.frames if self.reference is None else self.reference

    @property
    def num_groups(self) -> int:
        return self.tau.shape[1]

    def __getitem__(self, groups: int | slice) -> FrameTokens:
        """Select groups along dim 1 (an int keeps the dimension, with size 1)."""
        if isinstance(groups, int):
            groups = slice(groups, groups + 1 if groups != -1 else None)
        return FrameTokens(
            frames=self.frames[:, groups],
            torsions=self.torsions[:, groups],
            tau=self.tau[:, groups],
            time_ps=self.time_ps[:, groups],
            reference=None if self.reference is None else self.reference[:, groups],
        )

    @staticmethod
    def cat(tokens: list[FrameTokens]) -> FrameTokens:
        """Concatenate along the group dimension."""
        with_reference = any(t.reference is not None for t in tokens)
        return FrameTokens(
            frames=Rigid.cat([t.frames for t in tokens], dim=1),
            torsions=torch.cat([t.torsions for t in tokens], dim=1),
            tau=torch.cat([t.tau for t in tokens], dim=1),
            time_ps=torch.cat([t.time_ps for t in tokens], dim=1),
            reference=Rigid.cat([t.reference_frames for t in tokens], dim=1)
            if with_reference
            else None,
        )

    def validate(self, cond: ProteinConditioning) -> None:
        """Raise :class:`StarmdInputError` when shapes disagree with ``cond``."""
        b, l = cond.batch_size, cond.num_residues
        g = self.tau.shape[1] if self.tau.dim() == 2 else -1
        expected = {
            "frames": (tuple(self.frames.shape), (b, g, l)),
            "torsions": (tuple(self.torsions.shape), (b, g, l, 7)),
            "tau": (tuple(self.tau.shape), (b, g)),
            "time_ps": (tuple(self.time_ps.shape), (b, g)),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise StarmdInputError(f"FrameTokens.{name}: shape {got} != {want}")


@dataclass(frozen=True)
class DenoiserOutput:
    """Predictions for ``G`` groups.

    Attributes:
        frames: predicted clean frames, :class:`Rigid` ``(B, G, L)``, Angstrom.
        torsions: predicted clean torsions as unit ``(sin, cos)``, ``(B, G, L, 7, 2)``.
        torsions_unnormalized: the torsion head's output before normalization (for AlphaFold's
            angle-norm loss; with ``DenoiserConfig.torsion_skip``, the context's von Mises
            natural parameters, before the noisy torsions' are added).
        frames_per_block: frames after each block, :class:`Rigid` ``(n_blocks, B, G, L)``; the
            last equals ``frames``. Use for an auxiliary loss (see ``stop_rotation_gradient``).
        single: final single features ``(B, G, L, c_s)``.
    """

    frames: Rigid
    torsions: torch.Tensor
    torsions_unnormalized: torch.Tensor
    frames_per_block: Rigid
    single: torch.Tensor

    def angles(self, torsion_mask: torch.Tensor) -> torch.Tensor:
        """Predicted torsion angles ``(B, G, L, 7)`` in radians, 0 where ``torsion_mask``
        (broadcastable, e.g. ``(B, 1, L, 7)``) is false."""
        angles = torch.atan2(self.torsions[..., 0], self.torsions[..., 1])
        return torch.where(torsion_mask, angles, 0.0)

    def __getitem__(self, groups: int | slice) -> DenoiserOutput:
        """Select groups along the group dimension (an int keeps it, with size 1)."""
        if isinstance(groups, int):
            groups = slice(groups, groups + 1 if groups != -1 else None)
        return DenoiserOutput(
            frames=self.frames[:, groups],
            torsions=self.torsions[:, groups],
            torsions_unnormalized=self.torsions_unnormalized[:, groups],
            frames_per_block=self.frames_per_block[:, :, groups],
            single=self.single[:, groups],
        )


@dataclass(frozen=True)
class WindowOutput:
    """Output of the training-layout forward: the clean copy and the noisy copy of a window."""

    clean: DenoiserOutput
    noisy: DenoiserOutput
