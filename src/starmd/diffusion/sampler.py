"""The generic reverse-diffusion loop for :class:`SE3TorusDiffuser`.

``steps`` network evaluations at times ``reverse_schedule(steps)``: after each evaluation but the
last, one reverse step to the next time; the last evaluation (at ``tau_min``) returns its clean
prediction. The number of steps is the speed/quality knob. Rollout code that needs its own loop
(per-frame times, KV caches) calls :meth:`SE3TorusDiffuser.reverse_step` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from starmd.diffusion import rng
from starmd.diffusion.se3_diffuser import SE3TorusDiffuser
from starmd.structure.rigid import Rigid

DenoiseFn = Callable[[Rigid, torch.Tensor, torch.Tensor], tuple[Rigid, torch.Tensor]]
"""``denoise_fn(frames, torsions, tau) -> (pred_frames, pred_torsions)``: clean predictions."""

PredictFn = Callable[[Rigid, torch.Tensor, float], tuple[Rigid, torch.Tensor]]
"""``predict(frames, torsions, tau) -> (pred_frames, pred_torsions)`` with a float ``tau``."""

SAMPLERS = ("ddpm", "ddim", "dpm2", "dpm2sde", "sde", "ode", "cm")


def rho_times(u: torch.Tensor, tau_min: float, rho: float) -> torch.Tensor:
    """Diffusion times ``tau_min + (1 - tau_min) u^rho`` of fractions ``u`` in [0, 1] (1 gives
    time 1, 0 gives ``tau_min``): the form shared by the sampling schedule
    (:func:`reverse_schedule`) and training's draws of noise levels
    (:meth:`~starmd.diffusion.settings.DiffusionSection.training_tau`)."""
    return tau_min + (1.0 - tau_min) * u**rho


def reverse_schedule(
    steps: int, tau_min: float = 1e-3, dtype: torch.dtype = torch.float64, rho: float = 1.0
) -> torch.Tensor:
    """``steps`` diffusion times decreasing from 1 to ``tau_min``, shape ``(steps,)``:
    ``tau_min + (1 - tau_min) u^rho`` for ``u`` linear from 1 to 0. ``rho = 1`` is linear in
    ``tau``; ``rho > 1`` puts more steps at low noise (as the rho-schedule of Karras et al.
    2022), which few-step deterministic sampling needs (see ``RolloutSettings.schedule_rho``).
    ``steps = 1`` is the single time 1: one prediction from the pure prior draw, the one-step
    sampling of a distilled student (:mod:`starmd.train.distill`); an undistilled model's
    one-step prediction is close to its posterior base (the previous frame)."""
    if steps < 1 or not 0 < tau_min < 1 or rho <= 0:
        raise ValueError(
            f"need steps >= 1, 0 < tau_min < 1 and rho > 0, got {steps}, {tau_min}, {rho}"
        )
    return rho_times(torch.linspace(1.0, 0.0, steps, dtype=dtype), tau_min, rho)


def sampler_schedule(
    sampler: str, steps: int, tau_min: float, rho: float = 1.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The ``steps`` evaluation times of a sampler: :func:`reverse_schedule`, except for
    ``"cm"`` (consistency-style multistep sampling of a distilled student, Song et al. 2023):
    the first ``steps`` of the ``steps + 1`` times, so the last evaluation sits at a moderate
    noise level and its clean prediction is the sample. A student predicts the clean frame
    from anywhere on its path, so a last evaluation at ``tau_min`` (which barely moves the
    state) is better spent earlier; for an undistilled model that prediction is a posterior
    mean, too smooth."""
    if sampler != "cm":
        return reverse_schedule(steps, tau_min, dtype, rho)
    return reverse_schedule(steps + 1, tau_min, dtype, rho)[:steps]


