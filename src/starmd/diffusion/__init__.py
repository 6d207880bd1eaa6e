"""Diffusion processes: VP-SDE on translations, IGSO3 on rotations, wrapped normal on torsions.

One diffuser per manifold behind one interface (:class:`Diffuser`), combined with a shared
diffusion time by :class:`SE3TorusDiffuser`; :func:`sample` is the generic reverse loop. A
model's diffusion settings and the diffuser they build live in :mod:`.settings`; what a noisy
frame is denoised against (previous frame, elastic prior, posterior base) in
:mod:`.conditioning`, for training and rollout alike.
"""

from starmd.diffusion.base import Diffuser
from starmd.diffusion.igso3 import (
    IGSO3Spec,
    IGSO3Table,
    igso3_angle_pdf,
    igso3_angle_score,
    igso3_log_density,
    igso3_score,
    load_igso3_table,
)
from starmd.diffusion.r3_diffuser import R3Diffuser
from starmd.diffusion.sampler import reverse_schedule, sample
from starmd.diffusion.se3_diffuser import NoisyState, ScoreScalings, SE3TorusDiffuser
from starmd.diffusion.so3 import exp_map, log_map, random_rotations, rotation_angle
from starmd.diffusion.so3_diffuser import SO3Diffuser
from starmd.diffusion.torus_diffuser import (
    TorusDiffuser,
    wrapped_normal_log_density,
    wrapped_normal_score,
)
from starmd.structure.geometry import wrap_angle  # the torus's wrapping, defined once

__all__ = [
    "Diffuser",
    "IGSO3Spec",
    "IGSO3Table",
    "NoisyState",
    "R3Diffuser",
    "SE3TorusDiffuser",
    "SO3Diffuser",
    "ScoreScalings",
    "TorusDiffuser",
    "exp_map",
    "igso3_angle_pdf",
    "igso3_angle_score",
    "igso3_log_density",
    "igso3_score",
    "load_igso3_table",
    "log_map",
    "random_rotations",
    "reverse_schedule",
    "rotation_angle",
    "sample",
    "wrap_angle",
    "wrapped_normal_log_density",
    "wrapped_normal_score",
]
