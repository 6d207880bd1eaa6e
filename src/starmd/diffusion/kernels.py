"""Compiled loops (numba) of the diffusion code's per-frame work on the CPU.

Both replace a few dozen small tensor operations whose dispatch, not arithmetic, set their
time on a CPU; the tensor versions stay the references (and the paths for GPUs and gradients).

:func:`dense_system`: :func:`starmd.diffusion.elastic.elastic_prior` assembles, per frame,
the ``3L x 3L`` precision of an anisotropic network plus its tether and the gradient of the
strained springs from tensor operations over ``(L, L, 3, 3)`` arrays: about 0.8 ms for a
48-residue frame on one CPU thread, more than the Cholesky factorization that follows;
:func:`dense_system` computes the same entries in one pass over the residue pairs (float64;
equal to the tensor version to rounding, tested in ``tests/diffusion/test_elastic.py``).

:func:`igso3_quantiles`: the inverse-CDF step of
:meth:`starmd.diffusion.igso3.IGSO3Table.sample_angle` (bracket the scale in the table,
search each uniform variate in its two rows, interpolate), the same expressions in the same
order: equal bit for bit (tested in ``tests/diffusion/test_igso3.py``).

:func:`geodesic`: ``start exp(w log(start^T end))`` per rotation (the posterior base's
rotations, the rollout's step scale), through quaternions as :mod:`starmd.diffusion.so3`'s maps
(tested in ``tests/diffusion/test_so3_maps.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def dense_system(x, rest, mask, bonded, spread, k_bond, k_contact, cutoff, restoring, deadband):
    """Precision ``(N, 3L, 3L)`` and strain gradient ``(N, 3L)`` of ``N`` frames (see
    :func:`starmd.diffusion.elastic.elastic_prior`).

    Args:
        x: C-alpha positions ``(N, L, 3)`` the springs are built on, Angstrom.
        rest: positions ``(N, L, 3)`` whose distances are the rest lengths.
        mask: ``(N, L)`` bool, residues that get springs.
        bonded: ``(N, L, L)`` bool, residues bonded in sequence.
        spread, k_bond, k_contact, cutoff, restoring, deadband: as
            :func:`starmd.diffusion.elastic.elastic_prior`.
    """
    n_f, n_l = x.shape[0], x.shape[1]
    size = 3 * n_l
    precision = np.zeros((n_f, size, size))
    gradient = np.zeros((n_f, size))
    diagonal = np.zeros((n_l, 3, 3))
    tether = 1.0 / (spread * spread)
    cutoff_sq = cutoff * cutoff
    for f in range(n_f):
        diagonal[:] = 0.0
        for i in range(n_l):
            for j in range(n_l):
                if i == j or not (mask[f, i] and mask[f, j]):
                    continue
                ox = x[f, j, 0] - x[f, i, 0]
                oy = x[f, j, 1] - x[f, i, 1]
                oz = x[f, j, 2] - x[f, i, 2]
                distance_sq = ox * ox + oy * oy + oz * oz
                bond = bonded[f, i, j]
                contact = distance_sq < cutoff_sq
                if not (bond or contact):
                    continue
                # the strained spring's pull (rest lengths from `rest`)
                rx = rest[f, j, 0] - rest[f, i, 0]
                ry = rest[f, j, 1] - rest[f, i, 1]
                rz = rest[f, j, 2] - rest[f, i, 2]
                change = math.sqrt(distance_sq) - math.sqrt(rx * rx + ry * ry + rz * rz)
                if deadband > 0.0 and not bond:
                    beyond = max(abs(change) - deadband, 0.0)
                    change = beyond if change > 0.0 else (-beyond if change < 0.0 else 0.0)
                strain = change * (k_bond if bond else k_contact * restoring)
                length = max(math.sqrt(distance_sq), 1e-6)
                gradient[f, 3 * i] -= strain * (ox / length)
                gradient[f, 3 * i + 1] -= strain * (oy / length)
                gradient[f, 3 * i + 2] -= strain * (oz / length)
                # the spring's Hessian block -(k / d^2) o o^T, and its sum on the diagonal
                weight = -((k_bond if bond else k_contact) / max(distance_sq, 1e-6))
                o = (ox, oy, oz)
                for a in range(3):
                    for b in range(3):
                        block = weight * (o[a] * o[b])
                        precision[f, 3 * i + a, 3 * j + b] = block
                        diagonal[i, a, b] -= block
        for i in range(n_l):
            for a in range(3):
                for b in range(3):
                    precision[f, 3 * i + a, 3 * i + b] = diagonal[i, a, b]
                precision[f, 3 * i + a, 3 * i + a] += tether
    return precision, gradient


@njit(cache=True)
def _row_quantile(flat_cdf, omega, width, row, u):
    """Angle at which table row ``row``'s CDF reaches ``u`` (linear interpolation);
    ``flat_cdf`` holds row ``r`` offset by ``2 r``, so one sorted search finds it."""
    j = np.searchsorted(flat_cdf, u + 2.0 * row, side="right")
    j_local = min(max(j - row * width, 1), width - 1)
    hi = row * width + j_local
    c_lo = flat_cdf[hi - 1] - 2.0 * row
    c_hi = flat_cdf[hi] - 2.0 * row
    t = min(max((u - c_lo) / max(c_hi - c_lo, 1e-300), 0.0), 1.0)
    return omega[j_local - 1] + t * (omega[1] - omega[0])


@njit(cache=True)
def igso3_quantiles(sigma, u, flat_cdf, omega, min_sigma, max_sigma, num_sigma):
    """IGSO3 angles ``(N,)`` for scales ``sigma (N,)`` inside the table's range and uniform
    variates ``u (N,)``: the quantile interpolated linearly in omega within a row and linearly
    in sigma between the two neighbouring rows (float64)."""
    width = omega.shape[0]
    out = np.empty(sigma.shape[0])
    for n in range(sigma.shape[0]):
        pos = min(max((sigma[n] - min_sigma) / (max_sigma - min_sigma) * (num_sigma - 1), 0.0),
                  num_sigma - 1)  # fmt: skip
        index = min(int(math.floor(pos)), num_sigma - 2)
        weight = pos - index
        low = _row_quantile(flat_cdf, omega, width, index, u[n])
        high = _row_quantile(flat_cdf, omega, width, index + 1, u[n])
        out[n] = (1 - weight) * low + weight * high
    return out


@njit(cache=True)
def _quaternion(r):
    """Unit quaternion ``(w, x, y, z)``, ``w >= 0``, of rotation ``r (3, 3)`` (Shepperd's
    method: the candidate with the largest pivot, the first of equal ones)."""
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    candidates = (
        (1.0 + trace, r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]),
        (r[2, 1] - r[1, 2], 1.0 + 2.0 * r[0, 0] - trace, r[0, 1] + r[1, 0], r[0, 2] + r[2, 0]),
        (r[0, 2] - r[2, 0], r[0, 1] + r[1, 0], 1.0 + 2.0 * r[1, 1] - trace, r[1, 2] + r[2, 1]),
        (r[1, 0] - r[0, 1], r[0, 2] + r[2, 0], r[1, 2] + r[2, 1], 1.0 + 2.0 * r[2, 2] - trace),
    )
    best = 0
    for k in range(1, 4):
        if candidates[k][k] > candidates[best][best]:
            best = k
    w, x, y, z = candidates[best]
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    sign = -1.0 if w / norm < 0.0 else 1.0
    return sign * w / norm, sign * x / norm, sign * y / norm, sign * z / norm


@njit(cache=True)
def geodesic(start, end, weight, small_angle):
    """``start exp(weight log(start^T end))`` for rotations ``start, end (N, 3, 3)`` and
    ``weight (N,)`` (float64): the point a fraction ``weight`` of the way along the geodesic
    from ``start`` to ``end`` (beyond it for ``weight > 1``). The log and exp maps as
    :func:`starmd.diffusion.so3.log_map` and :func:`~starmd.diffusion.so3.exp_map` compute
    them, with their series below ``small_angle``."""
    n_r = start.shape[0]
    out = np.empty((n_r, 3, 3))
    relative = np.empty((3, 3))
    turn = np.empty((3, 3))
    small_sq = small_angle * small_angle
    for n in range(n_r):
        for a in range(3):
            for b in range(3):
                relative[a, b] = (
                    start[n, 0, a] * end[n, 0, b]
                    + start[n, 1, a] * end[n, 1, b]
                    + start[n, 2, a] * end[n, 2, b]
                )
        w, x, y, z = _quaternion(relative)
        n_sq = x * x + y * y + z * z
        if n_sq < small_sq:
            factor = 2.0 / w * (1.0 - n_sq / (3.0 * w * w))
        else:
            norm = math.sqrt(n_sq)
            factor = 2.0 * math.atan2(norm, w) / norm
        vx, vy, vz = weight[n] * factor * x, weight[n] * factor * y, weight[n] * factor * z
        theta_sq = vx * vx + vy * vy + vz * vz
        if theta_sq < small_sq:
            coeff, qw = 0.5 - theta_sq / 48.0, 1.0 - theta_sq / 8.0
        else:
            theta = math.sqrt(theta_sq)
            coeff, qw = math.sin(0.5 * theta) / theta, math.cos(0.5 * theta)
        qx, qy, qz = coeff * vx, coeff * vy, coeff * vz
        norm = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw, qx, qy, qz = qw / norm, qx / norm, qy / norm, qz / norm
        turn[0, 0] = 1.0 - 2.0 * (qy * qy + qz * qz)
        turn[0, 1] = 2.0 * (qx * qy - qw * qz)
        turn[0, 2] = 2.0 * (qx * qz + qw * qy)
        turn[1, 0] = 2.0 * (qx * qy + qw * qz)
        turn[1, 1] = 1.0 - 2.0 * (qx * qx + qz * qz)
        turn[1, 2] = 2.0 * (qy * qz - qw * qx)
        turn[2, 0] = 2.0 * (qx * qz - qw * qy)
        turn[2, 1] = 2.0 * (qy * qz + qw * qx)
        turn[2, 2] = 1.0 - 2.0 * (qx * qx + qy * qy)
        for a in range(3):
            for b in range(3):
                out[n, a, b] = (
                    start[n, a, 0] * turn[0, b]
                    + start[n, a, 1] * turn[1, b]
                    + start[n, a, 2] * turn[2, b]
                )
    return out


def prepare() -> None:
    """Run each loop here once on a tiny input (nothing kept): loading them from numba's cache,
    or compiling them the first time after an installation, is then a rollout's set-up time
    rather than its first frame's."""
    x = np.zeros((1, 2, 3))
    x[0, 1, 0] = 3.8
    dense_system(
        x, x, np.ones((1, 2), np.bool_), np.ones((1, 2, 2), np.bool_), 1.0, 1.0, 1.0, 10.0, 0.0, 0.0
    )
    rotation = np.eye(3)[None]
    geodesic(rotation, rotation, np.ones(1), 1e-4)
    grid = np.linspace(0.0, 1.0, 4)
    flat = np.concatenate([grid, grid + 2.0])
    igso3_quantiles(np.full(1, 0.5), np.full(1, 0.5), flat, grid, 0.1, 1.0, 2)
