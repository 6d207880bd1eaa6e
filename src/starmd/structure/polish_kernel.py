"""The polish energy and its gradient as one compiled loop (numba).

:meth:`starmd.structure.polish._Energy.value_and_grad_torch` assembles the polish energy with a
few large gathers and scatters per term over every frame of a chunk; a 48-residue frame needs
about 2,500 of those rows, so the gathers, scatters and the temporaries between them set the
time. :func:`value_and_grad` computes the same terms (documented in
:mod:`starmd.structure.polish`) frame by frame, row by row, without temporaries. The torch
version stays the reference; the two agree to float64 rounding (tested in
``tests/structure/test_polish_kernel.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from starmd.structure.kernels import DEG, add_pair, bilinear, cell_grid, cross, dihedral_gradient


@njit(cache=True)
def _region(weight, sd, margin, settle, distance):
    """A term on the signed distance to an allowed region: value, strain, d(value)/d(distance)."""
    beyond = max(distance + margin, 0.0)
    outside = beyond / sd
    return weight * outside * outside, beyond / settle, 2.0 * weight * outside / sd


@njit(cache=True)
def _frame_energy(x, t, tables, gradient, grad, angle, d_angle, slope):
    """Energy and strain of frame ``t`` at positions ``x (N, 3)`` and, if ``gradient``, its
    gradient into ``grad (N, 3)``; ``angle``, ``d_angle``, ``slope`` are scratch space for the
    dihedrals (see :func:`value_and_grad` for ``tables``)."""
    (
        start,
        restraint,
        pairs,
        kept,
        inverse_sd,
        settle_slack,
        branches,
        volume,
        watch_start,
        watch_first,
        watch_second,
        watch_limit,
        dihedrals,
        bounds,
        cis,
        rama_grid,
        janin_grid,
        params,
    ) = tables
    n_n = x.shape[0]
    volume_sd, settle_volume, clash_sd, settle_overlap = params[0], params[1], params[2], params[3]
    rama_weight, rama_sd, margin, settle_rama = params[4], params[5], params[6], params[7]
    rotamer_weight, settle_rotamer = params[8], params[9]
    omega_tol, omega_sd, settle_omega = params[10], params[11], params[12]
    staggered_tol, rama_bin, janin_bin = params[13], params[14], params[15]
    total = 0.0
    strain = 0.0
    if gradient:
        grad[:] = 0.0
    # restraint to the input
    for a in range(n_n):
        inverse = 1.0 / (restraint[a] * restraint[a])
        for c in range(3):
            delta = x[a, c] - start[t, a, c]
            total += delta * delta * inverse
            if gradient:
                grad[a, c] += 2.0 * delta * inverse
    # kept distances: bonds, 1-3 pairs, rigid groups
    for p in range(pairs.shape[0]):
        i, j = pairs[p, 0], pairs[p, 1]
        bx, by, bz = x[i, 0] - x[j, 0], x[i, 1] - x[j, 1], x[i, 2] - x[j, 2]
        length = math.sqrt(bx * bx + by * by + bz * bz)
        deviation = length - kept[p, t]
        error = deviation * inverse_sd[p]
        total += error * error
        strain = max(strain, abs(deviation) / settle_slack[p])
        if gradient:
            add_pair(grad, i, j, 2.0 * error * inverse_sd[p] / length, bx, by, bz)
    # signed volumes at branch atoms
    for v in range(branches.shape[0]):
        o, i, j, k = branches[v, 0], branches[v, 1], branches[v, 2], branches[v, 3]
        ux, uy, uz = x[i, 0] - x[o, 0], x[i, 1] - x[o, 1], x[i, 2] - x[o, 2]
        vx, vy, vz = x[j, 0] - x[o, 0], x[j, 1] - x[o, 1], x[j, 2] - x[o, 2]
        wx, wy, wz = x[k, 0] - x[o, 0], x[k, 1] - x[o, 1], x[k, 2] - x[o, 2]
        cx, cy, cz = cross(ux, uy, uz, vx, vy, vz)
        error = (cx * wx + cy * wy + cz * wz - volume[v, t]) / volume_sd
        total += error * error
        strain = max(strain, abs(error) * volume_sd / settle_volume)
        if gradient:
            scale = 2.0 * error / volume_sd
            dux, duy, duz = cross(vx, vy, vz, wx, wy, wz)
            dvx, dvy, dvz = cross(wx, wy, wz, ux, uy, uz)
            grad[i, 0] += scale * dux
            grad[i, 1] += scale * duy
            grad[i, 2] += scale * duz
            grad[j, 0] += scale * dvx
            grad[j, 1] += scale * dvy
            grad[j, 2] += scale * dvz
            grad[k, 0] += scale * cx
            grad[k, 1] += scale * cy
            grad[k, 2] += scale * cz
            grad[o, 0] -= scale * (dux + dvx + cx)
            grad[o, 1] -= scale * (duy + dvy + cy)
            grad[o, 2] -= scale * (duz + dvz + cz)
    # van der Waals overlaps of the frame's watched pairs
    for p in range(watch_start[t], watch_start[t + 1]):
        i, j = watch_first[p], watch_second[p]
        bx, by, bz = x[i, 0] - x[j, 0], x[i, 1] - x[j, 1], x[i, 2] - x[j, 2]
        d = math.sqrt(bx * bx + by * by + bz * bz)
        excess = max(watch_limit[p] - d, 0.0)
        overlap = excess / clash_sd
        total += overlap * overlap
        strain = max(strain, excess / settle_overlap)
        if gradient and excess > 0.0:
            add_pair(grad, i, j, -2.0 * overlap / clash_sd / d, bx, by, bz)
    # torsion terms: Ramachandran, rotamers, omega
    n_q = dihedrals.shape[0]
    if n_q == 0:
        return total, strain
    phi0, psi0, omega0, chi10, chi20, only0, end = (
        bounds[0],
        bounds[1],
        bounds[2],
        bounds[3],
        bounds[4],
        bounds[5],
        bounds[6],
    )
    for q in range(n_q):
        angle[q] = dihedral_gradient(
            x[dihedrals[q, 0]], x[dihedrals[q, 1]], x[dihedrals[q, 2]], x[dihedrals[q, 3]],
            d_angle[q],
        )  # fmt: skip
        slope[q] = 0.0
    if rama_weight > 0.0:
        for r in range(psi0 - phi0):
            distance, d_phi, d_psi = bilinear(
                rama_grid, angle[phi0 + r], angle[psi0 + r], rama_bin, -180.0
            )
            value, worst, d_value = _region(rama_weight, rama_sd, margin, settle_rama, distance)
            total += value
            strain = max(strain, worst)
            slope[phi0 + r] += d_value * d_phi
            slope[psi0 + r] += d_value * d_psi
    if rotamer_weight > 0.0:
        for r in range(chi20 - chi10):
            distance, d_chi1, d_chi2 = bilinear(
                janin_grid, angle[chi10 + r], angle[chi20 + r], janin_bin, 0.0
            )
            value, worst, d_value = _region(
                rotamer_weight, rama_sd, margin, settle_rotamer, distance
            )
            total += value
            strain = max(strain, worst)
            slope[chi10 + r] += d_value * d_chi1
            slope[chi20 + r] += d_value * d_chi2
        for q in range(only0, end):
            degrees = angle[q] * DEG
            offset = 0.0
            for k, centre in enumerate((60.0, 180.0, 300.0)):
                candidate = (degrees - centre + 180.0) % 360.0 - 180.0
                if k == 0 or abs(candidate) < abs(offset):
                    offset = candidate
            sign = 1.0 if offset > 0.0 else (-1.0 if offset < 0.0 else 0.0)
            value, worst, d_value = _region(
                rotamer_weight, rama_sd, margin, settle_rotamer, abs(offset) - staggered_tol
            )
            total += value
            strain = max(strain, worst)
            slope[q] += d_value * sign * DEG
    for w in range(chi10 - omega0):
        q = omega0 + w
        degrees = angle[q] * DEG
        sign = 1.0 if degrees > 0.0 else (-1.0 if degrees < 0.0 else 0.0)
        off = degrees if cis[w, t] else degrees - sign * 180.0
        beyond = max(abs(off) - omega_tol, 0.0)
        excess = beyond / omega_sd
        total += excess * excess
        strain = max(strain, beyond / settle_omega)
        off_sign = 1.0 if off > 0.0 else (-1.0 if off < 0.0 else 0.0)
        slope[q] += 2.0 * excess / omega_sd * off_sign * DEG
    if gradient:
        for q in range(n_q):
            if slope[q] == 0.0:
                continue
            for k in range(4):
                a = dihedrals[q, k]
                for c in range(3):
                    grad[a, c] += slope[q] * d_angle[q, k, c]
    return total, strain


@njit(cache=True)
def value_and_grad(x, tables, gradient, total, strain, grad):
    """Energy into ``total (T,)``, strain into ``strain (T,)`` and, if ``gradient``, the
    gradient into ``grad (T, N, 3)`` of frames ``x (T, N, 3)`` (all float64).

    ``tables`` as :meth:`starmd.structure.polish._Energy.kernel_tables` builds them: ``start
    (T, N, 3)``, ``restraint (N,)``; ``pairs (P, 2)`` kept distances with ``kept (P, T)``,
    ``inverse_sd (P,)``, ``settle_slack (P,)``; ``branches (V, 4)`` with ``volume (V, T)``; the
    watched pairs, frame ``t``'s rows from ``watch_start[t]`` to ``watch_start[t + 1]``
    (atoms, overlap limit); ``dihedrals (Q, 4)`` in parts phi, psi, omega, chi1, chi2,
    chi1-only delimited by ``bounds (7,)``, ``cis (W, T)`` of the omega part; the Ramachandran
    and Janin grids; ``params`` = volume_sd_a3, settle_volume_a3, clash_sd_a,
    settle_overlap_a, rama_weight, rama_sd_deg, rama_margin_deg, settle_rama_deg,
    rotamer_weight, settle_rotamer_deg, omega_tolerance_deg, omega_sd_deg, settle_omega_deg,
    staggered_tolerance_deg, rama_bin_deg, janin_bin_deg.
    """
    n_q = tables[12].shape[0]
    angle, d_angle, slope = np.empty(n_q), np.empty((n_q, 4, 3)), np.empty(n_q)
    scratch = np.empty((x.shape[1], 3))
    for t in range(x.shape[0]):
        out = grad[t] if gradient else scratch
        total[t], strain[t] = _frame_energy(x[t], t, tables, gradient, out, angle, d_angle, slope)


@njit(cache=True)
def lbfgs(x, tables, iterations, history, max_step, armijo, backtracks):
    """Up to ``iterations`` L-BFGS steps on every frame of ``x (T, N, 3)`` (in place), each
    frame on its own: two-loop recursion over its last ``history`` steps (initial scale from
    the last pair, 1e-3 before the first or where it is not positive), steepest descent times
    1e-3 where that direction is not downhill, then a backtracking (Armijo, ``armijo``) line
    search of at most ``backtracks`` halvings from the full step, capped at ``max_step`` per
    atom; a failed search leaves the frame where it was for that step. A frame stops once its
    strain is at most 1 (nothing left worth fixing). The same algorithm as
    :func:`starmd.structure.polish._lbfgs_torch`."""
    n_t, n_n = x.shape[0], x.shape[1]
    size = n_n * 3
    n_q = tables[12].shape[0]
    angle, d_angle, slope_q = np.empty(n_q), np.empty((n_q, 4, 3)), np.empty(n_q)
    grad = np.empty((n_n, 3))
    trial_grad = np.empty((n_n, 3))
    trial = np.empty((n_n, 3))
    steps_s = np.empty((history, size))
    steps_y = np.empty((history, size))
    rhos = np.empty(history)
    alphas = np.empty(history)
    q = np.empty(size)
    direction = np.empty(size)
    for t in range(n_t):
        frame = x[t]
        value, strain = _frame_energy(frame, t, tables, True, grad, angle, d_angle, slope_q)
        flat_grad = grad.reshape(size)
        kept_steps = 0  # pairs held; the newest at (newest) in a ring of `history`
        newest = -1
        for _ in range(iterations):
            if strain <= 1.0:
                break
            q[:] = flat_grad
            for back in range(kept_steps):
                m = (newest - back) % history
                a = rhos[m] * np.dot(steps_s[m], q)
                q -= a * steps_y[m]
                alphas[back] = a
            scale = 1e-3
            if kept_steps > 0:
                yy = max(np.dot(steps_y[newest], steps_y[newest]), 1e-30)
                scale = np.dot(steps_s[newest], steps_y[newest]) / yy
                if not scale > 0.0:
                    scale = 1e-3
            q *= scale
            for forward in range(kept_steps - 1, -1, -1):
                m = (newest - forward) % history
                b = rhos[m] * np.dot(steps_y[m], q)
                q += steps_s[m] * (alphas[forward] - b)
            direction[:] = -q
            slope = np.dot(direction, flat_grad)
            if slope >= 0.0:
                direction[:] = -1e-3 * flat_grad
                slope = np.dot(direction, flat_grad)
            longest = 0.0
            for a in range(n_n):
                dx, dy, dz = direction[3 * a], direction[3 * a + 1], direction[3 * a + 2]
                longest = max(longest, math.sqrt(dx * dx + dy * dy + dz * dz))
            alpha = min(max_step / max(longest, 1e-30), 1.0)
            accepted = False
            new_value, new_strain = value, strain
            for _ in range(backtracks):
                trial.reshape(size)[:] = frame.reshape(size) + alpha * direction
                trial_value, trial_strain = _frame_energy(
                    trial, t, tables, True, trial_grad, angle, d_angle, slope_q
                )
                if trial_value <= value + armijo * alpha * slope:
                    accepted = True
                    new_value, new_strain = trial_value, trial_strain
                    break
                alpha /= 2.0
            newest = (newest + 1) % history
            kept_steps = min(kept_steps + 1, history)
            if accepted:
                steps_s[newest] = trial.reshape(size) - frame.reshape(size)
                steps_y[newest] = trial_grad.reshape(size) - flat_grad
                curvature = np.dot(steps_s[newest], steps_y[newest])
                rhos[newest] = 1.0 / curvature if curvature > 1e-12 else 0.0
                frame[:] = trial
                grad[:] = trial_grad
            else:
                steps_s[newest] = 0.0
                steps_y[newest] = 0.0
                rhos[newest] = 0.0
            value, strain = new_value, new_strain


@njit(cache=True)
def watched_pairs(
    x,
    reach,
    margin,
    residue_number,
    chain,
    sulfur_gamma,
    radius,
    polar,
    bonded_keys,
    polar_allowance,
    target,
    neighbour,
):
    """The atom pairs of frames ``x (T, N, 3)`` that may overlap, found on a grid of cells at
    least ``reach`` wide (so the cost follows the atoms in contact, not the square of the atom
    count): atoms of residues two or more apart (or in different chains), or of consecutive
    residues and more than three bonds apart (``bonded_keys``: sorted ``first * N + second`` of
    the pairs within three bonds), never two SG, closer than their overlap limit plus
    ``margin``. The limit is the sum of the radii, less ``polar_allowance`` for two N/O atoms,
    less ``target`` (residues apart) or ``neighbour`` (consecutive residues).

    Returns ``frame, first, second`` (int64, ``first < second``), ``limit``, ``contact`` (the
    sum of radii less the polar allowance) and ``judged`` (residues apart), one row per pair,
    ordered by frame.
    """
    n_t, n_n = x.shape[0], x.shape[1]
    capacity = max(1024, 16 * n_n * n_t)
    frame = np.empty(capacity, dtype=np.int64)
    first = np.empty(capacity, dtype=np.int64)
    second = np.empty(capacity, dtype=np.int64)
    limit = np.empty(capacity)
    contact = np.empty(capacity)
    judged = np.empty(capacity, dtype=np.bool_)
    count = 0
    sorted_x = np.empty((n_n, 3))
    reach_sq = reach * reach
    for t in range(n_t):
        cell_of, order, starts, nx, ny, nz = cell_grid(x[t], reach)
        for slot in range(n_n):  # coordinates in cell order, read contiguously below
            for c in range(3):
                sorted_x[slot, c] = x[t, order[slot], c]
        for i in range(n_n):
            cell = cell_of[i]
            cz = cell % nz
            cy = (cell // nz) % ny
            cx = cell // (ny * nz)
            xi, yi, zi = x[t, i, 0], x[t, i, 1], x[t, i, 2]
            for ox in range(max(cx - 1, 0), min(cx + 2, nx)):
                for oy in range(max(cy - 1, 0), min(cy + 2, ny)):
                    row = (ox * ny + oy) * nz
                    # the cells oz - 1 .. oz + 1 of this row are contiguous in cell order
                    lo_slot = starts[row + max(cz - 1, 0)]
                    hi_slot = starts[row + min(cz + 2, nz)]
                    for slot in range(lo_slot, hi_slot):
                        j = order[slot]
                        if j <= i:  # each pair once, from its lower atom
                            continue
                        dx = xi - sorted_x[slot, 0]
                        dy = yi - sorted_x[slot, 1]
                        dz = zi - sorted_x[slot, 2]
                        d_sq = dx * dx + dy * dy + dz * dz
                        if d_sq > reach_sq:
                            continue
                        gap = abs(residue_number[i] - residue_number[j])
                        far = gap >= 2 or chain[i] != chain[j]
                        if not far:
                            if gap != 1:
                                continue
                            key = i * n_n + j
                            at = np.searchsorted(bonded_keys, key)
                            if at < bonded_keys.shape[0] and bonded_keys[at] == key:
                                continue
                        if sulfur_gamma[i] and sulfur_gamma[j]:
                            continue
                        touch = radius[i] + radius[j]
                        if polar[i] and polar[j]:
                            touch -= polar_allowance
                        bound = touch - (target if far else neighbour)
                        if math.sqrt(d_sq) >= bound + margin:
                            continue
                        if count == capacity:
                            capacity *= 2
                            frame = _grown(frame, capacity)
                            first = _grown(first, capacity)
                            second = _grown(second, capacity)
                            limit = _grown(limit, capacity)
                            contact = _grown(contact, capacity)
                            judged = _grown(judged, capacity)
                        frame[count], first[count], second[count] = t, i, j
                        limit[count], contact[count], judged[count] = bound, touch, far
                        count += 1
    return (
        frame[:count].copy(),
        first[:count].copy(),
        second[:count].copy(),
        limit[:count].copy(),
        contact[:count].copy(),
        judged[:count].copy(),
    )


@njit(cache=True)
def _grown(array, capacity):
    out = np.empty(capacity, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out
