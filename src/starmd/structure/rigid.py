"""Rigid transforms in SE(3) as a small value type.

A :class:`Rigid` holds rotation matrices ``rots`` of shape ``(..., 3, 3)`` and translations
``trans`` of shape ``(..., 3)`` (Angstrom). It maps a point ``p`` in the local frame to the global
frame as ``R p + t``. Residue frames follow the AlphaFold/OpenFold convention: origin at CA,
x-axis along CA->C, N in the xy-plane (y-component positive), built by Gram-Schmidt
(:meth:`Rigid.from_3_points`).

Quaternions are ``(w, x, y, z)`` with ``w >= 0`` on output (a quaternion and its negative are the
same rotation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


def _quat_to_rotmat_table() -> torch.Tensor:
    """``C (16, 9)`` with ``R_ij = sum_ab C[4a + b, 3i + j] q_a q_b`` for a unit quaternion."""
    table = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    w, x, y, z = range(4)
    for i, sign in enumerate(((1, 1, -1, -1), (1, -1, 1, -1), (1, -1, -1, 1))):
        for a in range(4):  # diagonal: w^2 +- x^2 +- y^2 +- z^2
            table[a, a, i, i] = sign[a]
    for i, j, p, q, r, s, sign in (
        (0, 1, x, y, w, z, -1),
        (1, 0, x, y, w, z, 1),
        (0, 2, x, z, w, y, 1),
        (2, 0, x, z, w, y, -1),
        (1, 2, y, z, w, x, -1),
        (2, 1, y, z, w, x, 1),
    ):  # off-diagonal: 2 (p q + sign r s)
        table[p, q, i, j] = table[q, p, i, j] = 1.0
        table[r, s, i, j] = table[s, r, i, j] = sign
    return table.reshape(16, 9)


def _rotmat_to_quat_table() -> torch.Tensor:
    """``M (10, 16)`` with ``cand[k, c] = sum_m [1, R_00, R_01, ..., R_22]_m M[m, 4k + c]``:
    row ``k`` of ``cand`` is ``4 q_k q`` when ``q_k`` is the pivot (Shepperd's method)."""
    table = torch.zeros(10, 4, 4, dtype=torch.float64)

    def entry(i: int, j: int) -> int:
        return 1 + 3 * i + j

    signs = ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1))
    for k in range(4):  # pivots: 1 + trace, 1 + 2 R_ii - trace
        table[0, k, k] = 1.0
        for i in range(3):
            table[entry(i, i), k, k] = signs[k][i]
    for (i, j), k in (((2, 1), 1), ((0, 2), 2), ((1, 0), 3)):  # w row/column: R_ij - R_ji
        for a, b in ((0, k), (k, 0)):
            table[entry(i, j), a, b] = 1.0
            table[entry(j, i), a, b] = -1.0
    for (i, j), (a, b) in (((0, 1), (1, 2)), ((0, 2), (1, 3)), ((1, 2), (2, 3))):  # R_ij + R_ji
        for m, n in ((a, b), (b, a)):
            table[entry(i, j), m, n] = table[entry(j, i), m, n] = 1.0
    return table.reshape(10, 16)


_QUAT_TO_ROTMAT = _quat_to_rotmat_table()
_ROTMAT_TO_QUAT = _rotmat_to_quat_table()


