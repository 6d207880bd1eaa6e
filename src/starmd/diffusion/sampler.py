"""The generic reverse-diffusion loop for :class:`SE3TorusDiffuser`.

``steps`` network evaluations at times ``reverse_schedule(steps)``: after each evaluation but the
last, one reverse step to the next time; the last evaluation (at ``tau_min``) returns its clean
prediction. The number of steps is the speed/quality knob. Rollout code that needs its own loop
(per-frame times, KV caches) calls :meth:`SE3TorusDiffuser.reverse_step` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from starmd.diffusion.se3_diffuser import SE3TorusDiffuser
from starmd.structure.rigid import Rigid

DenoiseFn = Callable[[Rigid, torch.Tensor, torch.Tensor], tuple[Rigid, torch.Tensor]]
"""``denoise_fn(frames, torsions, tau) -> (pred_frames, pred_torsions)``: clean predictions."""


def reverse_schedule(
    steps: int, tau_min: float = 1e-3, dtype: torch.dtype = torch.float64, rho: float = 1.0
) -> torch.Tensor:
    """``steps`` diffusion times decreasing from 1 to ``tau_min``, shape ``(steps,)``:
    ``tau_min + (1 - tau_min) u^rho`` for ``u`` linear from 1 to 0. ``rho = 1`` is linear in
    ``tau``; ``rho > 1`` puts more steps at low noise (as the rho-schedule of Karras et al.
    2022), which few-step deterministic sampling needs (see ``RolloutSettings.schedule_rho``)."""
    if steps < 2 or not 0 < tau_min < 1 or rho <= 0:
        raise ValueError(
            f"need steps >= 2, 0 < tau_min < 1 and rho > 0, got {steps}, {tau_min}, {rho}"
        )
    u = torch.linspace(1.0, 0.0, steps, dtype=dtype)
    return tau_min + (1.0 - tau_min) * u**rho


def sample(
    diffuser: SE3TorusDiffuser,
    denoise_fn: DenoiseFn,
    init: tuple[Rigid, torch.Tensor] | Sequence[int],
    torsion_mask: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    ode: bool = False,
    tau_min: float = 1e-3,
    noise_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Rigid, torch.Tensor]:
    """Run the reverse process from ``tau = 1`` and return the final clean prediction.

    Args:
        diffuser: the joint diffuser.
        denoise_fn: ``(frames, torsions, tau) -> (pred_frames, pred_torsions)``; ``tau`` is a
            0-dim tensor of the state's dtype.
        init: a start state ``(frames (..., L), torsions (..., L, K))`` or the batch shape
            ``(..., L)`` to draw one from the prior.
        torsion_mask: ``(..., L, K)`` (broadcastable), true where a torsion exists.
        steps: number of ``denoise_fn`` evaluations (>= 2).
        generator: torch RNG for the prior and the SDE noise.
        ode: integrate the probability-flow ODE (deterministic given ``init``).
        tau_min: last diffusion time.
        noise_scale: multiplier of the SDE noise.
        dtype, device: of the prior sample when ``init`` is a shape.

    Returns:
        ``(pred_frames, pred_torsions)`` of the last evaluation, at ``tau_min``.
    """
    if isinstance(init, tuple) and len(init) == 2 and isinstance(init[0], Rigid):
        frames, torsions = init
    else:
        frames, torsions = diffuser.sample_prior(init, torsion_mask, generator, dtype, device)
    taus = reverse_schedule(steps, tau_min).to(dtype=frames.dtype, device=frames.device)
    for i in range(steps):
        pred_frames, pred_torsions = denoise_fn(frames, torsions, taus[i])
        if i + 1 < steps:
            frames, torsions = diffuser.reverse_step(
                frames,
                torsions,
                pred_frames,
                pred_torsions,
                torsion_mask,
                taus[i],
                taus[i] - taus[i + 1],
                generator,
                ode,
                noise_scale,
            )
    return pred_frames, pred_torsions
