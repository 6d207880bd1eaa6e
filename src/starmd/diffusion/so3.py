"""Exponential and logarithm maps of SO(3), and uniform random rotations.

A rotation vector ``v`` (axis-angle, radians) of shape ``(..., 3)`` corresponds to the rotation
``exp(hat(v))`` by angle ``|v|`` about ``v / |v|``. Both maps go through unit quaternions
(``(w, x, y, z)``, :mod:`starmd.structure.rigid`), which keeps them accurate near angle 0 (Taylor
coefficients, finite gradients) and near angle pi (Shepperd's matrix-to-quaternion pivoting).
This module is the one place for these maps in the project.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from starmd.diffusion import rng
from starmd.structure.rigid import quat_to_rotmat, rotmat_to_quat

_SMALL_ANGLE = 1e-4


def hat(rotvec: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrix ``(..., 3, 3)`` of ``(..., 3)``: ``hat(v) @ u == cross(v, u)``."""
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    rows = ((zero, -z, y), (z, zero, -x), (-y, x, zero))
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def vee(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat` on the skew part of ``(..., 3, 3)``; returns ``(..., 3)``."""
    skew = 0.5 * (matrix - matrix.transpose(-1, -2))
    return torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], dim=-1)


def exp_map(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation vectors ``(..., 3)`` (radians) -> rotation matrices ``(..., 3, 3)``.

    Uses ``q = (cos(theta/2), sin(theta/2)/theta * v)`` with ``theta = |v|``; below a small angle
    the coefficient is its Taylor series ``1/2 - theta^2/48``, so value and gradient stay finite
    at ``v = 0``.
    """
    theta_sq = (rotvec * rotvec).sum(-1, keepdim=True)
    small = theta_sq < _SMALL_ANGLE**2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    coeff = torch.where(small, 0.5 - theta_sq / 48.0, torch.sin(0.5 * theta) / theta)
    w = torch.where(small, 1.0 - theta_sq / 8.0, torch.cos(0.5 * theta))
    return quat_to_rotmat(torch.cat([w, coeff * rotvec], dim=-1))


def log_map(rots: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> rotation vectors ``(..., 3)`` with angle in ``[0, pi]``.

    With the quaternion ``(w, u)`` (``w >= 0``, ``n = |u| = sin(theta/2)``) the rotation vector
    is ``2 atan2(n, w) / n * u``; below a small ``n`` the factor is its series
    ``(2/w)(1 - n^2/(3w^2))``.
    At angle exactly pi the sign of the axis is arbitrary (both describe the same rotation).
    """
    quat = rotmat_to_quat(rots)
    w, u = quat[..., :1], quat[..., 1:]
    n_sq = (u * u).sum(-1, keepdim=True)
    small = n_sq < _SMALL_ANGLE**2
    n = torch.sqrt(torch.where(small, torch.ones_like(n_sq), n_sq))
    factor = torch.where(small, 2.0 / w * (1.0 - n_sq / (3.0 * w * w)), 2.0 * torch.atan2(n, w) / n)
    return factor * u


def geodesic(start: torch.Tensor, end: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """``start exp(weight log(start^T end))`` for rotations ``(..., 3, 3)``: a fraction
    ``weight`` (a number, or a tensor broadcasting against the batch shape ``...``) of the way
    from ``start`` to ``end`` along their geodesic (beyond ``end`` for ``weight > 1``).

    On the CPU without gradients, one compiled loop (:mod:`starmd.diffusion.kernels`, float64,
    returned in ``start``'s dtype; equal to the tensor expression to rounding); elsewhere the
    tensor expression itself.
    """
    batch = torch.broadcast_shapes(start.shape[:-2], end.shape[:-2])
    weights = torch.as_tensor(weight, dtype=start.dtype, device=start.device)
    if start.device.type != "cpu" or start.requires_grad or end.requires_grad:
        return start @ exp_map(weights[..., None] * log_map(start.transpose(-1, -2) @ end))
    from starmd.diffusion.kernels import geodesic as compiled  # numba: imported on first use

    def flat(x: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
        return np.ascontiguousarray(
            x.detach().to(torch.float64).expand(*batch, *shape).reshape(-1, *shape).numpy()
        )

    # a number keeps its double precision (a tensor made of it would be float32 first)
    if torch.is_tensor(weight):
        weights = weight.detach().to(torch.float64)
    else:
        weights = torch.tensor(float(weight), dtype=torch.float64)
    out = compiled(
        flat(start, (3, 3)), flat(end, (3, 3)), flat(weights, ()).reshape(-1), _SMALL_ANGLE
    )
    return torch.from_numpy(out).reshape(*batch, 3, 3).to(start.dtype)


def rotation_angle(rots: torch.Tensor) -> torch.Tensor:
    """Rotation angle in ``[0, pi]`` of rotation matrices ``(..., 3, 3)``; returns ``(...)``."""
    return torch.linalg.vector_norm(log_map(rots), dim=-1)


def random_rotations(
    shape: Sequence[int],
    generator: rng.RandomSource,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rotations uniform on SO(3) (Haar measure), shape ``(*shape, 3, 3)``.

    A standard normal 4-vector normalized is uniform on the unit 3-sphere, i.e. a Haar-uniform
    unit quaternion.
    """
    quat = rng.normal((*shape, 4), generator, dtype, device)
    return quat_to_rotmat(quat)
