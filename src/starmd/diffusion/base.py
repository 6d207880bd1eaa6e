"""The interface every per-manifold diffuser implements, and the diffusion-time broadcasting rule.

All diffusers share one diffusion time ``tau`` in ``[0, 1]`` (0 = data, 1 = prior). ``tau`` is a
float or a tensor broadcastable to the *batch* shape of the data, i.e. the data shape without its
event dimensions: ``(..., 3)`` translations and rotation vectors, ``(..., 3, 3)`` rotation
matrices, ``(..., K)`` torsion vectors. Per-frame times of shape ``(B, T, 1)`` thus broadcast
against per-residue data ``(B, T, L, 3)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from starmd.diffusion import rng


@runtime_checkable
class Diffuser(Protocol):
    """One diffusion process on one manifold (FrameDiff-style interface).

    ``forward_marginal`` corrupts clean data to time ``tau``; ``score`` turns a clean-data (x0)
    prediction into the score of the forward transition kernel ``grad log p(x_tau | x0)``;
    ``reverse_step`` takes one Euler-Maruyama step of the reverse SDE (or of the probability-flow
    ODE) from ``tau`` to ``tau - dtau`` with the score implied by an x0 prediction;
    ``sample_prior`` draws from the reference distribution at ``tau = 1``; ``score_scaling`` is
    the root-mean-square of one component of the score at ``tau``, the normalizer of a score loss.
    """

    def forward_marginal(
        self, x0: torch.Tensor, tau: float | torch.Tensor, generator: rng.RandomSource
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def score(
        self, x_tau: torch.Tensor, x0: torch.Tensor, tau: float | torch.Tensor
    ) -> torch.Tensor: ...

    def reverse_step(
        self,
        x_tau: torch.Tensor,
        x0_pred: torch.Tensor,
        tau: float | torch.Tensor,
        dtau: float | torch.Tensor,
        generator: rng.RandomSource,
        ode: bool = False,
        noise_scale: float = 1.0,
    ) -> torch.Tensor: ...

    def sample_prior(
        self,
        shape: Sequence[int],
        generator: rng.RandomSource,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor: ...

    def score_scaling(self, tau: float | torch.Tensor) -> torch.Tensor: ...


def broadcast_time(tau: float | torch.Tensor, data: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``tau`` as a tensor of ``data``'s dtype/device with ``event_dims`` trailing singleton dims.

    Args:
        tau: diffusion time(s), broadcastable to ``data.shape[:-event_dims]``.
        data: the tensor ``tau`` will be combined with.
        event_dims: number of trailing dimensions of one datum (1 for vectors, 2 for matrices).

    Raises:
        ValueError: if ``tau`` does not broadcast to the batch shape of ``data``.
    """
    tau = torch.as_tensor(tau, dtype=data.dtype, device=data.device)
    batch_shape = data.shape[: data.dim() - event_dims]
    try:  # numpy's check: torch.broadcast_shapes imports sympy on first use (~0.4 s)
        ok = np.broadcast_shapes(tau.shape, batch_shape) == tuple(batch_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"diffusion time of shape {tuple(tau.shape)} does not broadcast to the batch shape "
            f"{tuple(batch_shape)} of data {tuple(data.shape)}"
        )
    return tau.reshape(*tau.shape, *([1] * event_dims))


def standard_normal(like: torch.Tensor, generator: rng.RandomSource) -> torch.Tensor:
    """``z ~ N(0, I)`` of ``like``'s shape, dtype and device."""
    return rng.normal(like.shape, generator, like.dtype, like.device)


def euler_maruyama_noise(
    g_sq: torch.Tensor,
    dtau: torch.Tensor,
    like: torch.Tensor,
    generator: rng.RandomSource,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """The noise of one Euler-Maruyama step of a reverse SDE with squared diffusion
    coefficient ``g_sq``: ``noise_scale * sqrt(g^2 dtau) z``, ``z`` of ``like``'s shape."""
    z = standard_normal(like, generator)
    return noise_scale * torch.sqrt(g_sq * dtau) * z


def variance_exploding_step(
    g_sq: torch.Tensor,
    score: torch.Tensor,
    dtau: torch.Tensor,
    generator: rng.RandomSource,
    ode: bool,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """The tangent-space increment of one reverse Euler-Maruyama step of a variance-exploding
    process (no drift; SO(3) and the torus): ``g^2 s dtau + noise_scale g sqrt(dtau) z``, or
    ``g^2 s dtau / 2`` for the probability-flow ODE."""
    if ode:
        return 0.5 * g_sq * score * dtau
    return g_sq * score * dtau + euler_maruyama_noise(g_sq, dtau, score, generator, noise_scale)


def posterior_noise(
    std_next: torch.Tensor, sigma_eta: torch.Tensor, like: torch.Tensor, generator: rng.RandomSource
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two noise parts of a DDIM/DDPM posterior step to a time whose noise level is
    ``std_next``: the weight ``sqrt(std_next^2 - sigma_eta^2)`` of the predicted noise ``eps``
    and a fresh ``z ~ N(0, I)`` of ``like``'s shape (weighted by ``sigma_eta``)."""
    z = standard_normal(like, generator)
    return torch.sqrt((std_next**2 - sigma_eta**2).clamp(min=0.0)), z


def variance_exploding_sigma_eta(
    sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float
) -> torch.Tensor:
    """The fresh-noise level of a posterior step of a variance-exploding process from noise
    ``sigma`` to ``sigma_next``: ``eta * sigma' * sqrt(1 - sigma'^2 / sigma^2)`` (``eta = 1``:
    the exact Gaussian posterior, ``0``: deterministic DDIM)."""
    return eta * sigma_next * torch.sqrt((1 - (sigma_next / sigma) ** 2).clamp(min=0.0))