def sample(
    diffuser: SE3TorusDiffuser,
    denoise_fn: DenoiseFn,
    init: tuple[Rigid, torch.Tensor] | Sequence[int],
    torsion_mask: torch.Tensor,
    steps: int,
    generator: rng.RandomSource,
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
        steps: number of ``denoise_fn`` evaluations (1: the prediction at ``tau = 1``).
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
    sampler = "ode" if ode else "sde"
    # 0-dim tensor times, as denoise_fn takes them
    return reverse_loop(
        diffuser,
        denoise_fn,
        frames,
        torsions,
        torsion_mask,
        list(taus),
        sampler,
        generator,
        noise_scale,
    )


def reverse_loop(
    diffuser: SE3TorusDiffuser,
    predict: PredictFn,
    frames: Rigid,
    torsions: torch.Tensor,
    torsion_mask: torch.Tensor,
    taus: Sequence[float] | Sequence[torch.Tensor],
    sampler: str,
    generator: rng.RandomSource,
    noise_scale: float = 1.0,
) -> tuple[Rigid, torch.Tensor]:
    """Denoise the state ``(frames, torsions)`` at ``taus[0]`` through the times ``taus``.

    One ``predict`` call per time; between calls one step of ``sampler`` (see
    :class:`~starmd.sample.rollout.RolloutSettings`): ``"ddpm"``/``"ddim"`` the Gaussian
    posterior step (ancestral / deterministic; ``"cm"`` is ``"ddim"`` on the times of
    :func:`sampler_schedule`), ``"dpm2"`` the deterministic step with the DPM-Solver++(2M)
    extrapolation of the prediction, ``"dpm2sde"`` the ancestral (``eta = 1``) step with the
    same extrapolation, ``"sde"``/``"ode"`` Euler steps of the reverse SDE / probability-flow
    ODE. Returns the last clean prediction. Used by the rollout (per frame, against a KV
    cache) and by distillation (a whole training window at once).

    ``"dpm2sde"`` is the stochastic second-order multistep solver of DPM-Solver++ (Lu et al.
    2022; "DPM-Solver++(2M) SDE", with the midpoint form of the second-order correction). In
    variance-exploding form (``sigma`` the noise-to-signal ratio, ``h = log(sigma / sigma')``)
    its update is ``x' = (sigma'/sigma)^2 x + (1 - e^{-2h}) (D + (D - D_prev) h / (2 h_prev))
    + sigma' sqrt(1 - e^{-2h}) z``: the exact Gaussian-posterior (DDPM) step taken towards the
    extrapolated prediction of ``"dpm2"``, one model call per step. With the trained model's
    imperfect predictions its ensembles are wider than ``"dpm2"``'s at the same number of
    steps, closer to MD's (docs/fidelity.md, "Session 31").
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    pred_frames, pred_torsions = frames, torsions
    previous: tuple[Rigid, torch.Tensor] | None = None
    for i, tau in enumerate(taus):
        pred_frames, pred_torsions = predict(frames, torsions, tau)
        if i + 1 == len(taus):
            break
        tau_next = taus[i + 1]
        step_frames, step_torsions = pred_frames, pred_torsions
        if sampler in ("dpm2", "dpm2sde") and previous is not None:
            step_frames, step_torsions = diffuser.extrapolate_prediction(
                pred_frames, pred_torsions, *previous, torsion_mask, taus[i - 1], tau, tau_next
            )
        previous = (pred_frames, pred_torsions)
        if sampler in ("ddpm", "ddim", "dpm2", "dpm2sde", "cm"):
            eta = 1.0 if sampler in ("ddpm", "dpm2sde") else 0.0
            frames, torsions = diffuser.posterior_step(
                frames,
                torsions,
                step_frames,
                step_torsions,
                torsion_mask,
                tau,
                tau_next,
                generator,
                eta,
            )
        else:
            frames, torsions = diffuser.reverse_step(
                frames,
                torsions,
                step_frames,
                step_torsions,
                torsion_mask,
                tau,
                tau - tau_next,
                generator,
                ode=sampler == "ode",
                noise_scale=noise_scale,
            )
    return pred_frames, pred_torsions
