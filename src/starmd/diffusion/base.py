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
        self, x0: torch.Tensor, tau: float | torch.Tensor, generator: torch.Generator
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
        generator: torch.Generator,
        ode: bool = False,
        noise_scale: float = 1.0,
    ) -> torch.Tensor: ...

    def sample_prior(
        self,
        shape: Sequence[int],
        generator: torch.Generator,
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
