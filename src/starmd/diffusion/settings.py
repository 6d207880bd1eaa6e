"""The diffusion settings a model is trained with, and the diffuser they build.

:class:`DiffusionSection` is the ``diffusion`` section of a model's configuration (saved in
every model file): the noise schedules of the three diffusers, the training noise, and the prior
of the posterior base (:mod:`starmd.diffusion.conditioning`). Training and rollout read the same
object, so what the rollout conditions on cannot drift from what the network was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from starmd.diffusion.r3_diffuser import R3Diffuser
from starmd.diffusion.sampler import rho_times
from starmd.diffusion.se3_diffuser import SE3TorusDiffuser
from starmd.diffusion.so3_diffuser import SO3Diffuser
from starmd.diffusion.torus_diffuser import TorusDiffuser


@dataclass
class DiffusionSection:
    """Parameters of the SE(3) x torus diffusion and of the training noise."""

    trans_beta_min: float = 0.1
    trans_beta_max: float = 20.0
    coordinate_scale: float = 0.1
    so3_sigma_min: float = 0.1
    so3_sigma_max: float = 1.5
    torsion_sigma_min: float = 0.01
    torsion_sigma_max: float = 3.141592653589793
    tau_min: float = 0.002
    context_noise_max: float = 0.01
    """Clean context frames are perturbed to tau_ctx ~ U[0, context_noise_max]. The paper's 0.1
    displaces CA atoms by up to ~6 A under this VP schedule, far more than one MD step; 0.01
    (at most ~0.8 A RMS) keeps the history informative while still training robustness."""
    train_tau_rho: float = 1.0
    """How training draws each noisy frame's diffusion time: ``tau = tau_min + (1 - tau_min)
    u^rho``, ``u ~ U[0, 1]`` (the form of the sampler's ``reverse_schedule``). 1 (the default,
    what every model before it used) is uniform; 3 puts 27% of the draws below tau 0.02 (uniform:
    2%), where the noise (< 1.3 A RMS) is smaller than one MD step and the clean prediction
    decides where the next frame lands."""
    reference_trans_spread: float = 1.0
    """Prior spread (A per coordinate) of a frame around the previous one, for the posterior
    base the denoiser's prediction is an update of (see SE3TorusDiffuser.posterior_base)."""
    reference_rot_spread: float = 0.2
    """The same for rotations (radians)."""
    reference_bond_stiffness: float = 0.0
    """Springs (A^-2) of the elastic-network translation prior between residues bonded in
    sequence; with ``reference_contact_stiffness`` both 0 (the default, and what models trained
    before it existed used) residues move independently. See :mod:`starmd.diffusion.elastic`."""
    reference_contact_stiffness: float = 0.0
    """Springs (A^-2) of that prior between other residues closer than the cutoff."""
    reference_contact_cutoff: float = 10.0
    """Contact cutoff (A) of that prior, on the previous frame's C-alpha atoms."""
    reference_contact_restoring: float = 0.0
    """Fraction of the contact springs with the input structure's distances as rest lengths
    (0: contacts only correlate motion; see ``starmd.diffusion.elastic.elastic_prior``)."""
    reference_contact_deadband: float = 0.0
    """Angstrom: the restoring contacts pull only on the part of a distance change beyond this
    (flat-bottomed; 0, what models before it used: linear springs)."""

    def training_tau(self, u: torch.Tensor) -> torch.Tensor:
        """Diffusion times of training's noisy frames from uniform draws ``u`` in [0, 1]
        (see ``train_tau_rho``)."""
        if self.train_tau_rho <= 0:
            raise ValueError(f"diffusion.train_tau_rho must be > 0, got {self.train_tau_rho}")
        return rho_times(u, self.tau_min, self.train_tau_rho)

    @property
    def elastic_reference(self) -> bool:
        """Whether the translation prior of the posterior base has springs."""
        return self.reference_bond_stiffness > 0 or self.reference_contact_stiffness > 0

    @property
    def rollout_context_noise(self) -> float:
        """The fixed contextual-noise level ``tau_ctx`` of a rollout's cached frames: the middle
        of the training range ``U[0, context_noise_max]``."""
        return self.context_noise_max / 2


def build_diffuser(section: DiffusionSection) -> SE3TorusDiffuser:
    """The :class:`~starmd.diffusion.se3_diffuser.SE3TorusDiffuser` of a diffusion section."""
    return SE3TorusDiffuser(
        r3=R3Diffuser(section.trans_beta_min, section.trans_beta_max, section.coordinate_scale),
        so3=SO3Diffuser(sigma_min=section.so3_sigma_min, sigma_max=section.so3_sigma_max),
        torus=TorusDiffuser(
            sigma_min=section.torsion_sigma_min, sigma_max=section.torsion_sigma_max
        ),
    )
