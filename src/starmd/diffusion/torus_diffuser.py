r"""Wrapped-normal (variance-exploding) diffusion of torsion angles on the torus.

Angles are radians in ``[-pi, pi)``, shape ``(..., K)`` (K torsions per residue); the batch shape
for the diffusion time is ``(...)``. The forward process is Brownian motion on the circle,

.. math::

    x_\tau = \mathrm{wrap}(x_0 + \sigma(\tau) z), \quad z \sim N(0, 1), \quad
    \sigma(\tau) = \sigma_{min}^{1-\tau} \sigma_{max}^{\tau},

so ``g^2(tau) = d sigma^2 / d tau = 2 sigma^2 log(sigma_max / sigma_min)``. The transition density
is the wrapped normal, a truncated sum over images ``|k| <= num_wraps``:

.. math::

    p_\sigma(d) \propto \sum_k e^{-(d + 2\pi k)^2 / (2\sigma^2)}, \qquad
    \partial_d \log p_\sigma(d) = -\frac{\sum_k (d + 2\pi k) e^{-(d+2\pi k)^2/(2\sigma^2)}}
        {\sigma^2 \sum_k e^{-(d+2\pi k)^2/(2\sigma^2)}},

with ``d = wrap(x_tau - x_0)``. A mask marks the angles that exist (e.g. chi angles of a residue
type); masked-out angles pass through every operation unchanged and get zero noise and score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from starmd.diffusion import rng
from starmd.diffusion.base import (
    broadcast_time,
    posterior_noise,
    variance_exploding_sigma_eta,
    variance_exploding_step,
)
from starmd.structure.geometry import wrap_angle

_SCALING_GRID = 601  # trapezoid nodes on z in [-12, 12] for the score RMS table


def _image_log_weights(d: torch.Tensor, sigma: torch.Tensor, num_wraps: int):
    k = torch.arange(-num_wraps, num_wraps + 1, dtype=d.dtype, device=d.device)
    shifted = d[..., None] + 2 * math.pi * k
    return shifted, -(shifted**2) / (2 * sigma[..., None] ** 2)


def wrapped_normal_log_density(
    x: torch.Tensor, sigma: torch.Tensor, num_wraps: int = 5
) -> torch.Tensor:
    """Log-density on ``[-pi, pi)`` of the zero-mean wrapped normal with scale ``sigma``.

    ``log sum_k N(x + 2 pi k; 0, sigma^2)`` over ``|k| <= num_wraps``; ``x`` and ``sigma``
    broadcast.
    """
    x, sigma = torch.broadcast_tensors(x, sigma)
    _, log_w = _image_log_weights(wrap_angle(x), sigma, num_wraps)
    return torch.logsumexp(log_w, -1) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)


def wrapped_normal_score(x: torch.Tensor, sigma: torch.Tensor, num_wraps: int = 5) -> torch.Tensor:
    """``d/dx log p_sigma(x)`` of the zero-mean wrapped normal (radian^-1); broadcasts."""
    x, sigma = torch.broadcast_tensors(x, sigma)
    shifted, log_w = _image_log_weights(wrap_angle(x), sigma, num_wraps)
    return -(torch.softmax(log_w, -1) * shifted).sum(-1) / sigma**2


class TorusDiffuser:
    """Wrapped-normal diffusion of torsions ``(..., K)``; see the module docstring.

    Args:
        sigma_min, sigma_max: scale at ``tau = 0`` and ``tau = 1`` (radians).
        num_wraps: images ``|k| <= num_wraps`` in the wrapped-normal sums (5 is exact to
            double precision up to ``sigma = pi``).
        num_sigma: grid size of the score-RMS table (log-spaced in sigma).
    """

    def __init__(
        self,
        sigma_min: float = 0.01,
        sigma_max: float = math.pi,
        num_wraps: int = 5,
        num_sigma: int = 256,
    ) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        # relative weight of the first omitted image, at worst exp(-36)
        if ((2 * num_wraps + 1) ** 2 - 1) * math.pi**2 / (2 * sigma_max**2) < 36:
            raise ValueError(f"num_wraps={num_wraps} is too few for sigma_max={sigma_max}")
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.num_wraps = num_wraps
        self._log_sigma_grid = torch.linspace(
            math.log(sigma_min), math.log(sigma_max), num_sigma, dtype=torch.float64
        )
        self._score_rms = self._tabulate_score_rms(self._log_sigma_grid.exp())

    def _tabulate_score_rms(self, sigma: torch.Tensor) -> torch.Tensor:
        """``sqrt(E[score^2])`` per sigma: ``E_z[score(wrap(sigma z))^2]``, z standard normal.

        The integrand is smooth in ``z`` and the weight Gaussian, so the trapezoid rule on
        ``[-12, 12]`` is spectrally accurate.
        """
        z = torch.linspace(-12.0, 12.0, _SCALING_GRID, dtype=torch.float64)
        weight = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
        score = wrapped_normal_score(sigma[:, None] * z, sigma[:, None], self.num_wraps)
        return torch.sqrt((weight * score**2).sum(-1))

    def sigma(self, tau: torch.Tensor) -> torch.Tensor:
        """``sigma(tau) = sigma_min^(1 - tau) sigma_max^tau`` (radians)."""
        return self.sigma_min ** (1 - tau) * self.sigma_max**tau

    def diffusion_coefficient_sq(self, tau: torch.Tensor) -> torch.Tensor:
        """``g^2(tau) = 2 sigma(tau)^2 log(sigma_max / sigma_min)``."""
        return 2 * self.sigma(tau) ** 2 * math.log(self.sigma_max / self.sigma_min)

    @staticmethod
    def _mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        if mask is None:
            return torch.ones_like(x, dtype=torch.bool)
        return mask.to(device=x.device, dtype=torch.bool).expand(x.shape)

    def forward_marginal(
        self,
        x0: torch.Tensor,
        tau: float | torch.Tensor,
        generator: rng.RandomSource,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``x_tau = wrap(x0 + sigma(tau) z)``.

        Args:
            x0: clean torsions ``(..., K)``, radians.
            tau: diffusion time(s) broadcastable to ``x0.shape[:-1]``.
            generator: torch RNG on ``x0``'s device.
            mask: ``(..., K)`` (broadcastable), true where the angle exists; ``None`` = all.

        Returns:
            ``(x_tau, noise)``: wrapped noisy torsions and the standard normal ``z``; masked
            angles keep ``x0`` and have ``z = 0``.
        """
        keep = self._mask(mask, x0)
        sigma = self.sigma(broadcast_time(tau, x0, 1))
        noise = rng.normal(x0.shape, generator, x0.dtype, x0.device)
        noise = torch.where(keep, noise, torch.zeros_like(noise))
        return torch.where(keep, wrap_angle(x0 + sigma * noise), x0), noise

    def score(
        self,
        x_tau: torch.Tensor,
        x0: torch.Tensor,
        tau: float | torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``d/dx log p_sigma(tau)(wrap(x_tau - x0))`` ``(..., K)`` (radian^-1); 0 where masked."""
        sigma = self.sigma(broadcast_time(tau, x_tau, 1))
        score = wrapped_normal_score(x_tau - x0, sigma, self.num_wraps)
        return torch.where(self._mask(mask, x_tau), score, torch.zeros_like(score))

    def reverse_step(
        self,
        x_tau: torch.Tensor,
        x0_pred: torch.Tensor,
        tau: float | torch.Tensor,
        dtau: float | torch.Tensor,
        generator: rng.RandomSource,
        ode: bool = False,
        noise_scale: float = 1.0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One Euler-Maruyama step on the circle from ``tau`` to ``tau - dtau``.

        * SDE: ``x <- wrap(x + g^2 s dtau + noise_scale g sqrt(dtau) z)``;
        * ODE (probability flow): ``x <- wrap(x + g^2 s dtau / 2)``.

        Shapes as :meth:`forward_marginal`; masked angles are returned unchanged.
        """
        keep = self._mask(mask, x_tau)
        tau_b = broadcast_time(tau, x_tau, 1)
        dtau_b = broadcast_time(dtau, x_tau, 1)
        g_sq = self.diffusion_coefficient_sq(tau_b)
        score = self.score(x_tau, x0_pred, tau_b[..., 0], mask)
        step = variance_exploding_step(g_sq, score, dtau_b, generator, ode, noise_scale)
        return torch.where(keep, wrap_angle(x_tau + step), x_tau)

    def posterior_step(
        self,
        x_tau: torch.Tensor,
        x0_pred: torch.Tensor,
        tau: float | torch.Tensor,
        tau_next: float | torch.Tensor,
        generator: rng.RandomSource,
        eta: float = 1.0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Step from ``tau`` to ``tau_next`` through the variance-exploding posterior (DDIM).

        With ``eps = wrap(x_tau - x0) / sigma``::

            sigma_eta = eta * sigma' * sqrt(1 - sigma'^2 / sigma^2)
            x' = wrap(x0 + sqrt(sigma'^2 - sigma_eta^2) eps + sigma_eta z)

        exact for the unwrapped Gaussian (``eta = 1``: ancestral, ``0``: deterministic); the
        wrapping is a good approximation while ``sigma`` is well below pi and harmless above.
        Masked angles are returned unchanged.
        """
        keep = self._mask(mask, x_tau)
        sigma = self.sigma(broadcast_time(tau, x_tau, 1)).to(x_tau.dtype)
        sigma_n = self.sigma(broadcast_time(tau_next, x_tau, 1)).to(x_tau.dtype)
        eps = wrap_angle(x_tau - x0_pred) / sigma
        sigma_eta = variance_exploding_sigma_eta(sigma, sigma_n, eta)
        direction, z = posterior_noise(sigma_n, sigma_eta, x_tau, generator)
        return torch.where(keep, wrap_angle(x0_pred + direction * eps + sigma_eta * z), x_tau)

    def sample_prior(
        self,
        shape: Sequence[int],
        generator: rng.RandomSource,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Angles uniform on ``[-pi, pi)``; ``shape`` is the full torsion shape ``(..., K)``.

        Masked-out angles are 0.
        """
        x = rng.uniform(shape, generator, dtype, device)
        x = 2 * math.pi * x - math.pi
        return torch.where(self._mask(mask, x), x, torch.zeros_like(x))

    def score_scaling(self, tau: float | torch.Tensor) -> torch.Tensor:
        """RMS of the score at ``tau``, ``sqrt(E[score^2])`` (tabulated, log-log interpolated).

        ``tau``'s shape (a float gives float64); about ``1 / sigma`` for small sigma.
        """
        tau = tau if torch.is_tensor(tau) else torch.tensor(tau, dtype=torch.float64)
        log_sigma = torch.log(self.sigma(tau.detach().double().cpu()))
        grid = self._log_sigma_grid
        pos = ((log_sigma - grid[0]) / (grid[-1] - grid[0]) * (len(grid) - 1)).clamp(
            0, len(grid) - 1
        )
        index = pos.floor().long().clamp_max(len(grid) - 2)
        weight = pos - index
        log_rms = self._score_rms.log()
        rms = torch.exp((1 - weight) * log_rms[index] + weight * log_rms[index + 1])
        return rms.to(dtype=tau.dtype, device=tau.device)
