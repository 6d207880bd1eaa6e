"""Heavy atoms <-> residue frames + torsions.

One implementation in torch, used for data preparation (float64 on CPU) and inside the model
(any dtype/device). Coordinates are Angstrom, angles radians in (-pi, pi].

Atom layout: ``(..., L, 15, 3)`` in the atom15 order of :mod:`starmd.structure.residue_constants`.
Torsions: ``(..., L, 7)`` = (omega, phi, psi, chi1..chi4) with a mask ``(L, 7)``:

- ``omega_i`` = dihedral(CA_{i-1}, C_{i-1}, N_i, CA_i) and ``phi_i`` = dihedral(C_{i-1}, N_i,
  CA_i, C_i), defined where residue i is peptide-bonded to i-1 (``linked_prev``).
- ``psi_i`` = dihedral(N_i, CA_i, C_i, N_{i+1}) where i is bonded to i+1. At a chain end it is
  the torsion of the terminal OXT (which takes the place of N_{i+1}), or dihedral(N, CA, C, O)
  - pi when there is no OXT. psi is therefore always defined and places O at psi + pi.
- ``chi_k`` by the IUPAC atom quadruples of :data:`CHI_ATOMS`.

Rebuilding places N, CA, C, CB from the residue frame with idealized geometry, O (and OXT) by
rotating the psi group about CA->C, and side chains group by group along the chi chain. Only the
idealized bond lengths and angles differ from the input (see the round-trip tests). One
exception to the chi chain: a proline's CD, placed by chi2 alone, would leave its ring open (the
corpus MD's own frames taken through the representation gave N-CD 1.57 +- 0.10 A, up to 1.85 A,
for MD's 1.46 +- 0.03 A), so it is moved to the nearest point that closes the ring
(:func:`_close_proline_ring`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from starmd.structure import residue_constants as rc
from starmd.structure.rigid import Rigid

N_SLOT, CA_SLOT, C_SLOT, O_SLOT = 0, 1, 2, 3
PSI_GROUP = 3
OXT_GROUP = 8  # pseudo-group: the psi frame rotated to the terminal torsion
PROLINE = rc.RESTYPE_3.index("PRO")
PRO_N_CD_A = 1.473
"""A proline's ring bond N-CD, Angstrom (Engh & Huber 1991; the corpus MD: 1.461 +- 0.030)."""
PRO_CG_CD_A = 1.503
"""A proline's CG-CD, Angstrom (the idealized placement's own length)."""
_PRO_SLOTS = {name: rc.ATOM14_NAMES["PRO"].index(name) for name in ("N", "CG", "CD")}


@functools.cache
def _tables_np() -> dict[str, np.ndarray]:
    """Per-residue-type lookup tables (index 20 = unknown: all empty)."""
    n_types = len(rc.RESTYPE_3) + 1
    local = np.zeros((n_types, rc.ATOMS_PER_RESIDUE, 3))
    group = np.full((n_types, rc.ATOMS_PER_RESIDUE), -1, dtype=np.int64)
    chi_slots = np.zeros((n_types, 4, 4), dtype=np.int64)
    chi_exists = np.zeros((n_types, 4), dtype=bool)
    chi_pi = np.zeros((n_types, 4), dtype=bool)
    for t, name in enumerate(rc.RESTYPE_3):
        slots = {atom: i for i, atom in enumerate(rc.ATOM14_NAMES[name])}
        for atom, g, pos in rc.RIGID_GROUP_ATOMS[name]:
            local[t, slots[atom]] = pos
            group[t, slots[atom]] = g
        local[t, rc.OXT_SLOT] = rc.OXT_LOCAL_POSITION
        group[t, rc.OXT_SLOT] = OXT_GROUP
        for k, quad in enumerate(rc.CHI_ATOMS[name]):
            chi_slots[t, k] = [slots[a] for a in quad]
            chi_exists[t, k] = True
        for k in rc.CHI_PI_PERIODIC.get(name, ()):
            chi_pi[t, k] = True
    return {
        "local": local,
        "group": group,
        "chi_slots": chi_slots,
        "chi_exists": chi_exists,
        "chi_pi": chi_pi,
    }


def _table(name: str, device: torch.device | None = None, dtype: torch.dtype | None = None):
    arr = torch.from_numpy(_tables_np()[name])
    if dtype is not None and arr.is_floating_point():
        arr = arr.to(dtype)
    return arr.to(device) if device is not None else arr


def residue_local_positions(aatype: torch.Tensor) -> torch.Tensor:
    """``(..., 15, 3)`` float64: each atom's literature position in its rigid group's frame
    (N, CA, C and CB in the backbone frame; zero for slots a residue type lacks)."""
    return _table("local", aatype.device)[aatype]


