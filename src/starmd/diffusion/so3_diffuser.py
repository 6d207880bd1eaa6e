r"""IGSO3 diffusion of rotations (FrameDiff, Yim et al. 2023).

The forward process is Brownian motion on SO(3) with the logarithmic schedule

.. math::

    \sigma(\tau) = \log\big(\tau e^{\sigma_{max}} + (1 - \tau) e^{\sigma_{min}}\big),

so ``R_tau | R_0 ~ R_0 IGSO3(sigma(tau))`` and the diffusion coefficient is
``g^2(tau) = d sigma^2 / d tau = 2 sigma (e^{sigma_max} - e^{sigma_min}) / e^{sigma}``.

Frame convention: noise acts in the **body frame**, ``R_tau = R_0 exp(hat(v))``, and scores are
body-frame rotation vectors: a tangent vector ``xi`` stands for the curve
``R_tau exp(t hat(xi))``.
With ``v = log(R_0^T R_tau)`` and ``omega = |v|`` the score is

.. math::

    \nabla \log p(R_\tau | R_0) = \partial_\omega \log f(\omega; \sigma(\tau))\, v / \omega

(:func:`starmd.diffusion.igso3.igso3_score`). Body-frame vectors are unchanged when all frames
rotate together, which is what an equivariant model predicts in local frames.

Note: the reference distribution (:meth:`SO3Diffuser.sample_prior`) is uniform on SO(3); at the
default ``sigma_max = 1.5`` the forward marginal is still visibly concentrated (its density
ranges from about 2 at angle 0 to 0.1 at pi), so raise ``sigma_max`` if prior and
marginal must agree closely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from starmd.diffusion import rng
from starmd.diffusion.base import (
    broadcast_time,
    posterior_noise,
    variance_exploding_sigma_eta,
    variance_exploding_step,
)
from starmd.diffusion.igso3 import (
    DEFAULT_CLOSED_FORM_BELOW,
    DEFAULT_SERIES_TERMS,
    IGSO3Spec,
    IGSO3Table,
    default_cache_dir,
    igso3_score,
    load_igso3_table,
)
from starmd.diffusion.so3 import exp_map, log_map, random_rotations


class SO3Diffuser:
    """IGSO3 diffusion on rotation matrices ``(..., 3, 3)``; see the module docstring.

    Args:
        sigma_min, sigma_max: IGSO3 scale at ``tau = 0`` and ``tau = 1`` (radians).
        num_sigma, num_omega: IGSO3 table grid sizes.
        series_terms: IGSO3 series truncation length.
        closed_form_below: sigma below which the IGSO3 small-sigma closed form is used.
        cache_dir: where IGSO3 tables are cached; ``None`` = :func:`default_cache_dir`.
        disk_cache: ``False`` keeps tables in memory only.
    """

    def __init__(
        self,
        sigma_min: float = 0.1,
        sigma_max: float = 1.5,
        num_sigma: int = 1000,
        num_omega: int = 1000,
        series_terms: int = DEFAULT_SERIES_TERMS,
        closed_form_below: float = DEFAULT_CLOSED_FORM_BELOW,
        cache_dir: str | Path | None = None,
        disk_cache: bool = True,
    ) -> None:
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.spec = IGSO3Spec(
            min_sigma=sigma_min,
            max_sigma=sigma_max,
            num_sigma=num_sigma,
            num_omega=num_omega,
            series_terms=series_terms,
            closed_form_below=closed_form_below,
        )
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._cache_dir = directory if disk_cache else None
        self._table: IGSO3Table | None = None

    @property
    def table(self) -> IGSO3Table:
        """The IGSO3 tables, loaded or computed on first use."""
        if self._table is None:
            self._table = load_igso3_table(self.spec, self._cache_dir)
        return self._table

    def sigma(self, tau: torch.Tensor) -> torch.Tensor:
        """``sigma(tau) = log(tau e^sigma_max + (1 - tau) e^sigma_min)`` (radians)."""
        return torch.log(tau * math.exp(self.sigma_max) + (1 - tau) * math.exp(self.sigma_min))

    def diffusion_coefficient_sq(self, tau: torch.Tensor) -> torch.Tensor:
        """``g^2(tau) = d sigma^2 / d tau = 2 sigma (e^sigma_max - e^sigma_min) e^-sigma``."""
        sigma = self.sigma(tau)
        return 2 * sigma * (math.exp(self.sigma_max) - math.exp(self.sigma_min)) * torch.exp(-sigma)

    def sample_igso3(self, sigma: torch.Tensor, generator: rng.RandomSource) -> torch.Tensor:
        """IGSO3 rotation vectors ``(*sigma.shape, 3)``: uniform axis, inverse-CDF angle."""
        axis = rng.normal((*sigma.shape, 3), generator, sigma.dtype, sigma.device)
        axis = axis / torch.linalg.vector_norm(axis, dim=-1, keepdim=True)
        angle = self.table.sample_angle(sigma, generator).to(sigma.dtype)
        return angle[..., None] * axis

    def forward_marginal(
        self, rot0: torch.Tensor, tau: float | torch.Tensor, generator: rng.RandomSource
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``R_tau = R_0 exp(hat(v))`` with ``v`` an IGSO3(sigma(tau)) rotation vector.

        Args:
            rot0: clean rotations ``(..., 3, 3)``.
            tau: diffusion time(s) broadcastable to ``rot0.shape[:-2]``.
            generator: torch RNG on ``rot0``'s device.

        Returns:
            ``(rot_tau, rotvec_noise)``: ``(..., 3, 3)`` and the body-frame noise ``v``
            ``(..., 3)``.
        """
        tau_b = broadcast_time(tau, rot0, 2)[..., 0, 0]
        sigma = self.sigma(tau_b).expand(rot0.shape[:-2])
        noise = self.sample_igso3(sigma, generator)
        return rot0 @ exp_map(noise), noise

    def score(
        self, rot_tau: torch.Tensor, rot0: torch.Tensor, tau: float | torch.Tensor
    ) -> torch.Tensor:
        """Body-frame score ``(..., 3)`` of ``p(R_tau | R_0)`` for ``rot0`` (a prediction).

        ``(d/domega log f)(omega; sigma(tau)) * v / omega`` with ``v = log(R_0^T R_tau)``
        (radian^-1). Differentiable in both rotations.
        """
        tau_b = broadcast_time(tau, rot_tau, 2)[..., 0, 0]
        rotvec = log_map(rot0.transpose(-1, -2) @ rot_tau)
        return igso3_score(
            rotvec, self.sigma(tau_b), self.spec.series_terms, self.spec.closed_form_below
        )

    def reverse_step(
        self,
        rot_tau: torch.Tensor,
        rot0_pred: torch.Tensor,
        tau: float | torch.Tensor,
        dtau: float | torch.Tensor,
        generator: rng.RandomSource,
        ode: bool = False,
        noise_scale: float = 1.0,
    ) -> torch.Tensor:
        """One geodesic random-walk step (exp-map Euler-Maruyama) from ``tau`` to ``tau - dtau``.

        With the body-frame score ``s`` and ``z ~ N(0, I_3)``:

        * SDE: ``R <- R exp(hat(g^2 s dtau + noise_scale g sqrt(dtau) z))``;
        * ODE (probability flow): ``R <- R exp(hat(g^2 s dtau / 2))``.

        Args:
            rot_tau, rot0_pred: current and predicted clean rotations ``(..., 3, 3)``.
            tau, dtau: current time and (positive) step, broadcastable to the batch shape.
            generator: torch RNG (unused when ``ode``).
            ode: follow the probability-flow ODE.
            noise_scale: multiplier of the injected noise.

        Returns:
            ``R_{tau - dtau}`` ``(..., 3, 3)``.
        """
        tau_b = broadcast_time(tau, rot_tau, 2)[..., 0, 0]
        dtau_b = broadcast_time(dtau, rot_tau, 2)[..., 0, 0]
        g_sq = self.diffusion_coefficient_sq(tau_b)[..., None]
        dtau_v = dtau_b[..., None]
        score = self.score(rot_tau, rot0_pred, tau_b)
        step = variance_exploding_step(g_sq, score, dtau_v, generator, ode, noise_scale)
        return rot_tau @ exp_map(step)

    def posterior_step(
        self,
        rot_tau: torch.Tensor,
        rot0_pred: torch.Tensor,
        tau: float | torch.Tensor,
        tau_next: float | torch.Tensor,
        generator: rng.RandomSource,
        eta: float = 1.0,
    ) -> torch.Tensor:
        r"""Step from ``tau`` to ``tau_next`` through the posterior, in the tangent space at the
        prediction (DDIM on SO(3)).

        With the body-frame ``v = log(R0^T R_tau)`` and ``eps = v / sigma``, the step is the
        variance-exploding DDIM step of :meth:`TorusDiffuser.posterior_step` applied to ``v``,
        then ``R' = R0 exp(v')``. It treats IGSO3 as an isotropic Gaussian in the tangent space,
        which is exact as sigma -> 0 (where accuracy matters) and approximate at large sigma.
        """
        sigma = self.sigma(broadcast_time(tau, rot_tau, 2)[..., 0]).to(rot_tau.dtype)
        sigma_n = self.sigma(broadcast_time(tau_next, rot_tau, 2)[..., 0]).to(rot_tau.dtype)
        eps = log_map(rot0_pred.transpose(-1, -2) @ rot_tau) / sigma
        sigma_eta = variance_exploding_sigma_eta(sigma, sigma_n, eta)
        direction, z = posterior_noise(sigma_n, sigma_eta, eps, generator)
        return rot0_pred @ exp_map(direction * eps + sigma_eta * z)

    def sample_prior(
        self,
        shape: Sequence[int],
        generator: rng.RandomSource,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Rotations uniform on SO(3), ``(*shape, 3, 3)``."""
        return random_rotations(shape, generator, dtype, device)

    def score_scaling(self, tau: float | torch.Tensor) -> torch.Tensor:
        """RMS of one score component at ``tau``, ``sqrt(E|score|^2 / 3)`` (tabulated).

        ``tau``'s shape (a float gives float64); about ``1 / sigma`` for small sigma. A rotation
        score loss divides squared errors by its square (as in FrameDiff).
        """
        tau = tau if torch.is_tensor(tau) else torch.tensor(tau, dtype=torch.float64)
        return self.table.score_scaling(self.sigma(tau)).to(tau.dtype)
