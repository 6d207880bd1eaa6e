"""SE(3) x torus diffusion of residue frames and torsions with one diffusion time.

Rotations diffuse by IGSO3 (:class:`SO3Diffuser`), translations by a VP-SDE
(:class:`R3Diffuser`, Angstrom in and out, scaled internally), torsions by a wrapped normal
(:class:`TorusDiffuser`). Frames are :class:`starmd.structure.rigid.Rigid` with batch shape
``(..., L)``; torsions are ``(..., L, K)`` with a mask of the same (broadcastable) shape; ``tau``
broadcasts to ``(..., L)``, e.g. per-frame times ``(B, T, 1)`` against ``(B, T, L)``.

For an x0-predicting network the training targets are the scores of the forward kernels at the
noisy state, evaluated at the true and at the predicted clean state; the score loss of each
component divides squared errors by the square of its score scaling (FrameDiff)::

    loss_rot = |rot_score(pred) - state.rot_score|^2 / state.rot_score_scaling^2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from starmd.diffusion import rng
from starmd.diffusion.elastic import TransPrior
from starmd.diffusion.r3_diffuser import R3Diffuser
from starmd.diffusion.so3_diffuser import SO3Diffuser
from starmd.diffusion.torus_diffuser import TorusDiffuser
from starmd.structure.geometry import wrap_angle
from starmd.structure.rigid import Rigid


@dataclass(frozen=True)
class NoisyState:
    """A forward-diffused batch and the targets a score/x0 loss needs.

    Shapes: batch ``(..., L)``, ``K`` torsions per residue.

    Attributes:
        frames: noisy frames, translations in Angstrom.
        torsions: noisy torsions ``(..., L, K)``, radians in ``[-pi, pi)``.
        tau: diffusion time broadcast to ``(..., L)``.
        trans_noise: standard normal translation noise ``(..., L, 3)``.
        rot_noise: body-frame IGSO3 rotation vectors ``(..., L, 3)``.
        torsion_noise: standard normal torsion noise ``(..., L, K)`` (0 where masked).
        trans_score: ``(..., L, 3)``, per unit of scaled coordinate (see :class:`R3Diffuser`).
        rot_score: body-frame ``(..., L, 3)``, radian^-1.
        torsion_score: ``(..., L, K)``, radian^-1 (0 where masked).
        trans_score_scaling, rot_score_scaling, torsion_score_scaling: RMS of one score
            component, ``(..., L)``.
    """

    frames: Rigid
    torsions: torch.Tensor
    tau: torch.Tensor
    trans_noise: torch.Tensor
    rot_noise: torch.Tensor
    torsion_noise: torch.Tensor
    trans_score: torch.Tensor
    rot_score: torch.Tensor
    torsion_score: torch.Tensor
    trans_score_scaling: torch.Tensor
    rot_score_scaling: torch.Tensor
    torsion_score_scaling: torch.Tensor


@dataclass(frozen=True)
class ScoreScalings:
    """RMS of one score component per process at some ``tau`` (``tau``'s shape)."""

    trans: torch.Tensor
    rot: torch.Tensor
    torsion: torch.Tensor


class SE3TorusDiffuser:
    """Joint diffusion of frames (SE(3)) and torsions (torus) with one diffusion time.

    Args:
        r3, so3, torus: the component diffusers (defaults: their default parameters).
    """

    def __init__(
        self,
        r3: R3Diffuser | None = None,
        so3: SO3Diffuser | None = None,
        torus: TorusDiffuser | None = None,
    ) -> None:
        self.r3 = r3 if r3 is not None else R3Diffuser()
        self.so3 = so3 if so3 is not None else SO3Diffuser()
        self.torus = torus if torus is not None else TorusDiffuser()

    def forward_marginal(
        self,
        frames: Rigid,
        torsions: torch.Tensor,
        torsion_mask: torch.Tensor,
        tau: float | torch.Tensor,
        generator: rng.RandomSource,
    ) -> NoisyState:
        """Corrupt clean frames ``(..., L)`` and torsions ``(..., L, K)`` to time ``tau``.

        Draws, in this order, translation noise, rotation noise, torsion noise from
        ``generator``.
        """
        tau_t, (trans, trans_noise), (rots, rot_noise), (tors, tors_noise) = self._corrupt(
            frames, torsions, torsion_mask, tau, generator
        )
        return self._state(
            Rigid(rots, trans),
            tors,
            frames,
            torsions,
            torsion_mask,
            tau_t,
            (trans_noise, rot_noise, tors_noise),
        )

    def noisy_state(
        self,
        frames: Rigid,
        torsions: torch.Tensor,
        clean_frames: Rigid,
        clean_torsions: torch.Tensor,
        torsion_mask: torch.Tensor,
        tau: float | torch.Tensor,
    ) -> NoisyState:
        """The :class:`NoisyState` of a given state at time ``tau`` as a corruption of given
        clean frames and torsions (e.g. a point on a sampler's path towards a distillation
        target). Scores and scalings are exact; the noises are the ones implied by the two
        states: exact for translations, the smallest such rotation vector and wrapped torsion
        difference for the other two (a draw that wound around is not recoverable)."""
        from starmd.diffusion.so3 import log_map

        tau_t = torch.as_tensor(tau, dtype=frames.dtype, device=frames.device).expand(frames.shape)
        alpha, std = self.r3.marginal_params(tau_t)
        scale = self.r3.coordinate_scale
        trans_noise = (frames.trans - alpha[..., None] * clean_frames.trans) * scale
        trans_noise = trans_noise / std[..., None]
        rot_noise = log_map(clean_frames.rots.transpose(-1, -2) @ frames.rots)
        sigma_tors = self.torus.sigma(tau_t)[..., None]
        keep = torsion_mask.expand(torsions.shape)
        tors_noise = torch.where(keep, wrap_angle(torsions - clean_torsions) / sigma_tors, 0.0)
        return self._state(
            frames,
            torsions,
            clean_frames,
            clean_torsions,
            torsion_mask,
            tau_t,
            (trans_noise.to(frames.dtype), rot_noise, tors_noise.to(torsions.dtype)),
        )

    def _state(self, frames, torsions, clean_frames, clean_torsions, torsion_mask, tau_t, noises):
        scalings = self.score_scalings(tau_t)
        return NoisyState(
            frames=frames,
            torsions=torsions,
            tau=tau_t,
            trans_noise=noises[0],
            rot_noise=noises[1],
            torsion_noise=noises[2],
            trans_score=self.trans_score(frames.trans, clean_frames.trans, tau_t),
            rot_score=self.rot_score(frames.rots, clean_frames.rots, tau_t),
            torsion_score=self.torsion_score(torsions, clean_torsions, torsion_mask, tau_t),
            trans_score_scaling=scalings.trans,
            rot_score_scaling=scalings.rot,
            torsion_score_scaling=scalings.torsion,
        )

    def corrupt(
        self,
        frames: Rigid,
        torsions: torch.Tensor,
        torsion_mask: torch.Tensor,
        tau: float | torch.Tensor,
        generator: rng.RandomSource,
    ) -> tuple[Rigid, torch.Tensor]:
        """The noisy frames and torsions of :meth:`forward_marginal` (same draws from
        ``generator``) without the scores and scalings that only training needs."""
        _, (trans, _), (rots, _), (tors, _) = self._corrupt(
            frames, torsions, torsion_mask, tau, generator
        )
        return Rigid(rots, trans), tors

    def _corrupt(self, frames, torsions, torsion_mask, tau, generator) -> tuple:
        """``tau`` per frame, then ``(value, noise)`` of translations, rotations and torsions,
        drawn in that order."""
        tau_t = torch.as_tensor(tau, dtype=frames.dtype, device=frames.device).expand(frames.shape)
        return (
            tau_t,
            self.r3.forward_marginal(frames.trans, tau_t, generator),
            self.so3.forward_marginal(frames.rots, tau_t, generator),
            self.torus.forward_marginal(torsions, tau_t, generator, torsion_mask),
        )

    def trans_score(
        self, trans_tau: torch.Tensor, trans0: torch.Tensor, tau: float | torch.Tensor
    ) -> torch.Tensor:
        """Translation score ``(..., L, 3)`` for (predicted) clean translations, Angstrom in."""
        return self.r3.score(trans_tau, trans0, tau)

    def rot_score(
        self, rots_tau: torch.Tensor, rots0: torch.Tensor, tau: float | torch.Tensor
    ) -> torch.Tensor:
        """Body-frame rotation score ``(..., L, 3)`` for (predicted) clean rotations."""
        return self.so3.score(rots_tau, rots0, tau)

    def torsion_score(
        self,
        torsions_tau: torch.Tensor,
        torsions0: torch.Tensor,
        torsion_mask: torch.Tensor,
        tau: float | torch.Tensor,
    ) -> torch.Tensor:
        """Torsion score ``(..., L, K)`` for (predicted) clean torsions; 0 where masked."""
        return self.torus.score(torsions_tau, torsions0, tau, torsion_mask)

    def score_scalings(self, tau: float | torch.Tensor) -> ScoreScalings:
        """Score RMS of the three processes at ``tau`` (the loss normalizers)."""
        return ScoreScalings(
            trans=self.r3.score_scaling(tau),
            rot=self.so3.score_scaling(tau),
            torsion=self.torus.score_scaling(tau),
        )

    def reverse_step(
        self,
        state_frames: Rigid,
        state_torsions: torch.Tensor,
        pred_frames: Rigid,
        pred_torsions: torch.Tensor,
        torsion_mask: torch.Tensor,
        tau: float | torch.Tensor,
        dtau: float | torch.Tensor,
        generator: rng.RandomSource,
        ode: bool = False,
        noise_scale: float = 1.0,
    ) -> tuple[Rigid, torch.Tensor]:
        """One reverse step of all three processes from ``tau`` to ``tau - dtau``.

        Uses the scores implied by the clean predictions ``pred_frames``/``pred_torsions``;
        draws translation, rotation, then torsion noise. Returns ``(frames, torsions)``.
        """
        trans = self.r3.reverse_step(
            state_frames.trans, pred_frames.trans, tau, dtau, generator, ode, noise_scale
        )
        rots = self.so3.reverse_step(
            state_frames.rots, pred_frames.rots, tau, dtau, generator, ode, noise_scale
        )
        torsions = self.torus.reverse_step(
            state_torsions, pred_torsions, tau, dtau, generator, ode, noise_scale, torsion_mask
        )
        return Rigid(rots, trans), torsions

    def posterior_step(
        self,
        state_frames: Rigid,
        state_torsions: torch.Tensor,
        pred_frames: Rigid,
        pred_torsions: torch.Tensor,
        torsion_mask: torch.Tensor,
        tau: float | torch.Tensor,
        tau_next: float | torch.Tensor,
        generator: rng.RandomSource,
        eta: float = 1.0,
    ) -> tuple[Rigid, torch.Tensor]:
        """One DDPM (``eta=1``) or DDIM (``eta=0``) step of all three processes from ``tau`` to
        ``tau_next``; draws translation, rotation, then torsion noise."""
        trans = self.r3.posterior_step(
            state_frames.trans, pred_frames.trans, tau, tau_next, generator, eta
        )
        rots = self.so3.posterior_step(
            state_frames.rots, pred_frames.rots, tau, tau_next, generator, eta
        )
        torsions = self.torus.posterior_step(
            state_torsions, pred_torsions, tau, tau_next, generator, eta, torsion_mask
        )
        return Rigid(rots, trans), torsions

    def extrapolate_prediction(
        self,
        pred_frames: Rigid,
        pred_torsions: torch.Tensor,
        prev_pred_frames: Rigid,
        prev_pred_torsions: torch.Tensor,
        torsion_mask: torch.Tensor,
        tau_prev: float,
        tau: float,
        tau_next: float,
    ) -> tuple[Rigid, torch.Tensor]:
        r"""Second-order multistep correction of the clean-data prediction (DPM-Solver++(2M),
        Lu et al. 2022) for the deterministic DDIM step ``tau -> tau_next``.

        In variance-exploding form (``sigma`` = noise-to-signal ratio of each process: ``s /
        alpha`` for translations, the IGSO3 and wrapped-normal ``sigma`` for rotations and
        torsions) the DDIM step is exact for a constant prediction ``x0``; DPM-Solver++(2M)
        replaces ``x0`` by the linear extrapolation in ``log sigma``
        ``x0 + (x0 - x0_prev) h / (2 h_prev)`` with ``h = log(sigma / sigma_next)`` and ``h_prev
        = log(sigma_prev / sigma)``. On SO(3) the extrapolation continues the geodesic from the
        previous to the current prediction; on the torus it is wrapped. One model call per step,
        as DDIM.
        """

        def ratio(sigma_fn) -> float:
            s_prev, s, s_next = (float(sigma_fn(t)) for t in (tau_prev, tau, tau_next))
            return math.log(s / s_next) / (2 * math.log(s_prev / s))

        def r3_sigma(t: float) -> torch.Tensor:
            alpha, std = self.r3.marginal_params(torch.tensor(t, dtype=torch.float64))
            return std / alpha

        def tensor_sigma(fn):
            return lambda t: fn(torch.tensor(t, dtype=torch.float64))

        c_trans = ratio(r3_sigma)
        c_rot = ratio(tensor_sigma(self.so3.sigma))
        c_tors = ratio(tensor_sigma(self.torus.sigma))
        from starmd.diffusion.so3 import exp_map, log_map

        trans = pred_frames.trans + c_trans * (pred_frames.trans - prev_pred_frames.trans)
        step = log_map(prev_pred_frames.rots.transpose(-1, -2) @ pred_frames.rots)
        rots = pred_frames.rots @ exp_map(c_rot * step)
        torsions = wrap_angle(
            pred_torsions + c_tors * wrap_angle(pred_torsions - prev_pred_torsions)
        )
        torsions = torch.where(torsion_mask.expand(torsions.shape), torsions, pred_torsions)
        return Rigid(rots, trans), torsions

    def posterior_base(
        self,
        noisy_frames: Rigid,
        prior_frames: Rigid,
        tau: float | torch.Tensor,
        trans_spread: float = 1.0,
        rot_spread: float = 0.2,
        trans_prior: TransPrior | None = None,
    ) -> Rigid:
        r"""Gaussian posterior mean of the clean frames given noisy ones and a prior guess.

        With the prior ``x0 ~ N(x_prior, s^2)`` (``trans_spread`` s, Angstrom per coordinate) and
        the forward kernel ``x_tau = alpha x0 + sigma eps`` (sigma in Angstrom)::

            x0_hat = (alpha s^2 x_tau + sigma^2 x_prior) / (alpha^2 s^2 + sigma^2)

        and for rotations, in the small-angle (Gaussian) approximation of IGSO3 with the
        body-frame vector ``v = log(R_prior^T R_tau)``:
        ``R0_hat = R_prior exp(s_r^2 / (s_r^2 + sigma_rot^2) v)``.

        A denoiser that predicts the clean frame as an update of this base is the optimal
        Gaussian denoiser before training: the noisy frame at low noise, the prior guess (e.g.
        the previous MD frame) at high noise. Batch shapes ``(..., L)``; ``tau`` broadcasts.

        ``trans_prior`` replaces the independent translation prior by a correlated one
        (:mod:`starmd.diffusion.elastic`, built on ``prior_frames``; ``trans_spread`` is then
        unused); ``tau`` must then be the same for all residues of a frame.
        """
        from starmd.diffusion.so3 import geodesic

        dtype, device = noisy_frames.dtype, noisy_frames.device
        tau_t = torch.as_tensor(tau, dtype=dtype, device=device).expand(noisy_frames.shape)
        alpha, std = self.r3.marginal_params(tau_t)
        alpha = alpha.to(dtype)[..., None]
        sigma = (std.to(dtype) / self.r3.coordinate_scale)[..., None]
        if trans_prior is not None:
            trans = trans_prior.posterior_mean(
                noisy_frames.trans, prior_frames.trans, alpha[..., 0, 0], sigma[..., 0, 0]
            )
        else:
            s2 = trans_spread**2
            trans = (alpha * s2 * noisy_frames.trans + sigma**2 * prior_frames.trans) / (
                alpha**2 * s2 + sigma**2
            )
        sigma_rot = self.so3.sigma(tau_t).to(dtype)
        weight = rot_spread**2 / (rot_spread**2 + sigma_rot**2)
        return Rigid(geodesic(prior_frames.rots, noisy_frames.rots, weight), trans)

    def sample_prior(
        self,
        shape: Sequence[int],
        torsion_mask: torch.Tensor,
        generator: rng.RandomSource,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> tuple[Rigid, torch.Tensor]:
        """Reference sample: uniform rotations, R3-prior translations, uniform torsions.

        Args:
            shape: batch shape ``(..., L)`` of the frames.
            torsion_mask: ``(..., L, K)`` (broadcastable); its last dim sets ``K``.
            generator: torch RNG; draws translations, rotations, then torsions.

        Returns:
            ``(frames, torsions)`` with torsions ``(..., L, K)`` (0 where masked).
        """
        trans = self.r3.sample_prior(shape, generator, dtype, device)
        rots = self.so3.sample_prior(shape, generator, dtype, device)
        torsions = self.torus.sample_prior(
            (*shape, torsion_mask.shape[-1]), generator, dtype, device, torsion_mask
        )
        return Rigid(rots, trans), torsions
