"""The denoiser's small per-token layers: the transition MLP, the per-frame outer-product pair
update, the rigid (frame) update and the torsion head (used by :mod:`starmd.model.denoiser`)."""

from __future__ import annotations

import torch
from torch import nn

from starmd.model.features import gather_neighbours, neighbours_per_group
from starmd.structure.rigid import Rigid, quat_to_rotmat


class Transition(nn.Module):
    """Two-layer MLP ``c -> factor*c -> c``."""

    def __init__(self, c: int, factor: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(c, factor * c), nn.SiLU(), nn.Linear(factor * c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class OuterProductPairUpdate(nn.Module):
    """``z_ij += W (a_i outer b_j)`` per frame, ``s (..., L, c_s) -> (..., L, L, c_z)``.

    Contracted as two einsums so that the ``L x L x c_outer^2`` outer product is never formed.
    """

    def __init__(self, c_s: int, c_z: int, c_outer: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c_s)
        self.linear_ab = nn.Linear(c_s, 2 * c_outer)
        self.weight = nn.Parameter(torch.randn(c_z, c_outer, c_outer) / c_outer)
        self.bias = nn.Parameter(torch.zeros(c_z))
        self.c_outer = c_outer

    def forward(self, s: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        """``s (B, G, L, c_s)`` -> ``(B, G, L, L, c_z)``, or ``(B, G, L, k, c_z)`` over
        ``neighbours (B, L, k)``."""
        a, b = self.linear_ab(self.norm(s)).split(self.c_outer, dim=-1)
        left = torch.einsum("...ia,zab->...izb", a, self.weight)
        if neighbours is None:
            return torch.einsum("...izb,...jb->...ijz", left, b) + self.bias
        batch, groups = b.shape[:2]
        index = neighbours_per_group(neighbours, groups)
        b_near = gather_neighbours(b.flatten(0, 1), index).unflatten(0, (batch, groups))
        return torch.einsum("...izb,...ijb->...ijz", left, b_near) + self.bias


class RigidUpdate(nn.Module):
    """Frame update in the token's local frame: quaternion vector part + translation.

    ``s (..., c_s)`` -> :class:`Rigid` ``(...)``; the translation is predicted in internal units
    (nm) and returned in Angstrom. Zero-initialized: the identity update at start.
    """

    def __init__(self, c_s: int, trans_scale: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c_s)
        self.linear = nn.Linear(c_s, 6)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.trans_scale = trans_scale

    def forward(self, s: torch.Tensor) -> Rigid:
        update = self.linear(self.norm(s))
        quat = torch.cat([torch.ones_like(update[..., :1]), update[..., :3]], dim=-1)
        return Rigid(quat_to_rotmat(quat), update[..., 3:] / self.trans_scale)


class TorsionHead(nn.Module):
    """Residual MLP ``s (..., c_s) -> (..., 7, 2)`` (sin, cos), unnormalized and unit."""

    def __init__(self, c_s: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c_s)
        self.linear_in = nn.Linear(c_s, c_s)
        self.residual = nn.Sequential(
            nn.ReLU(), nn.Linear(c_s, c_s), nn.ReLU(), nn.Linear(c_s, c_s)
        )
        self.linear_out = nn.Linear(c_s, 14)

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.linear_in(self.norm(s))
        h = h + self.residual(h)
        raw = self.linear_out(torch.relu(h)).unflatten(-1, (7, 2))
        unit = raw / torch.sqrt((raw**2).sum(-1, keepdim=True) + 1e-8)
        return raw, unit