def residue_atom_mask(aatype: torch.Tensor) -> torch.Tensor:
    """Atoms that a residue type has (without OXT): ``(L,) -> (L, 15)`` bool."""
    group = _table("group", aatype.device)[aatype]
    exists = group >= 0
    exists[..., rc.OXT_SLOT] = False
    return exists


def chi_pi_periodic(aatype: torch.Tensor) -> torch.Tensor:
    """``(L,) -> (L, 7)`` bool: torsions that are pi-periodic (symmetric side-chain atoms)."""
    pi = _table("chi_pi", aatype.device)[aatype]
    return torch.cat([torch.zeros_like(pi[..., :3]), pi], dim=-1)


def dihedral(
    p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor
) -> torch.Tensor:
    """IUPAC dihedral angle of four points ``(..., 3)`` in (-pi, pi] (same sign as mdtraj)."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b0, b1, dim=-1)
    n2 = torch.linalg.cross(b1, b2, dim=-1)
    b1_norm = torch.linalg.vector_norm(b1, dim=-1)
    y = b1_norm * (b0 * n2).sum(-1)
    x = (n1 * n2).sum(-1)
    return torch.atan2(y, x)


def dihedral_gradient(
    p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`dihedral` of four points ``(..., 3)`` and its gradient with respect to each point
    (radians per length unit), by the closed form of Blondel and Karplus (1996), which has no
    singularity at 0 or pi. Undefined (division by zero) when three points are collinear."""
    f, g, h = p0 - p1, p1 - p2, p3 - p2
    a = torch.linalg.cross(f, g, dim=-1)
    b = torch.linalg.cross(h, g, dim=-1)
    g_norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    a2 = (a * a).sum(-1, keepdim=True)
    b2 = (b * b).sum(-1, keepdim=True)
    fg = (f * g).sum(-1, keepdim=True) / (a2 * g_norm)
    hg = (h * g).sum(-1, keepdim=True) / (b2 * g_norm)
    d0 = -g_norm / a2 * a
    d3 = g_norm / b2 * b
    d1 = g_norm / a2 * a + fg * a - hg * b
    d2 = hg * b - fg * a - g_norm / b2 * b
    return dihedral(p0, p1, p2, p3), (d0, d1, d2, d3)


def _gather_slots(positions: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``positions (..., L, 15, 3)``, ``slots (..., L, k)`` (broadcast) -> ``(..., L, k, 3)``."""
    index = slots.expand(*positions.shape[:-2], slots.shape[-1])[..., None]
    return torch.take_along_dim(positions, index.expand(*index.shape[:-1], 3), dim=-2)


def _shift(x: torch.Tensor, offset: int, dim: int) -> torch.Tensor:
    """``out[i] = x[i - offset]`` along ``dim`` with wrap-around (callers mask the wrapped end)."""
    return torch.roll(x, shifts=offset, dims=dim)


def atoms_to_frames(positions: torch.Tensor) -> Rigid:
    """Residue frames from N, CA, C: ``(..., L, 15, 3) -> Rigid (..., L)``."""
    return Rigid.from_3_points(
        positions[..., N_SLOT, :], positions[..., CA_SLOT, :], positions[..., C_SLOT, :]
    )


def torsion_mask(
    aatype: torch.Tensor, atom_mask: torch.Tensor, linked_prev: torch.Tensor
) -> torch.Tensor:
    """Which torsions are defined: ``(L, 7)`` bool.

    Args:
        aatype: ``(L,)`` residue types.
        atom_mask: ``(L, 15)`` atoms present in the structure.
        linked_prev: ``(L,)`` residue i is peptide-bonded to residue i-1.
    """
    chi_exists = _table("chi_exists", aatype.device)[aatype]
    chi_slots = _table("chi_slots", aatype.device)[aatype]
    chi_atoms_present = torch.take_along_dim(
        atom_mask[..., None, :].expand(*chi_slots.shape[:-1], atom_mask.shape[-1]),
        chi_slots,
        dim=-1,
    ).all(-1)
    backbone = torch.stack([linked_prev, linked_prev, torch.ones_like(linked_prev)], dim=-1)
    return torch.cat([backbone, chi_exists & chi_atoms_present], dim=-1)


def atoms_to_torsions(
    positions: torch.Tensor,
    aatype: torch.Tensor,
    atom_mask: torch.Tensor,
    linked_prev: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 7 torsions of every residue (definitions in the module docstring).

    Args:
        positions: ``(..., L, 15, 3)`` heavy atoms, Angstrom.
        aatype: ``(L,)``.
        atom_mask: ``(L, 15)`` bool, atoms present.
        linked_prev: ``(L,)`` bool, residue i is peptide-bonded to i-1.

    Returns:
        torsions ``(..., L, 7)`` in (-pi, pi] (0 where undefined) and mask ``(L, 7)``.
    """
    res_dim = positions.dim() - 3
    n, ca, c, o = (positions[..., s, :] for s in (N_SLOT, CA_SLOT, C_SLOT, O_SLOT))
    prev_ca, prev_c = _shift(ca, 1, res_dim), _shift(c, 1, res_dim)
    next_n = _shift(n, -1, res_dim)
    linked_next = _shift(linked_prev, -1, 0).clone()
    linked_next[-1] = False

    omega = dihedral(prev_ca, prev_c, n, ca)
    phi = dihedral(prev_c, n, ca, c)
    psi_bonded = dihedral(n, ca, c, next_n)
    psi_oxt = dihedral(n, ca, c, positions[..., rc.OXT_SLOT, :])
    psi_from_o = wrap_angle(dihedral(n, ca, c, o) - math.pi)
    has_oxt = atom_mask[..., rc.OXT_SLOT]
    psi = torch.where(linked_next, psi_bonded, torch.where(has_oxt, psi_oxt, psi_from_o))

    chi_slots = _table("chi_slots", aatype.device)[aatype]  # (L, 4, 4)
    quads = _gather_slots(positions, chi_slots.reshape(*chi_slots.shape[:-2], 16))
    quads = quads.reshape(*positions.shape[:-2], 4, 4, 3)
    chi = dihedral(*quads.unbind(-2))

    torsions = torch.cat([torch.stack([omega, phi, psi], dim=-1), chi], dim=-1)
    mask = torsion_mask(aatype, atom_mask, linked_prev)
    return torch.where(mask, torsions, torch.zeros_like(torsions)), mask


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Angles (radians) wrapped to ``[-pi, pi)``: the one angle wrapping of starmd (torsions,
    the torus diffusion)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def _rotation_about_x(angle: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cos, -sin], -1),
            torch.stack([zero, sin, cos], -1),
        ],
        dim=-2,
    )


