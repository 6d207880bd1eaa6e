"""Scalar geometry for the compiled (numba) loops of the refinement and the polish.

Each function here is the one-point version of a tensor function elsewhere in the package, with
the same formulas, so that a compiled loop and its torch reference compute the same thing:
:func:`dihedral_gradient` is :func:`starmd.structure.geometry.dihedral_gradient`,
:func:`bilinear` is the Ramachandran and Janin fields' interpolation
(:mod:`starmd.structure.ramachandran`); :func:`cell_grid` is the spatial grid of the pair
searches.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

DEG = 180.0 / math.pi


@njit(cache=True)
def cross(ax, ay, az, bx, by, bz):
    return ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx


@njit(cache=True)
def add_pair(force, i, j, coef, bx, by, bz):
    """``force[i] += coef * b``, ``force[j] -= coef * b`` for rows of ``force (n, 3)``: the
    gradient of a term on the distance between atoms ``i`` and ``j`` (``b = x_i - x_j``)."""
    force[i, 0] += coef * bx
    force[i, 1] += coef * by
    force[i, 2] += coef * bz
    force[j, 0] -= coef * bx
    force[j, 1] -= coef * by
    force[j, 2] -= coef * bz


@njit(cache=True)
def dihedral_gradient(p0, p1, p2, p3, out):
    """IUPAC dihedral (radians) of the points ``p0..p3`` (each ``(3,)``) and its gradient with
    respect to each point into ``out (4, 3)`` (Blondel and Karplus 1996)."""
    fx, fy, fz = p0[0] - p1[0], p0[1] - p1[1], p0[2] - p1[2]
    gx, gy, gz = p1[0] - p2[0], p1[1] - p2[1], p1[2] - p2[2]
    hx, hy, hz = p3[0] - p2[0], p3[1] - p2[1], p3[2] - p2[2]
    ax, ay, az = cross(fx, fy, fz, gx, gy, gz)
    bx, by, bz = cross(hx, hy, hz, gx, gy, gz)
    g_norm = math.sqrt(gx * gx + gy * gy + gz * gz)
    a2 = ax * ax + ay * ay + az * az
    b2 = bx * bx + by * by + bz * bz
    fg = (fx * gx + fy * gy + fz * gz) / (a2 * g_norm)
    hg = (hx * gx + hy * gy + hz * gz) / (b2 * g_norm)
    ca, cb = g_norm / a2, g_norm / b2
    out[0, 0], out[0, 1], out[0, 2] = -ca * ax, -ca * ay, -ca * az
    out[3, 0], out[3, 1], out[3, 2] = cb * bx, cb * by, cb * bz
    out[1, 0] = ca * ax + fg * ax - hg * bx
    out[1, 1] = ca * ay + fg * ay - hg * by
    out[1, 2] = ca * az + fg * az - hg * bz
    out[2, 0] = hg * bx - fg * ax - cb * bx
    out[2, 1] = hg * by - fg * ay - cb * by
    out[2, 2] = hg * bz - fg * az - cb * bz
    # the angle as geometry.dihedral measures it: b0 = -f, b1 = -g, b2 = h
    n1x, n1y, n1z = cross(-fx, -fy, -fz, -gx, -gy, -gz)
    n2x, n2y, n2z = cross(-gx, -gy, -gz, hx, hy, hz)
    y = g_norm * (-fx * n2x - fy * n2y - fz * n2z)
    x = n1x * n2x + n1y * n2y + n1z * n2z
    return math.atan2(y, x)


@njit(cache=True)
def bilinear(grid, first, second, bin_deg, origin_deg):
    """Value of a torus grid ``[second_bin, first_bin]`` at angles (radians) ``first``,
    ``second``, bilinear between bin centres, and its partial derivatives (per radian)."""
    n = grid.shape[0]
    u = (first * DEG - origin_deg) / bin_deg - 0.5
    v = (second * DEG - origin_deg) / bin_deg - 0.5
    u0, v0 = math.floor(u), math.floor(v)
    fu, fv = u - u0, v - v0
    i0, j0 = int(u0) % n, int(v0) % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    g00, g01, g10, g11 = grid[j0, i0], grid[j0, i1], grid[j1, i0], grid[j1, i1]
    value = (1 - fu) * (1 - fv) * g00 + fu * (1 - fv) * g01 + (1 - fu) * fv * g10 + fu * fv * g11
    per_radian = DEG / bin_deg
    d_first = ((1 - fv) * (g01 - g00) + fv * (g11 - g10)) * per_radian
    d_second = ((1 - fu) * (g10 - g00) + fu * (g11 - g01)) * per_radian
    return value, d_first, d_second


@njit(cache=True)
def cell_grid(x, size):
    """A grid of cells at least ``size`` wide over points ``x (N, 3)`` (wider where the points
    are spread out, so that there are at most ``8 N + 64`` cells: a larger cell only adds
    candidates, it never loses a pair): each point's cell ``cell_of (N,)``, the points in cell
    order (cell ``k`` holds ``order[starts[k]:starts[k + 1]]``) and the grid's shape ``nx, ny,
    nz`` (cell ``(cx * ny + cy) * nz + cz``). The pair searches of the polish and of the
    validity checks look in each point's cell and its 26 neighbours."""
    n = x.shape[0]
    low = np.empty(3)
    high = np.empty(3)
    for c in range(3):
        low[c] = x[0, c]
        high[c] = x[0, c]
    for a in range(n):
        for c in range(3):
            low[c] = min(low[c], x[a, c])
            high[c] = max(high[c], x[a, c])
    while True:
        nx = int((high[0] - low[0]) / size) + 1
        ny = int((high[1] - low[1]) / size) + 1
        nz = int((high[2] - low[2]) / size) + 1
        if nx * ny * nz <= 8 * n + 64:
            break
        size *= 2.0
    cell_of = np.empty(n, dtype=np.int64)
    starts = np.zeros(nx * ny * nz + 1, dtype=np.int64)
    for a in range(n):
        cx = int((x[a, 0] - low[0]) / size)
        cy = int((x[a, 1] - low[1]) / size)
        cz = int((x[a, 2] - low[2]) / size)
        cell_of[a] = (cx * ny + cy) * nz + cz
        starts[cell_of[a] + 1] += 1
    for k in range(nx * ny * nz):
        starts[k + 1] += starts[k]
    filled = starts[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for a in range(n):
        order[filled[cell_of[a]]] = a
        filled[cell_of[a]] += 1
    return cell_of, order, starts, nx, ny, nz


def on_disk(*dispatchers) -> bool:
    """Whether numba's cache on disk holds an entry for each compiled function of
    ``dispatchers``; if not, their first call compiles them (tens of seconds, once after an
    installation). Reads numba's cache index path, which is not public API: where it cannot be
    read (another numba version), assumes cached."""
    from pathlib import Path

    for dispatcher in dispatchers:
        try:
            index = Path(dispatcher._cache._cache_file._index_path)
        except AttributeError:
            continue
        if not index.is_file():
            return False
    return True