@functools.cache
def _table(name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    table = {"quat_to_rotmat": _QUAT_TO_ROTMAT, "rotmat_to_quat": _ROTMAT_TO_QUAT}[name]
    with torch.inference_mode(False):  # a cached inference tensor would break later autograd
        return table.to(dtype=dtype, device=device)


def quat_to_rotmat(quat: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` as ``(w, x, y, z)`` -> rotation matrices ``(..., 3, 3)``.

    The quaternion is normalized first, so any non-zero 4-vector is accepted. Each entry is a
    quadratic form of ``q`` (a constant table applied to ``q q^T``): a few large tensor ops
    rather than dozens of small ones, and elementwise, so autocast never lowers its precision.
    """
    q = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    outer = (q[..., :, None] * q[..., None, :]).flatten(-2)  # (..., 16)
    table = _table("quat_to_rotmat", q.dtype, q.device)
    return (outer[..., :, None] * table).sum(-2).unflatten(-1, (3, 3))


def rotmat_to_quat(rots: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` with ``w >= 0``.

    Shepperd's method: of the four candidate formulas, use the one whose pivot
    (``1 + trace`` or ``1 + 2 R_ii - trace``) is largest, which keeps it stable near 180 degrees.
    The candidates ``4 q_k q`` are linear in ``(1, R)``: one constant table gives all four.
    """
    entries = torch.cat([torch.ones_like(rots[..., :1, 0]), rots.flatten(-2)], dim=-1)
    table = _table("rotmat_to_quat", rots.dtype, rots.device)
    cand = (entries[..., :, None] * table).sum(-2).unflatten(-1, (4, 4))
    pivots = torch.diagonal(cand, dim1=-2, dim2=-1)
    best = pivots.argmax(dim=-1)
    q = torch.take_along_dim(cand, best[..., None, None].expand(*best.shape, 1, 4), dim=-2)
    q = q.squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


@dataclass(frozen=True)
class Rigid:
    """A batch of rigid transforms ``x -> rots @ x + trans``.

    Attributes:
        rots: rotation matrices, shape ``(..., 3, 3)``.
        trans: translations in Angstrom, shape ``(..., 3)``.
    """

    rots: torch.Tensor
    trans: torch.Tensor

    def __post_init__(self) -> None:
        if self.rots.shape[-2:] != (3, 3) or self.trans.shape[-1] != 3:
            raise ValueError(f"bad Rigid shapes: rots {self.rots.shape}, trans {self.trans.shape}")
        if self.rots.shape[:-2] != self.trans.shape[:-1]:
            raise ValueError(
                f"Rigid batch shapes differ: rots {self.rots.shape}, trans {self.trans.shape}"
            )

    # construction -------------------------------------------------------------------------
    @classmethod
    def identity(
        cls,
        shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Rigid:
        """Identity transforms of batch shape ``shape``."""
        rots = torch.eye(3, dtype=dtype, device=device).expand(*shape, 3, 3).clone()
        return cls(rots, torch.zeros(*shape, 3, dtype=dtype, device=device))

    @classmethod
    def from_3_points(
        cls,
        p_xy_plane: torch.Tensor,
        origin: torch.Tensor,
        p_x_axis: torch.Tensor,
        eps: float = 1e-8,
    ) -> Rigid:
        """Frame from three points by Gram-Schmidt (AlphaFold supplement, Algorithm 21).

        The x-axis points from ``origin`` to ``p_x_axis``; ``p_xy_plane`` lies in the xy-plane
        with a positive y component. For residue frames call ``from_3_points(N, CA, C)``: origin
        at CA, x along CA->C, N in the xy-plane. All inputs ``(..., 3)``.
        """
        e0 = p_x_axis - origin
        e0 = e0 / (torch.linalg.vector_norm(e0, dim=-1, keepdim=True) + eps)
        v1 = p_xy_plane - origin
        e1 = v1 - (e0 * v1).sum(-1, keepdim=True) * e0
        e1 = e1 / (torch.linalg.vector_norm(e1, dim=-1, keepdim=True) + eps)
        e2 = torch.linalg.cross(e0, e1, dim=-1)
        return cls(torch.stack([e0, e1, e2], dim=-1), origin)

    @classmethod
    def from_tensor_7(cls, tensor: torch.Tensor) -> Rigid:
        """Inverse of :meth:`to_tensor_7`: ``(..., 7)`` = quaternion (w, x, y, z) + translation."""
        return cls(quat_to_rotmat(tensor[..., :4]), tensor[..., 4:])

    def to_tensor_7(self) -> torch.Tensor:
        """Quaternion (w, x, y, z; w >= 0) and translation concatenated, shape ``(..., 7)``."""
        return torch.cat([rotmat_to_quat(self.rots), self.trans], dim=-1)

    # group operations ---------------------------------------------------------------------
    def compose(self, other: Rigid) -> Rigid:
        """``self o other``: apply ``other`` first, then ``self``."""
        rots = self.rots @ other.rots
        trans = (self.rots @ other.trans[..., None])[..., 0] + self.trans
        return Rigid(rots, trans)

    def invert(self) -> Rigid:
        """The inverse transform: ``R^T (x - t)``."""
        rots_t = self.rots.transpose(-1, -2)
        return Rigid(rots_t, -(rots_t @ self.trans[..., None])[..., 0])

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Map local points ``(..., 3)`` (broadcast against the batch) to the global frame."""
        return torch.einsum("...ij,...j->...i", self.rots, points) + self.trans

    def invert_apply(self, points: torch.Tensor) -> torch.Tensor:
        """Map global points ``(..., 3)`` into the local frame: ``R^T (p - t)``."""
        return torch.einsum("...ji,...j->...i", self.rots, points - self.trans)

    def apply_rotation(self, vectors: torch.Tensor) -> torch.Tensor:
        """Rotate vectors ``(..., 3)`` (no translation)."""
        return torch.einsum("...ij,...j->...i", self.rots, vectors)

    # batch handling -----------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.trans.shape[:-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.trans.dtype

    @property
    def device(self) -> torch.device:
        return self.trans.device

    def __getitem__(self, index: object) -> Rigid:
        if not isinstance(index, tuple):
            index = (index,)
        return Rigid(
            self.rots[index + (slice(None), slice(None))], self.trans[index + (slice(None),)]
        )

    def unsqueeze(self, dim: int) -> Rigid:
        """Insert a batch dimension (negative ``dim`` counts over batch dims only)."""
        if dim < 0:
            dim = len(self.shape) + 1 + dim
        return Rigid(self.rots.unsqueeze(dim), self.trans.unsqueeze(dim))

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Rigid:
        """Apply ``fn`` to both tensors (e.g. ``.to``, ``.detach``); ``fn`` must keep the tail."""
        return Rigid(fn(self.rots), fn(self.trans))

    def to(self, *args: object, **kwargs: object) -> Rigid:
        return self.map_tensors(lambda t: t.to(*args, **kwargs))

    def scale_translation(self, factor: float) -> Rigid:
        return Rigid(self.rots, self.trans * factor)

    @staticmethod
    def cat(rigids: Sequence[Rigid], dim: int) -> Rigid:
        """Concatenate along batch dimension ``dim`` (non-negative, or negative over batch dims)."""
        nd = len(rigids[0].shape)
        d = dim if dim >= 0 else nd + dim
        return Rigid(
            torch.cat([r.rots for r in rigids], dim=d), torch.cat([r.trans for r in rigids], dim=d)
        )

    @staticmethod
    def stack(rigids: Sequence[Rigid], dim: int) -> Rigid:
        nd = len(rigids[0].shape) + 1
        d = dim if dim >= 0 else nd + dim
        return Rigid(
            torch.stack([r.rots for r in rigids], dim=d),
            torch.stack([r.trans for r in rigids], dim=d),
        )
