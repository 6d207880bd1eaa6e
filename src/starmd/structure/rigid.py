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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


def quat_to_rotmat(quat: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` as ``(w, x, y, z)`` -> rotation matrices ``(..., 3, 3)``.

    The quaternion is normalized first, so any non-zero 4-vector is accepted.
    """
    q = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def rotmat_to_quat(rots: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` with ``w >= 0``.

    Shepperd's method: of the four candidate formulas, use the one whose pivot
    (``1 + trace`` or ``1 + 2 R_ii - trace``) is largest, which keeps it stable near 180 degrees.
    """
    r = rots
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    pivots = torch.stack(
        [
            1 + trace,
            1 + 2 * r[..., 0, 0] - trace,
            1 + 2 * r[..., 1, 1] - trace,
            1 + 2 * r[..., 2, 2] - trace,
        ],
        dim=-1,
    )
    # Each candidate is 4 * q_k * q, written out for pivot k.
    cand = torch.stack(
        [
            torch.stack(
                [
                    pivots[..., 0],
                    r[..., 2, 1] - r[..., 1, 2],
                    r[..., 0, 2] - r[..., 2, 0],
                    r[..., 1, 0] - r[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    r[..., 2, 1] - r[..., 1, 2],
                    pivots[..., 1],
                    r[..., 0, 1] + r[..., 1, 0],
                    r[..., 0, 2] + r[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    r[..., 0, 2] - r[..., 2, 0],
                    r[..., 0, 1] + r[..., 1, 0],
                    pivots[..., 2],
                    r[..., 1, 2] + r[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    r[..., 1, 0] - r[..., 0, 1],
                    r[..., 0, 2] + r[..., 2, 0],
                    r[..., 1, 2] + r[..., 2, 1],
                    pivots[..., 3],
                ],
                -1,
            ),
        ],
        dim=-2,
    )
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
