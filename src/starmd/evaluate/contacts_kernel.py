"""The validity checks' close contacts as one compiled loop (numba) over frames.

:func:`starmd.evaluate.validity.measure_frames` needs, per frame, the closest pair of C-alpha
atoms not adjacent in sequence and the largest van der Waals overlap between heavy atoms of
residues two or more apart. A k-d tree per frame (scipy) finds the candidate pairs in about
0.4 ms for a 48-residue protein, more than the rest of the checks together; :func:`close_contacts`
finds the same pairs on a grid of cells and evaluates the same expressions in the same order, so
its values equal the tree's bit for bit (tested in ``tests/evaluate/test_validity.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from starmd.structure.kernels import cell_grid


@njit(cache=True)
def _pairs_within(x, reach):
    """Index pairs ``(P, 2)`` (first < second) of points ``x (N, 3)`` at most ``reach`` apart."""
    n = x.shape[0]
    cell_of, order, starts, nx, ny, nz = cell_grid(x, reach)
    capacity = max(64, 8 * n)
    out = np.empty((capacity, 2), dtype=np.int64)
    count = 0
    for i in range(n):
        cell = cell_of[i]
        cz = cell % nz
        cy = (cell // nz) % ny
        cx = cell // (ny * nz)
        for ox in range(max(cx - 1, 0), min(cx + 2, nx)):
            for oy in range(max(cy - 1, 0), min(cy + 2, ny)):
                row = (ox * ny + oy) * nz
                for slot in range(starts[row + max(cz - 1, 0)], starts[row + min(cz + 2, nz)]):
                    j = order[slot]
                    if j <= i:
                        continue
                    dx = x[i, 0] - x[j, 0]
                    dy = x[i, 1] - x[j, 1]
                    dz = x[i, 2] - x[j, 2]
                    if math.sqrt(dx * dx + dy * dy + dz * dz) > reach:
                        continue
                    if count == out.shape[0]:
                        grown = np.empty((2 * out.shape[0], 2), dtype=np.int64)
                        grown[:count] = out
                        out = grown
                    out[count, 0] = i
                    out[count, 1] = j
                    count += 1
    return out[:count]


@njit(cache=True)
def close_contacts(
    frames,
    finite,
    ca,
    ca_residue,
    atom_residue,
    residue_chain,
    residue_number,
    atom_is_sg,
    atom_polar,
    atom_radius,
    ca_search,
    contact_search,
    polar_allowance,
):
    """Per frame of ``frames (T, N, 3)`` (those with ``finite``): the closest C-alpha pair not
    adjacent in sequence (same chain, residue numbers at most 1 apart), capped at
    ``ca_search``, and the largest overlap ``r_i + r_j - d - allowance`` (``polar_allowance``
    for two N/O atoms) between atoms of residues two or more apart or in different chains,
    never two SG, floored at 0; only pairs within ``contact_search`` are looked at (beyond the
    largest sum of radii, no pair overlaps). Returns ``(closest (T,), overlap (T,))``."""
    n_t = frames.shape[0]
    closest = np.zeros(n_t)
    overlap = np.zeros(n_t)
    for t in range(n_t):
        if not finite[t]:
            continue
        x = frames[t]
        best = ca_search
        ca_xyz = np.empty((ca.shape[0], 3))
        for k in range(ca.shape[0]):
            for c in range(3):
                ca_xyz[k, c] = x[ca[k], c]
        if ca.shape[0] > 1:
            pairs = _pairs_within(ca_xyz, ca_search)
            for p in range(pairs.shape[0]):
                ri, rj = ca_residue[pairs[p, 0]], ca_residue[pairs[p, 1]]
                same_chain = residue_chain[ri] == residue_chain[rj]
                if same_chain and abs(residue_number[ri] - residue_number[rj]) <= 1:
                    continue
                i, j = pairs[p, 0], pairs[p, 1]
                dx = ca_xyz[i, 0] - ca_xyz[j, 0]
                dy = ca_xyz[i, 1] - ca_xyz[j, 1]
                dz = ca_xyz[i, 2] - ca_xyz[j, 2]
                best = min(best, math.sqrt(dx * dx + dy * dy + dz * dz))
        closest[t] = best
        worst = 0.0
        if x.shape[0] > 1:
            pairs = _pairs_within(x, contact_search)
            for p in range(pairs.shape[0]):
                i, j = pairs[p, 0], pairs[p, 1]
                ri, rj = atom_residue[i], atom_residue[j]
                far = residue_chain[ri] != residue_chain[rj] or (
                    abs(residue_number[ri] - residue_number[rj]) >= 2
                )
                if not far or (atom_is_sg[i] and atom_is_sg[j]):
                    continue
                dx = x[i, 0] - x[j, 0]
                dy = x[i, 1] - x[j, 1]
                dz = x[i, 2] - x[j, 2]
                allowance = polar_allowance if atom_polar[i] and atom_polar[j] else 0.0
                excess = atom_radius[i] + atom_radius[j] - math.sqrt(dx * dx + dy * dy + dz * dz)
                worst = max(worst, excess - allowance)
        overlap[t] = worst
    return closest, overlap
