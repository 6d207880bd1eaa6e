"""The heavy-atom rebuild (:func:`starmd.structure.geometry.frames_to_atoms`) as one compiled
loop (numba), for generation on the CPU.

:func:`~starmd.structure.geometry.frames_to_atoms` places each rigid group of every residue
with a handful of tensor operations (gathers, Gram-Schmidt frames, masked writes): about a
hundred operations per call, which at 50-200 residues cost more in dispatch than in arithmetic
(about 5-10 ms per call on one thread). :func:`rebuild_atoms` runs the same construction, with
the same formulas and order (backbone group from the residue frame, the psi group and OXT,
then chi 1-4 along the side chain, then the proline ring closure), as one loop over residues in
float64. It has no gradient: training and GPU frames keep the torch version, which stays the
reference (the two agree to float64 rounding; ``tests/structure/test_atoms_kernel.py``).
:func:`heavy_atoms` picks between them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from starmd.structure import geometry
from starmd.structure import residue_constants as rc
from starmd.structure.rigid import Rigid

_FRAME_EPS = 1e-8  # as Rigid.from_3_points
_N, _CA, _C = geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT
_PSI_GROUP, _OXT_GROUP = geometry.PSI_GROUP, geometry.OXT_GROUP
_PRO_N_CD_A, _PRO_CG_CD_A = geometry.PRO_N_CD_A, geometry.PRO_CG_CD_A


@njit(cache=True)
def _bond_frame(a, b, c, angle, rot):
    """Into ``rot (3, 3)``: the rotation of :func:`geometry.torsion_frame` (x along b->c, ``a``
    in the xy-plane at angle 0, then rotated by ``angle`` about x); its origin is ``c``."""
    e0x, e0y, e0z = c[0] - b[0], c[1] - b[1], c[2] - b[2]
    norm = math.sqrt(e0x * e0x + e0y * e0y + e0z * e0z) + _FRAME_EPS
    e0x, e0y, e0z = e0x / norm, e0y / norm, e0z / norm
    vx, vy, vz = a[0] - c[0], a[1] - c[1], a[2] - c[2]
    dot = e0x * vx + e0y * vy + e0z * vz
    e1x, e1y, e1z = vx - dot * e0x, vy - dot * e0y, vz - dot * e0z
    norm = math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z) + _FRAME_EPS
    e1x, e1y, e1z = e1x / norm, e1y / norm, e1z / norm
    e2x = e0y * e1z - e0z * e1y
    e2y = e0z * e1x - e0x * e1z
    e2z = e0x * e1y - e0y * e1x
    cos, sin = math.cos(angle), math.sin(angle)
    rot[0, 0], rot[1, 0], rot[2, 0] = e0x, e0y, e0z
    rot[0, 1], rot[0, 2] = cos * e1x + sin * e2x, cos * e2x - sin * e1x
    rot[1, 1], rot[1, 2] = cos * e1y + sin * e2y, cos * e2y - sin * e1y
    rot[2, 1], rot[2, 2] = cos * e1z + sin * e2z, cos * e2z - sin * e1z


@njit(cache=True)
def _place(out, local, group, g, rot, origin):
    """``out[a] = rot @ local[a] + origin`` for the atoms ``a`` of group ``g``."""
    for a in range(local.shape[0]):
        if group[a] != g:
            continue
        for r in range(3):
            out[a, r] = origin[r] + (
                rot[r, 0] * local[a, 0] + rot[r, 1] * local[a, 1] + rot[r, 2] * local[a, 2]
            )


@njit(cache=True)
def build_atoms(rots, trans, torsions, local, group, chi_slots, oxt, proline, pro_slots, out):
    """Heavy atoms into ``out (N, L, S, 3)`` (zeros on entry) from frames ``rots (N, L, 3, 3)``,
    ``trans (N, L, 3)`` and ``torsions (N, L, 7)``; per residue its type's ``local (L, S, 3)``
    positions in their group's frame, ``group (L, S)`` (-1 for absent atoms), ``chi_slots (L,
    4, 4)``, ``oxt (L,)`` and ``proline (L,)``; ``pro_slots`` the slots of a proline's N, CG,
    CD."""
    n_f, n_l = rots.shape[0], rots.shape[1]
    rot = np.empty((3, 3))
    for f in range(n_f):
        for i in range(n_l):
            res = out[f, i]
            _place(res, local[i], group[i], 0, rots[f, i], trans[f, i])
    place_psi(out, torsions[:, :, 2].copy(), local, group, oxt)
    for f in range(n_f):
        for i in range(n_l):
            res = out[f, i]
            for k in range(4):
                g = 4 + k
                present = False
                for a in range(group.shape[1]):
                    if group[i, a] == g:
                        present = True
                        break
                if not present:
                    continue
                s = chi_slots[i, k]
                _bond_frame(res[s[0]], res[s[1]], res[s[2]], torsions[f, i, 3 + k], rot)
                _place(res, local[i], group[i], g, rot, res[s[2]].copy())
            if proline[i]:
                _close_ring(res, pro_slots[0], pro_slots[1], pro_slots[2])


@njit(cache=True)
def place_psi(atoms, psi, local, group, oxt):
    """Into ``atoms (N, L, S, 3)`` (in place): the atoms that ``psi (N, L)`` places (O, and OXT
    where ``oxt``), from each residue's N, CA, C, as :func:`build_atoms` places them."""
    rot = np.empty((3, 3))
    for f in range(atoms.shape[0]):
        for i in range(atoms.shape[1]):
            res = atoms[f, i]
            _bond_frame(res[_N], res[_CA], res[_C], psi[f, i] + math.pi, rot)
            _place(res, local[i], group[i], _PSI_GROUP, rot, res[_C].copy())
            if oxt[i]:
                _bond_frame(res[_N], res[_CA], res[_C], psi[f, i], rot)
                _place(res, local[i], group[i], _OXT_GROUP, rot, res[_C].copy())


