"""Per-frame invariant point attention (AlphaFold 2 supplement, Algorithm 22).

Runs over the ``L`` residues of one frame with that frame's pair features as attention bias.
Queries, keys and values carry 3D points predicted in each residue's local frame; the attention
logits use their global-frame distances and the value points come back into the query's local
frame, so the layer is invariant to a global rigid motion of the frame.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from starmd.model.features import gather_neighbours
from starmd.structure.rigid import Rigid

# softplus^-1(1): head weights start at gamma_h = 1, as in AlphaFold.
SOFTPLUS_INV_ONE = math.log(math.e - 1.0)


class InvariantPointAttention(nn.Module):
    """IPA over residues of one frame.

    Args:
        c_s: single width. c_z: pair width. n_heads, c_head: scalar attention sizes.
        n_qk_points, n_v_points: points per head for query/key and for values.
    """

    def __init__(
        self, c_s: int, c_z: int, n_heads: int, c_head: int, n_qk_points: int, n_v_points: int
    ) -> None:
        super().__init__()
        self.n_heads, self.c_head = n_heads, c_head
        self.n_qk_points, self.n_v_points = n_qk_points, n_v_points
        self.linear_q = nn.Linear(c_s, n_heads * c_head)
        self.linear_kv = nn.Linear(c_s, 2 * n_heads * c_head)
        self.linear_q_points = nn.Linear(c_s, n_heads * n_qk_points * 3)
        self.linear_kv_points = nn.Linear(c_s, n_heads * (n_qk_points + n_v_points) * 3)
        self.linear_bias = nn.Linear(c_z, n_heads, bias=False)
        self.head_weights = nn.Parameter(torch.full((n_heads,), SOFTPLUS_INV_ONE))
        self.linear_out = nn.Linear(n_heads * (c_head + c_z + 4 * n_v_points), c_s)

    def forward(
        self,
        s: torch.Tensor,
        z: torch.Tensor,
        frames: Rigid,
        mask: torch.Tensor,
        neighbours: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend within each frame.

        Args:
            s: single features ``(N, L, c_s)`` (``N`` = batch x groups).
            z: pair features ``(N, L, L, c_z)``, or ``(N, L, k, c_z)`` with ``neighbours``.
            frames: residue frames :class:`Rigid` ``(N, L)`` in internal length units, centred.
            mask: ``(N, L)`` bool, False for padding (masked as keys).
            neighbours: ``(N, L, k)`` indices of the keys each residue attends to (None: all).

        Returns:
            ``(N, L, c_s)``.
        """
        if neighbours is not None:
            return self._forward_neighbours(s, z, frames, mask, neighbours)
        n, l, _ = s.shape
        h, c, pq, pv = self.n_heads, self.c_head, self.n_qk_points, self.n_v_points
        q = self.linear_q(s).view(n, l, h, c)
        k, v = self.linear_kv(s).view(n, l, h, 2 * c).split(c, dim=-1)

        point_frames = frames.unsqueeze(-1)  # (N, L, 1) broadcasts over points
        q_pts = point_frames.apply(self.linear_q_points(s).view(n, l, h * pq, 3))
        kv_pts = point_frames.apply(self.linear_kv_points(s).view(n, l, h * (pq + pv), 3))
        kv_pts = kv_pts.view(n, l, h, pq + pv, 3)
        k_pts, v_pts = kv_pts[..., :pq, :], kv_pts[..., pq:, :]
        q_pts = q_pts.view(n, l, h, pq * 3)
        k_pts = k_pts.reshape(n, l, h, pq * 3)

        w_l = math.sqrt(1.0 / 3.0)
        w_c = math.sqrt(2.0 / (9.0 * pq))
        gamma = F.softplus(self.head_weights) * w_c / 2  # (H,)
        scalar = torch.einsum("nihc,njhc->nhij", q, k) / math.sqrt(c)
        # |q - k|^2 = |q|^2 + |k|^2 - 2 q.k, points are centred per frame so this is well scaled.
        sq_dist = (
            (q_pts**2).sum(-1).permute(0, 2, 1)[..., :, None]
            + (k_pts**2).sum(-1).permute(0, 2, 1)[..., None, :]
            - 2 * torch.einsum("nihp,njhp->nhij", q_pts, k_pts)
        )
        bias = self.linear_bias(z).permute(0, 3, 1, 2)
        logits = w_l * (scalar + bias - gamma[None, :, None, None] * sq_dist)
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        attn = torch.softmax(logits, dim=-1)  # (N, H, L, L)

        return self._output(
            torch.einsum("nhij,njhc->nihc", attn, v),
            torch.einsum("nhij,njhpx->nihpx", attn, v_pts),
            torch.einsum("nhij,nijc->nihc", attn, z),
            point_frames,
        )

    def _output(
        self, o: torch.Tensor, o_pts: torch.Tensor, o_pair: torch.Tensor, point_frames: Rigid
    ) -> torch.Tensor:
        """Attention-weighted values ``o (N, L, H, c)``, global value points ``o_pts (N, L, H,
        ...)`` (``pv * 3`` numbers per head) and pair values ``o_pair (N, L, H, c_z)`` ->
        ``(N, L, c_s)``; the points come back into each query's local frame."""
        n, l = o.shape[:2]
        o_pts = point_frames.invert_apply(o_pts.reshape(n, l, -1, 3))
        o_norm = torch.sqrt((o_pts**2).sum(-1) + 1e-8)
        parts = [o.reshape(n, l, -1), o_pts.reshape(n, l, -1), o_norm, o_pair.reshape(n, l, -1)]
        return self.linear_out(torch.cat(parts, dim=-1))

    def _forward_neighbours(
        self,
        s: torch.Tensor,
        z: torch.Tensor,
        frames: Rigid,
        mask: torch.Tensor,
        neighbours: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`forward` with each query attending to its ``k`` neighbours only: keys, values
        and their points gathered per query, ``O(L k)`` instead of ``O(L^2)``. With
        ``neighbours`` listing every residue it equals the dense layer up to rounding."""
        n, l, _ = s.shape
        h, c, pq, pv = self.n_heads, self.c_head, self.n_qk_points, self.n_v_points
        q = self.linear_q(s).view(n, l, h, c)
        kv = self.linear_kv(s).view(n, l, h, 2 * c)
        point_frames = frames.unsqueeze(-1)
        q_pts = point_frames.apply(self.linear_q_points(s).view(n, l, h * pq, 3))
        q_pts = q_pts.view(n, l, h, pq * 3)
        kv_pts = point_frames.apply(self.linear_kv_points(s).view(n, l, h * (pq + pv), 3))
        # gather every key-side quantity once: (N, L, k, H, ...)
        keys = gather_neighbours(
            torch.cat([kv, kv_pts.reshape(n, l, h, (pq + pv) * 3)], dim=-1), neighbours
        )
        k, v, k_pts, v_pts = keys.split([c, c, pq * 3, pv * 3], dim=-1)
        key_mask = gather_neighbours(mask, neighbours)  # (N, L, k)

        w_l = math.sqrt(1.0 / 3.0)
        w_c = math.sqrt(2.0 / (9.0 * pq))
        gamma = F.softplus(self.head_weights) * w_c / 2
        scalar = torch.einsum("nihc,nijhc->nijh", q, k) / math.sqrt(c)
        sq_dist = ((q_pts[:, :, None] - k_pts) ** 2).sum(-1)  # (N, L, k, H)
        logits = w_l * (scalar + self.linear_bias(z) - gamma * sq_dist)
        logits = logits.masked_fill(~key_mask[..., None], torch.finfo(logits.dtype).min)
        attn = torch.softmax(logits, dim=2)  # over the k neighbours

        return self._output(
            torch.einsum("nijh,nijhc->nihc", attn, v),
            torch.einsum("nijh,nijhx->nihx", attn, v_pts),
            torch.einsum("nijh,nijc->nihc", attn, z),
            point_frames,
        )