def torsion_frame(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, angle: torch.Tensor) -> Rigid:
    """Frame of the rigid group rotated by torsion ``angle`` about the bond b->c.

    Origin at ``c``, x along b->c; at angle 0 the y-axis points towards ``a`` (cis). A point at
    local (x, y > 0, 0) then has dihedral(a, b, c, point) == angle.
    """
    base = Rigid.from_3_points(a, c, c + (c - b))
    return Rigid(base.rots @ _rotation_about_x(angle), base.trans)


def frames_to_atoms(
    frames: Rigid,
    torsions: torch.Tensor,
    aatype: torch.Tensor,
    oxt_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rebuild all heavy atoms from residue frames and torsions with idealized geometry.

    Args:
        frames: ``Rigid (..., L)`` residue frames (Angstrom).
        torsions: ``(..., L, 7)`` radians (omega and phi are not needed for heavy atoms).
        aatype: ``(L,)``, or any shape broadcasting against the frames' batch, e.g. ``(B, 1, L)``.
        oxt_mask: residues that carry a terminal OXT, shaped like ``aatype`` (default: none).

    Returns:
        ``(..., L, 15, 3)`` positions; slots a residue type lacks (and OXT where ``oxt_mask`` is
        false) are zero. Combine with :func:`residue_atom_mask` for the mask.
    """
    dtype, device = frames.dtype, frames.device
    batch = np.broadcast_shapes(frames.shape, torsions.shape[:-1])  # torch's imports sympy
    frames = Rigid(frames.rots.expand(*batch, 3, 3), frames.trans.expand(*batch, 3))
    local = _table("local", device, dtype)[aatype]  # (L, 15, 3)
    group = _table("group", device)[aatype]  # (L, 15)
    chi_slots = _table("chi_slots", device)[aatype]  # (L, 4, 4)

    def place(positions: torch.Tensor, frame: Rigid, group_id: int) -> torch.Tensor:
        placed = frame.unsqueeze(-1).apply(local)
        return torch.where((group == group_id)[..., None], placed, positions)

    positions = torch.zeros(*frames.shape, rc.ATOMS_PER_RESIDUE, 3, dtype=dtype, device=device)
    positions = place(positions, frames, 0)
    positions = place_psi_atoms(positions, torsions[..., 2], aatype, oxt_mask)
    for k in range(4):
        abc = _gather_slots(positions, chi_slots[..., k, :3])
        frame = torsion_frame(abc[..., 0, :], abc[..., 1, :], abc[..., 2, :], torsions[..., 3 + k])
        positions = place(positions, frame, 4 + k)
    return _close_proline_ring(positions, aatype)


def junction_dihedrals(frames: Rigid, aatype: torch.Tensor) -> torch.Tensor:
    """Backbone dihedrals across each junction ``i|i+1`` of residue frames ``Rigid (..., L)``:
    ``(..., L-1, 2)`` radians, ``psi(i)`` = N-CA-C(i)-N(i+1) and ``phi(i+1)`` = C(i)-N-CA-C(i+1),
    from the idealised N, CA, C each frame places (torsions play no part); whether a junction is
    a peptide bond is the caller's mask (:func:`starmd.structure.local_geometry.peptide_bonds`).
    """
    local = _table("local", frames.device, frames.dtype)[aatype][..., :3, :]  # (L, 3, 3)
    n, ca, c = frames.unsqueeze(-1).apply(local).unbind(-2)
    psi = dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :])
    phi = dihedral(c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :], c[..., 1:, :])
    return torch.stack([psi, phi], dim=-1)


def place_psi_atoms(
    positions: torch.Tensor,
    psi: torch.Tensor,
    aatype: torch.Tensor,
    oxt_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``positions (..., L, 15, 3)`` with the atoms that psi places (the carbonyl O, and OXT
    where ``oxt_mask``) rebuilt from their residue's N, CA, C and ``psi (..., L)`` radians, as
    :func:`frames_to_atoms` places them; every other atom as given."""
    dtype, device = positions.dtype, positions.device
    local = _table("local", device, dtype)[aatype]  # (L, 15, 3)
    group = _table("group", device)[aatype]  # (L, 15)
    n, ca, c = (positions[..., s, :] for s in (N_SLOT, CA_SLOT, C_SLOT))
    placed = torsion_frame(n, ca, c, psi + math.pi).unsqueeze(-1).apply(local)
    positions = torch.where((group == PSI_GROUP)[..., None], placed, positions)
    if oxt_mask is not None:
        oxt = torsion_frame(n, ca, c, psi).unsqueeze(-1).apply(local)
        keep = (group == OXT_GROUP) & oxt_mask[..., None]
        positions = torch.where(keep[..., None], oxt, positions)
    return positions


def _close_proline_ring(positions: torch.Tensor, aatype: torch.Tensor) -> torch.Tensor:
    """``positions (..., L, 15, 3)`` with every proline's CD moved to the point nearest its
    chi-placed position at :data:`PRO_N_CD_A` from N and :data:`PRO_CG_CD_A` from CG (a circle
    about the N-CG axis), so the ring is closed whatever chi1 and chi2 are. Where N and CG are
    too far apart for both lengths (never in a real ring), CD goes on the N-CG line at the ratio
    of the two lengths. Built from the atoms' positions only: equivariant, differentiable."""
    proline = aatype == PROLINE
    # the shortcut reads a value back from the device: taken on CPU only (free there), so a
    # GPU step (training losses) never waits on it
    if positions.device.type == "cpu" and not bool(proline.any()):
        return positions
    n = positions[..., _PRO_SLOTS["N"], :]
    cg = positions[..., _PRO_SLOTS["CG"], :]
    cd = positions[..., _PRO_SLOTS["CD"], :]
    axis = cg - n
    d = torch.linalg.vector_norm(axis, dim=-1, keepdim=True).clamp(min=1e-6)
    e = axis / d
    along = (d * d + PRO_N_CD_A**2 - PRO_CG_CD_A**2) / (2 * d)  # from N, on the axis
    radius = torch.sqrt((PRO_N_CD_A**2 - along * along).clamp(min=0.0))
    along = torch.where(
        d < PRO_N_CD_A + PRO_CG_CD_A, along, d * PRO_N_CD_A / (PRO_N_CD_A + PRO_CG_CD_A)
    )
    away = (cd - n) - ((cd - n) * e).sum(-1, keepdim=True) * e
    away = away / torch.linalg.vector_norm(away, dim=-1, keepdim=True).clamp(min=1e-9)
    closed = n + along * e + radius * away
    keep = proline.expand(positions.shape[:-2])[..., None]
    out = positions.clone()
    out[..., _PRO_SLOTS["CD"], :] = torch.where(keep, closed, cd)
    return out


def rebuilt_atom_mask(aatype: torch.Tensor, oxt_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(L, 15)`` atoms that :func:`frames_to_atoms` produces."""
    mask = residue_atom_mask(aatype)
    if oxt_mask is not None:
        mask[..., rc.OXT_SLOT] = oxt_mask
    return mask


def alternative_torsions(torsions: torch.Tensor, aatype: torch.Tensor) -> torch.Tensor:
    """Torsions with pi added to the pi-periodic chis (the same structure, atoms renamed)."""
    shift = chi_pi_periodic(aatype).to(torsions.dtype) * math.pi
    return wrap_angle(torsions + shift)