@njit(cache=True)
def _close_ring(res, n_slot, cg_slot, cd_slot):
    """:func:`geometry._close_proline_ring` for one residue's atoms ``res (S, 3)``."""
    a_len, b_len = _PRO_N_CD_A, _PRO_CG_CD_A
    nx, ny, nz = res[n_slot, 0], res[n_slot, 1], res[n_slot, 2]
    ax, ay, az = res[cg_slot, 0] - nx, res[cg_slot, 1] - ny, res[cg_slot, 2] - nz
    d = max(math.sqrt(ax * ax + ay * ay + az * az), 1e-6)
    ex, ey, ez = ax / d, ay / d, az / d
    along = (d * d + a_len * a_len - b_len * b_len) / (2 * d)
    radius = math.sqrt(max(a_len * a_len - along * along, 0.0))
    if not d < a_len + b_len:
        along = d * a_len / (a_len + b_len)
    wx, wy, wz = res[cd_slot, 0] - nx, res[cd_slot, 1] - ny, res[cd_slot, 2] - nz
    dot = wx * ex + wy * ey + wz * ez
    wx, wy, wz = wx - dot * ex, wy - dot * ey, wz - dot * ez
    norm = max(math.sqrt(wx * wx + wy * wy + wz * wz), 1e-9)
    res[cd_slot, 0] = nx + along * ex + radius * wx / norm
    res[cd_slot, 1] = ny + along * ey + radius * wy / norm
    res[cd_slot, 2] = nz + along * ez + radius * wz / norm


_PRO_SLOTS = np.array([rc.ATOM14_NAMES["PRO"].index(a) for a in ("N", "CG", "CD")], np.int64)


