r"""Variance-preserving diffusion of translations in R^3 (VP-SDE, Song et al. 2021).

Coordinates come in and go out in Angstrom, centred by the caller (on the initial structure's CA
centroid). Internally the process runs on scaled coordinates ``y = coordinate_scale * x``
(default 0.1, i.e. nanometres), so that the unit-variance prior has the spread of a protein:

.. math::

    dy = -\tfrac12 \beta(\tau)\, y\, d\tau + \sqrt{\beta(\tau)}\, dW, \qquad
    \beta(\tau) = \beta_{min} + \tau (\beta_{max} - \beta_{min}).

With ``B(tau) = beta_min tau + (beta_max - beta_min) tau^2 / 2`` the forward marginal is

.. math::

    y_\tau = \alpha(\tau) y_0 + s(\tau)\, \epsilon, \quad \alpha = e^{-B/2},\quad
    s = \sqrt{1 - e^{-B}}, \quad \epsilon \sim N(0, I),

and the score implied by an x0 prediction is ``-(y_tau - alpha y0) / s^2`` (per unit of *scaled*
coordinate). Its components have RMS ``1 / s``, the :meth:`R3Diffuser.score_scaling`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from starmd.diffusion import rng
from starmd.diffusion.base import broadcast_time, euler_maruyama_noise, posterior_noise


class R3Diffuser:
    """VP-SDE on translations ``(..., 3)`` in Angstrom; see the module docstring for the math.

    Args:
        beta_min, beta_max: ends of the linear noise rate ``beta(tau)``.
        coordinate_scale: factor from Angstrom to the internal (scaled) coordinates.
    """

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, coordinate_scale: float = 0.1
    ) -> None:
        if not 0 < beta_min <= beta_max or coordinate_scale <= 0:
            raise ValueError(
                f"need 0 < beta_min <= beta_max and coordinate_scale > 0, got beta_min={beta_min}, "
                f"beta_max={beta_max}, coordinate_scale={coordinate_scale}"
            )
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.coordinate_scale = coordinate_scale

    def beta(self, tau: torch.Tensor) -> torch.Tensor:
        """Noise rate ``beta(tau) = beta_min + tau (beta_max - beta_min)``."""
        return self.beta_min + tau * (self.beta_max - self.beta_min)

    def _integrated_beta(self, tau: torch.Tensor) -> torch.Tensor:
        return self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau**2

    def marginal_params(self, tau: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(tau), s(tau))``: mean coefficient and std (scaled units) of ``y_tau | y_0``.

        ``alpha = exp(-B/2)``, ``s = sqrt(1 - exp(-B))``; a float ``tau`` gives float64 tensors.
        """
        tau = tau if torch.is_tensor(tau) else torch.tensor(tau, dtype=torch.float64)
        big_b = self._integrated_beta(tau)
        return torch.exp(-0.5 * big_b), torch.sqrt(-torch.expm1(-big_b))

    def forward_marginal(
        self, x0: torch.Tensor, tau: float | torch.Tensor, generator: rng.RandomSource
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``x_tau | x0``.

        Args:
            x0: clean coordinates ``(..., 3)``, Angstrom.
            tau: diffusion time(s) broadcastable to ``x0.shape[:-1]``.
            generator: torch RNG on ``x0``'s device.

        Returns:
            ``(x_tau, noise)``: noisy coordinates ``(..., 3)`` in Angstrom, and the standard
            normal ``epsilon`` (unitless) with ``x_tau = alpha x0 + s epsilon / coordinate_scale``.
        """
        alpha, std = self.marginal_params(broadcast_time(tau, x0, 1))
        noise = rng.normal(x0.shape, generator, x0.dtype, x0.device)
        return alpha * x0 + std * noise / self.coordinate_scale, noise

    def score(
        self, x_tau: torch.Tensor, x0: torch.Tensor, tau: float | torch.Tensor
    ) -> torch.Tensor:
        """``grad_y log p(y_tau | y_0) = -(y_tau - alpha y_0) / s^2`` for ``x0`` (a prediction).

        Inputs ``(..., 3)`` in Angstrom; the score is per unit of scaled coordinate (1/nm with the
        default scale). ``tau > 0``.
        """
        alpha, std = self.marginal_params(broadcast_time(tau, x_tau, 1))
        scale = self.coordinate_scale
        return -(x_tau * scale - alpha * x0 * scale) / std**2

    def reverse_step(
        self,
        x_tau: torch.Tensor,
        x0_pred: torch.Tensor,
        tau: float | torch.Tensor,
        dtau: float | torch.Tensor,
        generator: rng.RandomSource,
        ode: bool = False,
        noise_scale: float = 1.0,
    ) -> torch.Tensor:
        r"""One Euler-Maruyama step of the reverse SDE from ``tau`` to ``tau - dtau``.

        With ``s = score(x_tau, x0_pred, tau)`` and ``z ~ N(0, I)``, in scaled coordinates:

        * SDE: ``y <- y + (beta y / 2 + beta s) dtau + noise_scale sqrt(beta dtau) z``;
        * ODE (probability flow): ``y <- y + (beta y / 2 + beta s / 2) dtau``.

        Args:
            x_tau, x0_pred: current and predicted clean coordinates ``(..., 3)``, Angstrom.
            tau, dtau: current time and (positive) step, broadcastable to ``x_tau.shape[:-1]``.
            generator: torch RNG (unused when ``ode``).
            ode: follow the probability-flow ODE instead of the SDE.
            noise_scale: multiplier of the injected noise (1 = exact reverse SDE).

        Returns:
            ``x_{tau - dtau}`` ``(..., 3)`` in Angstrom.
        """
        tau_b = broadcast_time(tau, x_tau, 1)
        dtau_b = broadcast_time(dtau, x_tau, 1)
        beta = self.beta(tau_b)
        score = self.score(x_tau, x0_pred, tau_b[..., 0])
        y = x_tau * self.coordinate_scale
        if ode:
            y = y + (0.5 * beta * y + 0.5 * beta * score) * dtau_b
        else:
            noise = euler_maruyama_noise(beta, dtau_b, x_tau, generator, noise_scale)
            y = y + (0.5 * beta * y + beta * score) * dtau_b
            y = y + noise
        return y / self.coordinate_scale

    def posterior_step(
        self,
        x_tau: torch.Tensor,
        x0_pred: torch.Tensor,
        tau: float | torch.Tensor,
        tau_next: float | torch.Tensor,
        generator: rng.RandomSource,
        eta: float = 1.0,
    ) -> torch.Tensor:
        r"""Step from ``tau`` to ``tau_next < tau`` through the exact Gaussian posterior (DDIM).

        With ``eps = (y_tau - alpha y0) / s`` and, at ``tau_next``, ``alpha'``, ``s'``::

            sigma_eta = eta * sqrt(s'^2 / s^2 * (1 - alpha^2 / alpha'^2))
            y' = alpha' y0 + sqrt(s'^2 - sigma_eta^2) eps + sigma_eta z

        ``eta = 1`` samples ``q(y' | y_tau, y0)`` exactly (DDPM ancestral step), ``eta = 0`` is the
        deterministic DDIM step. Unlike Euler-Maruyama it is exact for any step size, so a few
        steps do not leave excess noise. Inputs and output in Angstrom.
        """
        alpha, std = self.marginal_params(broadcast_time(tau, x_tau, 1))
        alpha_n, std_n = self.marginal_params(broadcast_time(tau_next, x_tau, 1))
        alpha, std, alpha_n, std_n = (t.to(x_tau.dtype) for t in (alpha, std, alpha_n, std_n))
        scale = self.coordinate_scale
        y, y0 = x_tau * scale, x0_pred * scale
        eps = (y - alpha * y0) / std
        sigma_eta = eta * torch.sqrt(
            ((std_n / std) ** 2 * (1 - (alpha / alpha_n) ** 2)).clamp(min=0.0)
        )
        direction, z = posterior_noise(std_n, sigma_eta, x_tau, generator)
        return (alpha_n * y0 + direction * eps + sigma_eta * z) / scale

    def sample_prior(
        self,
        shape: Sequence[int],
        generator: rng.RandomSource,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``N(0, I)`` in scaled coordinates, returned in Angstrom, shape ``(*shape, 3)``."""
        z = rng.normal((*shape, 3), generator, dtype, device)
        return z / self.coordinate_scale

    def score_scaling(self, tau: float | torch.Tensor) -> torch.Tensor:
        """RMS of one score component at ``tau``: ``1 / s(tau)`` (scaled units), ``tau``'s shape.

        A translation score loss divides squared errors by its square (as in FrameDiff).
        """
        return 1.0 / self.marginal_params(tau)[1]
