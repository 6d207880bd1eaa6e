"""The refinement's descent as one compiled loop (numba), for frames on the CPU.

:func:`starmd.sample.refine._descend_torch` takes the refinement's clamped Adam steps with a
closed-form gradient of a few hundred small tensor operations per step; at 50-200 residues each
of those operations costs more in dispatch than in arithmetic, so a step of a 48-residue frame
takes about a millisecond whatever the arithmetic. :func:`descend` runs exactly the same steps
(the same energy terms, gradient and Adam update, documented in :mod:`starmd.sample.refine`) as
one compiled loop over residues, atoms and restraints, in float64. The torch version stays the
reference (and the path for frames on a GPU); the two agree to float32 rounding (tested in
``tests/sample/test_refine_kernel.py``).

The first call in a fresh environment compiles the loop (a few seconds; cached on disk by numba
afterwards, next to this module or in numba's user cache).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from starmd.structure.kernels import DEG, add_pair, bilinear, cross, dihedral_gradient

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-6


@njit(cache=True)
def _push(force, b, i0, a0, i1, a1, i2, a2, i3, a3, gradient, slope):
    """Add ``slope`` times a dihedral's gradient ``(4, 3)`` to the forces on its four atoms
    (residue, slot) of replica ``b``."""
    for c in range(3):
        force[b, i0, a0, c] += slope * gradient[0, c]
        force[b, i1, a1, c] += slope * gradient[1, c]
        force[b, i2, a2, c] += slope * gradient[2, c]
        force[b, i3, a3, c] += slope * gradient[3, c]


@njit(cache=True)
def _exp_map(wx, wy, wz, out):
    """Rotation matrix of a rotation vector (Rodrigues; series below 1e-4 rad)."""
    theta_sq = wx * wx + wy * wy + wz * wz
    if theta_sq < 1e-8:
        a = 1.0 - theta_sq / 6.0
        c = 0.5 - theta_sq / 24.0
    else:
        theta = math.sqrt(theta_sq)
        a = math.sin(theta) / theta
        c = (1.0 - math.cos(theta)) / theta_sq
    out[0, 0] = 1.0 - c * (wy * wy + wz * wz)
    out[1, 1] = 1.0 - c * (wx * wx + wz * wz)
    out[2, 2] = 1.0 - c * (wx * wx + wy * wy)
    out[0, 1] = c * wx * wy - a * wz
    out[1, 0] = c * wx * wy + a * wz
    out[0, 2] = c * wx * wz + a * wy
    out[2, 0] = c * wx * wz - a * wy
    out[1, 2] = c * wy * wz - a * wx
    out[2, 1] = c * wy * wz + a * wx


@njit(cache=True)
def _omega_excess(atoms, b, j, backbone, cis, omega_tol, grad):
    """Omega (radians) of junction ``j`` of replica ``b`` (its gradient into ``grad (4, 3)``)
    and how far (degrees) it lies beyond ``omega_tol`` of trans (of cis where ``cis``)."""
    n_slot, ca_slot, c_slot = backbone[0], backbone[1], backbone[2]
    omega = dihedral_gradient(
        atoms[b, j, ca_slot],
        atoms[b, j, c_slot],
        atoms[b, j + 1, n_slot],
        atoms[b, j + 1, ca_slot],
        grad,
    )
    degrees = abs(omega) * DEG
    off = degrees if cis[b, j] else 180.0 - degrees
    return omega, max(off - omega_tol, 0.0)


@njit(cache=True)
def _place_all(local, rots0, trans0, motion, rot_w, rots, trans, atoms):
    """Place every residue after its move ``motion (B, L, 6)``: ``R' = R exp(w)`` into
    ``rots``, ``t' = t + R s`` into ``trans (B, L, 3)`` and ``atoms = R' local + t'``;
    ``rot_w (3, 3)`` is scratch."""
    n_b, n_l, n_s = local.shape[0], local.shape[1], local.shape[2]
    for b in range(n_b):
        for i in range(n_l):
            _exp_map(motion[b, i, 3], motion[b, i, 4], motion[b, i, 5], rot_w)
            for r in range(3):
                for c in range(3):
                    rots[b, i, r, c] = (
                        rots0[b, i, r, 0] * rot_w[0, c]
                        + rots0[b, i, r, 1] * rot_w[1, c]
                        + rots0[b, i, r, 2] * rot_w[2, c]
                    )
            for r in range(3):
                trans[b, i, r] = trans0[b, i, r] + (
                    rots0[b, i, r, 0] * motion[b, i, 0]
                    + rots0[b, i, r, 1] * motion[b, i, 1]
                    + rots0[b, i, r, 2] * motion[b, i, 2]
                )
            for a in range(n_s):
                for r in range(3):
                    atoms[b, i, a, r] = trans[b, i, r] + (
                        rots[b, i, r, 0] * local[b, i, a, 0]
                        + rots[b, i, r, 1] * local[b, i, a, 1]
                        + rots[b, i, r, 2] * local[b, i, a, 2]
                    )


@njit(cache=True)
def place(local, rots0, trans0, motion):
    """Frames and atoms after the moves ``motion (B, L, 6)`` of :func:`descend` (float64):
    ``rots (B, L, 3, 3)``, ``trans (B, L, 3)``, ``atoms (B, L, S, 3)``."""
    n_b, n_l, n_s = local.shape[0], local.shape[1], local.shape[2]
    rots = np.empty((n_b, n_l, 3, 3))
    trans = np.empty((n_b, n_l, 3))
    atoms = np.empty((n_b, n_l, n_s, 3))
    _place_all(local, rots0, trans0, motion, np.empty((3, 3)), rots, trans, atoms)
    return rots, trans, atoms


@njit(cache=True)
def descend(
    local,
    rots0,
    trans0,
    first,
    second,
    low,
    high,
    sd,
    bonded,
    cis,
    rama_mask,
    grid,
    backbone,
    params,
    phi0,
    psi0,
    iterations,
    motion,
):
    """Clamped Adam steps on ``motion (B, L, 6)`` (in place, float64), the refinement's descent.

    ``local (B, L, S, 3)`` atoms in their residue's frame, ``rots0 (B, L, 3, 3)``, ``trans0 (B,
    L, 3)`` the predicted frames; distance restraints ``first``, ``second`` (flat atom indices
    into ``B * L * S``), ``low``, ``high``, ``sd``; per junction ``bonded (L-1,)`` (0/1) and
    ``cis (B, L-1)``; ``rama_mask (L,)`` (0/1); ``grid`` the Ramachandran signed-distance grid;
    ``backbone`` the atom slots (N, CA, C); ``params`` = step_a, step_rad, restraint_a,
    omega_tolerance_deg, omega_sd_deg, rama_weight, rama_sd_deg, rama_margin_deg, lever_a,
    rama_bin_deg, rama_origin_deg, dihedral_weight, dihedral_sd (radians); ``phi0``, ``psi0``
    ``(B, L)`` the predicted phi and psi that the dihedral restraint keeps.
    """
    n_b, n_l, n_s = local.shape[0], local.shape[1], local.shape[2]
    step_a, step_rad, restraint_a = params[0], params[1], params[2]
    omega_tol, omega_sd = params[3], params[4]
    rama_weight, rama_sd, rama_margin, lever = params[5], params[6], params[7], params[8]
    rama_bin, rama_origin = params[9], params[10]
    keep_unit = params[11] / (params[12] * params[12])
    measure = rama_weight > 0.0 or keep_unit > 0.0
    n_slot, ca_slot, c_slot = backbone[0], backbone[1], backbone[2]
    atoms = np.empty((n_b, n_l, n_s, 3))
    force = np.empty((n_b, n_l, n_s, 3))
    rots = np.empty((n_b, n_l, 3, 3))
    first_m = np.zeros((n_b, n_l, 6))
    second_m = np.zeros((n_b, n_l, 6))
    grad = np.empty(6)
    rot_w = np.empty((3, 3))
    weight = np.array([1.0, 1.0, 1.0, lever * lever, lever * lever, lever * lever])
    limit = np.array([step_a, step_a, step_a, step_rad, step_rad, step_rad])
    n_j = n_l - 1
    phi = np.zeros((n_b, n_l))
    psi = np.zeros((n_b, n_l))
    phi_grad = np.empty((n_b, n_l, 4, 3))  # phi of residue i (junction i - 1)
    psi_grad = np.empty((n_b, n_l, 4, 3))  # psi of residue i (junction i)
    omega_grad = np.empty((4, 3))
    trans = np.empty((n_b, n_l, 3))
    flat_atoms = atoms.reshape((n_b * n_l * n_s, 3))
    flat_force = force.reshape((n_b * n_l * n_s, 3))
    for k in range(iterations):
        _place_all(local, rots0, trans0, motion, rot_w, rots, trans, atoms)
        force[:] = 0.0
        # distance restraints: peptide junctions and watched overlaps
        for p in range(first.shape[0]):
            f, s = first[p], second[p]
            vx = flat_atoms[f, 0] - flat_atoms[s, 0]
            vy = flat_atoms[f, 1] - flat_atoms[s, 1]
            vz = flat_atoms[f, 2] - flat_atoms[s, 2]
            d = math.sqrt(vx * vx + vy * vy + vz * vz + 1e-12)
            below = max(low[p] - d, 0.0)
            above = max(d - high[p], 0.0)
            if below == 0.0 and above == 0.0:
                continue
            excess = (below + above) / sd[p]
            sign = (1.0 if above > 0.0 else 0.0) - (1.0 if below > 0.0 else 0.0)
            coef = 2.0 * excess / sd[p] * sign / d
            add_pair(flat_force, f, s, coef, vx, vy, vz)
        # omega beyond its tolerance of trans (or cis); phi and psi kept for the Ramachandran
        # term and the dihedral restraint
        for b in range(n_b):
            for j in range(n_j):
                omega, term = _omega_excess(atoms, b, j, backbone, cis, omega_tol, omega_grad)
                term = term / omega_sd * bonded[j]
                if term > 0.0:
                    slope = 2.0 * term / omega_sd * DEG * (1.0 if omega > 0 else -1.0)
                    if not cis[b, j]:
                        slope = -slope
                    _push(
                        force, b, j, ca_slot, j, c_slot, j + 1, n_slot, j + 1, ca_slot,
                        omega_grad, slope,
                    )  # fmt: skip
                if measure:
                    phi[b, j + 1] = dihedral_gradient(
                        atoms[b, j, c_slot],
                        atoms[b, j + 1, n_slot],
                        atoms[b, j + 1, ca_slot],
                        atoms[b, j + 1, c_slot],
                        phi_grad[b, j + 1],
                    )
                    psi[b, j] = dihedral_gradient(
                        atoms[b, j, n_slot],
                        atoms[b, j, ca_slot],
                        atoms[b, j, c_slot],
                        atoms[b, j + 1, n_slot],
                        psi_grad[b, j],
                    )
                if keep_unit > 0.0 and bonded[j] > 0.0:
                    # the restraint keeping the prediction's psi (of j) and phi (of j + 1)
                    slope = 2.0 * keep_unit * math.sin(phi[b, j + 1] - phi0[b, j + 1])
                    _push(
                        force, b, j, c_slot, j + 1, n_slot, j + 1, ca_slot, j + 1, c_slot,
                        phi_grad[b, j + 1], slope,
                    )  # fmt: skip
                    slope = 2.0 * keep_unit * math.sin(psi[b, j] - psi0[b, j])
                    _push(
                        force, b, j, n_slot, j, ca_slot, j, c_slot, j + 1, n_slot,
                        psi_grad[b, j], slope,
                    )  # fmt: skip
        # Ramachandran outliers (judged residues are bonded on both sides: 0 < i < L - 1)
        if rama_weight > 0.0:
            for b in range(n_b):
                for i in range(1, n_l - 1):
                    if rama_mask[i] == 0.0:
                        continue
                    value, d_phi, d_psi = bilinear(
                        grid, phi[b, i], psi[b, i], rama_bin, rama_origin
                    )
                    outside = max(value + rama_margin, 0.0) / rama_sd
                    if outside == 0.0:
                        continue
                    scale = 2.0 * rama_weight * outside / rama_sd
                    _push(
                        force, b, i - 1, c_slot, i, n_slot, i, ca_slot, i, c_slot,
                        phi_grad[b, i], scale * d_phi,
                    )  # fmt: skip
                    _push(
                        force, b, i, n_slot, i, ca_slot, i, c_slot, i + 1, n_slot,
                        psi_grad[b, i], scale * d_psi,
                    )  # fmt: skip
        # chain rule to the residue moves, then the clamped Adam step
        scale_k = math.sqrt(1.0 - _BETA2 ** (k + 1)) / (1.0 - _BETA1 ** (k + 1))
        decay = 1.0 - k / iterations
        for b in range(n_b):
            for i in range(n_l):
                for c in range(6):
                    grad[c] = 2.0 * motion[b, i, c] * weight[c] / (restraint_a * restraint_a)
                tx, ty, tz = 0.0, 0.0, 0.0
                sx, sy, sz = 0.0, 0.0, 0.0
                for a in range(n_s):
                    fx, fy, fz = force[b, i, a, 0], force[b, i, a, 1], force[b, i, a, 2]
                    if fx == 0.0 and fy == 0.0 and fz == 0.0:
                        continue
                    sx += fx
                    sy += fy
                    sz += fz
                    # R'^T f, then local x (R'^T f)
                    qx = rots[b, i, 0, 0] * fx + rots[b, i, 1, 0] * fy + rots[b, i, 2, 0] * fz
                    qy = rots[b, i, 0, 1] * fx + rots[b, i, 1, 1] * fy + rots[b, i, 2, 1] * fz
                    qz = rots[b, i, 0, 2] * fx + rots[b, i, 1, 2] * fy + rots[b, i, 2, 2] * fz
                    cx, cy, cz = cross(
                        local[b, i, a, 0], local[b, i, a, 1], local[b, i, a, 2], qx, qy, qz
                    )
                    tx += cx
                    ty += cy
                    tz += cz
                for c in range(3):
                    grad[c] += (
                        rots0[b, i, 0, c] * sx + rots0[b, i, 1, c] * sy + rots0[b, i, 2, c] * sz
                    )
                # J_r(w)^T torque = torque + a w x torque + b w x (w x torque)
                wx, wy, wz = motion[b, i, 3], motion[b, i, 4], motion[b, i, 5]
                theta_sq = wx * wx + wy * wy + wz * wz
                if theta_sq < 1e-6:
                    ja = 0.5 - theta_sq / 24.0
                    jb = 1.0 / 6.0 - theta_sq / 120.0
                else:
                    theta = math.sqrt(theta_sq)
                    ja = (1.0 - math.cos(theta)) / theta_sq
                    jb = (theta - math.sin(theta)) / (theta_sq * theta)
                c1x, c1y, c1z = cross(wx, wy, wz, tx, ty, tz)
                c2x, c2y, c2z = cross(wx, wy, wz, c1x, c1y, c1z)
                grad[3] += tx + ja * c1x + jb * c2x
                grad[4] += ty + ja * c1y + jb * c2y
                grad[5] += tz + ja * c1z + jb * c2z
                for c in range(6):
                    m = _BETA1 * first_m[b, i, c] + (1.0 - _BETA1) * grad[c]
                    v = _BETA2 * second_m[b, i, c] + (1.0 - _BETA2) * grad[c] * grad[c]
                    first_m[b, i, c] = m
                    second_m[b, i, c] = v
                    step = min(limit[c] * scale_k * abs(m) / (math.sqrt(v) + _EPS), limit[c])
                    if m > 0.0:
                        motion[b, i, c] -= decay * step
                    elif m < 0.0:
                        motion[b, i, c] += decay * step


@njit(cache=True)
def violation(atoms, first, second, low, high, sd, bonded, cis, rama_mask, grid, backbone, params):
    """The refinement's violation energy per replica ``(B,)`` of atoms ``(B, L, S, 3)``
    (float64): :meth:`starmd.sample.refine._Energy.violation` (distance restraints, omega,
    Ramachandran), with the arguments of :func:`descend`."""
    n_b, n_l, n_s = atoms.shape[0], atoms.shape[1], atoms.shape[2]
    omega_tol, omega_sd = params[3], params[4]
    rama_weight, rama_sd, rama_margin = params[5], params[6], params[7]
    rama_bin, rama_origin = params[9], params[10]
    n_slot, ca_slot, c_slot = backbone[0], backbone[1], backbone[2]
    total = np.zeros(n_b)
    flat = atoms.reshape((n_b * n_l * n_s, 3))
    for p in range(first.shape[0]):
        f, s = first[p], second[p]
        vx, vy, vz = flat[f, 0] - flat[s, 0], flat[f, 1] - flat[s, 1], flat[f, 2] - flat[s, 2]
        d = math.sqrt(vx * vx + vy * vy + vz * vz + 1e-12)
        excess = (max(low[p] - d, 0.0) + max(d - high[p], 0.0)) / sd[p]
        total[f // (n_l * n_s)] += excess * excess
    scratch = np.empty((4, 3))
    for b in range(n_b):
        for j in range(n_l - 1):
            if bonded[j] == 0.0:
                continue
            _, term = _omega_excess(atoms, b, j, backbone, cis, omega_tol, scratch)
            term = term / omega_sd
            total[b] += term * term
        if rama_weight <= 0.0:
            continue
        for i in range(1, n_l - 1):
            if rama_mask[i] == 0.0:
                continue
            phi = dihedral_gradient(
                atoms[b, i - 1, c_slot],
                atoms[b, i, n_slot],
                atoms[b, i, ca_slot],
                atoms[b, i, c_slot],
                scratch,
            )
            psi = dihedral_gradient(
                atoms[b, i, n_slot],
                atoms[b, i, ca_slot],
                atoms[b, i, c_slot],
                atoms[b, i + 1, n_slot],
                scratch,
            )
            value, _, _ = bilinear(grid, phi, psi, rama_bin, rama_origin)
            outside = max(value + rama_margin, 0.0) / rama_sd
            total[b] += rama_weight * outside * outside
    return total


@njit(cache=True)
def checks(atoms, linked_prev, rama_mask, clash_first, clash_second, clash_limit, allowed, limits):
    """The per-frame checks of :func:`starmd.sample.refine.frame_checks` for atoms ``(B, L, S,
    3)`` (float64): returns ``(B, 7)`` int64 columns nan (any non-finite C-alpha), CA breaks,
    CA clashes, heavy-atom clashes among the watched pairs (flat indices, closer than
    ``clash_limit``), peptide breaks, peptide bonds outside their range, Ramachandran outliers
    (``allowed`` the grid ``[psi_bin, phi_bin]`` of
    :func:`starmd.structure.ramachandran.allowed_grid`). ``limits`` = CA clash, CA
    break, peptide low, peptide high, peptide break (Angstrom), Ramachandran bin (degrees);
    ``linked_prev (L,)`` 0/1 (residue bonded to the one before), ``rama_mask (L,)`` 0/1."""
    n_b, n_l, n_s = atoms.shape[0], atoms.shape[1], atoms.shape[2]
    ca_clash, ca_break, low, high, pep_break, rama_bin = (
        limits[0], limits[1], limits[2], limits[3], limits[4], limits[5]
    )  # fmt: skip
    n_bins = allowed.shape[0]
    out = np.zeros((n_b, 7), np.int64)
    ca = np.zeros((n_l, 3))
    finite = np.zeros(n_l, np.bool_)
    scratch = np.empty((4, 3))
    for b in range(n_b):
        # C-alpha health (structure.checks.ca_health): non-finite positions count as the origin
        for i in range(n_l):
            x, y, z = atoms[b, i, 1, 0], atoms[b, i, 1, 1], atoms[b, i, 1, 2]
            finite[i] = math.isfinite(x) and math.isfinite(y) and math.isfinite(z)
            if finite[i]:
                ca[i, 0], ca[i, 1], ca[i, 2] = x, y, z
            else:
                ca[i, 0], ca[i, 1], ca[i, 2] = 0.0, 0.0, 0.0
                out[b, 0] = 1
        for i in range(1, n_l):
            dx, dy, dz = ca[i, 0] - ca[i - 1, 0], ca[i, 1] - ca[i - 1, 1], ca[i, 2] - ca[i - 1, 2]
            if linked_prev[i] != 0 and math.sqrt(dx * dx + dy * dy + dz * dz) > ca_break:
                out[b, 1] += 1
        for i in range(n_l):
            for j in range(i + 2, n_l):
                if not (finite[i] and finite[j]):
                    continue
                dx, dy, dz = ca[i, 0] - ca[j, 0], ca[i, 1] - ca[j, 1], ca[i, 2] - ca[j, 2]
                if math.sqrt(dx * dx + dy * dy + dz * dz) < ca_clash:
                    out[b, 2] += 1
        # peptide bonds C(i)-N(i+1) and Ramachandran outliers
        for i in range(1, n_l):
            if linked_prev[i] == 0:
                continue
            dx = atoms[b, i - 1, 2, 0] - atoms[b, i, 0, 0]
            dy = atoms[b, i - 1, 2, 1] - atoms[b, i, 0, 1]
            dz = atoms[b, i - 1, 2, 2] - atoms[b, i, 0, 2]
            d = math.sqrt(dx * dx + dy * dy + dz * dz)
            if d < low or d > high:
                out[b, 5] += 1
            if d > pep_break:
                out[b, 4] = 1
        for i in range(1, n_l - 1):
            if rama_mask[i] == 0:
                continue
            phi = dihedral_gradient(
                atoms[b, i - 1, 2], atoms[b, i, 0], atoms[b, i, 1], atoms[b, i, 2], scratch
            )
            psi = dihedral_gradient(
                atoms[b, i, 0], atoms[b, i, 1], atoms[b, i, 2], atoms[b, i + 1, 0], scratch
            )
            phi = 0.0 if math.isnan(phi) else phi
            psi = 0.0 if math.isnan(psi) else psi
            col = int(math.floor((phi * DEG + 180.0) / rama_bin)) % n_bins
            row = int(math.floor((psi * DEG + 180.0) / rama_bin)) % n_bins
            if allowed[row, col] == 0:
                out[b, 6] += 1
    flat = atoms.reshape((n_b * n_l * n_s, 3))
    for p in range(clash_first.shape[0]):
        f, s = clash_first[p], clash_second[p]
        vx, vy, vz = flat[f, 0] - flat[s, 0], flat[f, 1] - flat[s, 1], flat[f, 2] - flat[s, 2]
        if math.sqrt(vx * vx + vy * vy + vz * vz) < clash_limit[p]:
            out[f // (n_l * n_s), 3] += 1
    return out


@njit(cache=True)
def backbone_torsions(atoms, torsions, bonded, backbone):
    """Write omega and phi of residue ``j + 1`` and psi of residue ``j`` measured on ``atoms
    (B, L, S, 3)`` into ``torsions (B, L, 7)`` (in place, float64) at every peptide junction
    ``j`` with ``bonded[j]`` (the others keep their values); ``backbone`` the N, CA, C slots."""
    n_slot, ca_slot, c_slot = backbone[0], backbone[1], backbone[2]
    scratch = np.empty((4, 3))
    for b in range(atoms.shape[0]):
        for j in range(atoms.shape[1] - 1):
            if not bonded[j]:
                continue
            x, y = atoms[b, j], atoms[b, j + 1]
            torsions[b, j + 1, 0] = dihedral_gradient(
                x[ca_slot], x[c_slot], y[n_slot], y[ca_slot], scratch
            )
            torsions[b, j + 1, 1] = dihedral_gradient(
                x[c_slot], y[n_slot], y[ca_slot], y[c_slot], scratch
            )
            torsions[b, j, 2] = dihedral_gradient(
                x[n_slot], x[ca_slot], x[c_slot], y[n_slot], scratch
            )