def _compiled(aatype: torch.Tensor, *tensors: torch.Tensor) -> bool:
    """Whether the compiled loops serve: tensors on the CPU that need no gradient, and one
    residue type per residue (``aatype (L,)``)."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return aatype.dim() == 1 and not grad and all(t.device.type == "cpu" for t in tensors)


def _residue_tables(aatype: torch.Tensor, oxt_mask: torch.Tensor | None) -> dict[str, np.ndarray]:
    """Per residue of ``aatype (L,)``: its type's rows of :func:`geometry._tables_np` (local
    positions, groups, chi slots), whether it carries OXT and whether it is a proline."""
    tables = geometry._tables_np()
    types = aatype.numpy()
    rows = {k: np.ascontiguousarray(tables[k][types]) for k in ("local", "group", "chi_slots")}
    rows["oxt"] = (
        np.zeros(len(types), np.bool_) if oxt_mask is None else oxt_mask.numpy().astype(np.bool_)
    )
    rows["proline"] = types == geometry.PROLINE
    return rows


def _float64(x: torch.Tensor, batch: tuple[int, ...], trailing: tuple[int, ...]) -> np.ndarray:
    """``x`` broadcast to ``(*batch, *trailing)`` (``batch`` ending with the residues), as a
    contiguous float64 array ``(N, L, *trailing)``."""
    full = np.broadcast_to(x.detach().numpy(), (*batch, *trailing))
    return np.ascontiguousarray(full, np.float64).reshape(-1, batch[-1], *trailing)


def rebuild_atoms(
    frames: Rigid,
    torsions: torch.Tensor,
    aatype: torch.Tensor,
    oxt_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`geometry.frames_to_atoms` of CPU frames ``(..., L)`` and torsions ``(..., L,
    7)`` with ``aatype (L,)``, computed in float64 by :func:`build_atoms` and returned in the
    frames' dtype; no gradient."""
    rows = _residue_tables(aatype, oxt_mask)
    batch = np.broadcast_shapes(tuple(frames.shape), tuple(torsions.shape[:-1]))
    rots = _float64(frames.rots, batch, (3, 3))
    out = np.zeros((rots.shape[0], batch[-1], rc.ATOMS_PER_RESIDUE, 3))
    build_atoms(
        rots,
        _float64(frames.trans, batch, (3,)),
        _float64(torsions, batch, (7,)),
        rows["local"],
        rows["group"],
        rows["chi_slots"],
        rows["oxt"],
        rows["proline"],
        _PRO_SLOTS,
        out,
    )
    return torch.from_numpy(out.reshape(*batch, rc.ATOMS_PER_RESIDUE, 3)).to(frames.dtype)


def heavy_atoms(
    frames: Rigid,
    torsions: torch.Tensor,
    aatype: torch.Tensor,
    oxt_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`geometry.frames_to_atoms` for generation: the compiled :func:`rebuild_atoms` for
    CPU frames without gradient and a one-dimensional ``aatype``, the torch version otherwise."""
    if _compiled(aatype, frames.rots, frames.trans, torsions):
        return rebuild_atoms(frames, torsions, aatype, oxt_mask)
    return geometry.frames_to_atoms(frames, torsions, aatype, oxt_mask)


def psi_atoms(
    positions: torch.Tensor,
    psi: torch.Tensor,
    aatype: torch.Tensor,
    oxt_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`geometry.place_psi_atoms` for generation: by :func:`place_psi` (float64, returned
    in the positions' dtype) for CPU positions ``(..., L, 15, 3)`` without gradient and a
    one-dimensional ``aatype``, the torch version otherwise."""
    if not _compiled(aatype, positions, psi):
        return geometry.place_psi_atoms(positions, psi, aatype, oxt_mask)
    rows = _residue_tables(aatype, oxt_mask)
    batch = tuple(positions.shape[:-2])
    # a copy: written in place, and float64 input would otherwise share the caller's memory
    atoms = _float64(positions, batch, tuple(positions.shape[-2:])).copy()
    place_psi(atoms, _float64(psi, batch, ()), rows["local"], rows["group"], rows["oxt"])
    return torch.from_numpy(atoms.reshape(positions.shape)).to(positions.dtype)
