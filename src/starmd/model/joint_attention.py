"""Joint spatio-temporal attention with rotary encodings and an invariant point term.

One attention call covers the single features of all tokens (frame group x residue) that a
query may see, with no space/time factorization. Per head the query/key vectors are augmented so
that ``scaled_dot_product_attention`` computes, up to a per-query constant that softmax drops,

    w_L * ( q_i . k_j / sqrt(c)  -  gamma_h w_C / 2 * sum_p |T_i q_ip - T_j k_jp|^2 )

* scalar part: the first ``rope_residue_dims`` dimensions rotate with the residue index, the next
  ``rope_time_dims`` with physical time in ns (log-spaced periods over ``rope_time_min_ns`` ..
  ``rope_time_max_ns``), the rest are plain;
* point part: query/key points are predicted in each token's local frame and mapped to global
  coordinates with that token's frame (``T_i q``). Expanding the square,
  ``-w/2 |q - k|^2 = w q.k - w/2 |k|^2 - w/2 |q|^2``; the last term is constant per query, so
  ``q_aug = [scalar q, w q_pts, w]`` and ``k_aug = [scalar k, k_pts, -|k_pts|^2 / 2]``;
* value points are averaged in global coordinates and mapped back into the query's local frame.

Cached keys/values are therefore ``[rotated scalar k, global k points, -|k|^2/2]`` and
``[v, global v points]``: O(tokens x d), never pair-sized. Global coordinates are taken relative
to the initial structure's centroid (an equivariant point) and in nm, which keeps the expanded
squares well conditioned; the result is invariant either way. Head dimensions are zero-padded to
a multiple of 8 so that fused SDPA kernels apply.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from starmd.model.config import DenoiserConfig
from starmd.model.ipa import SOFTPLUS_INV_ONE
from starmd.model.kv_cache import KVCache
from starmd.structure.rigid import Rigid


def _round_up(n: int, multiple: int = 8) -> int:
    return (n + multiple - 1) // multiple * multiple


def rotary_frequencies(
    config: DenoiserConfig, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular frequencies in float64: per unit of residue index ``(rope_residue_dims / 2,)``
    and per ns of physical time ``(rope_time_dims / 2,)``."""
    n_res, n_time = config.rope_residue_dims // 2, config.rope_time_dims // 2
    res_freq = config.rope_residue_base ** (
        -torch.arange(n_res, dtype=torch.float64, device=device) / max(n_res, 1)
    )
    periods_ns = torch.logspace(
        math.log10(config.rope_time_min_ns),
        math.log10(config.rope_time_max_ns),
        n_time,
        dtype=torch.float64,
        device=device,
    )
    return res_freq, 2 * math.pi / periods_ns


def rotary_angles(
    config: DenoiserConfig, residue_index: torch.Tensor, time_ps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos/sin per token, ``(B, 1, T, (rope_residue_dims + rope_time_dims) / 2)``.

    Args:
        residue_index: ``(B, T)`` residue index of each token.
        time_ps: ``(B, T)`` physical time of each token in ps.

    Angles are formed in float64 and reduced mod 2 pi before the cast, so that large times
    (microsecond rollouts) keep their short-period components exact.
    """
    res_freq, time_freq = rotary_frequencies(config, residue_index.device)
    return _cos_sin(
        residue_index.to(torch.float64)[..., None] * res_freq,
        (time_ps.to(torch.float64) / 1000.0)[..., None] * time_freq,
    )


class GroupRotary:
    """:func:`rotary_angles` for group-major tokens (``G`` frames of the same ``L`` residues),
    with the frame-independent residue part computed once: a rollout builds one per protein.

    Args:
        residue_index: ``(B, L)``.
    """

    def __init__(self, config: DenoiserConfig, residue_index: torch.Tensor) -> None:
        res_freq, self.time_freq = rotary_frequencies(config, residue_index.device)
        self.residue_angles = residue_index.to(torch.float64)[:, None, :, None] * res_freq

    def __call__(
        self, time_ps: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary cos/sin ``(B, 1, G L, n)`` in ``dtype`` for frame times ``time_ps (B, G)``;
        equal to :func:`rotary_angles` of the tokens' residue indices and times, cast."""
        b, _, l, n_res = self.residue_angles.shape
        g = time_ps.shape[1]
        time_angles = (time_ps.to(torch.float64) / 1000.0)[:, :, None, None] * self.time_freq
        cos, sin = _cos_sin(
            self.residue_angles.expand(b, g, l, n_res).reshape(b, g * l, n_res),
            time_angles.expand(b, g, l, -1).reshape(b, g * l, -1),
        )
        return cos.to(dtype), sin.to(dtype)


def _cos_sin(
    residue_angles: torch.Tensor, time_angles: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.cat([residue_angles, time_angles], dim=-1).remainder(2 * math.pi)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dims of ``x (..., B, H, T, c)`` pairwise (half
    split) by the angles of ``cos, sin (B, 1, T, n)``."""
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


@functools.cache
def _flex_attention(device_type: str):
    """FlexAttention, compiled into a fused kernel on GPU; eager (unfused, forward-only: PyTorch
    has no FlexAttention backward on CPU) elsewhere."""
    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=False)
    return flex_attention


class AttentionContext(Protocol):
    """Where keys/values come from and which are visible: training mask or rollout cache."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Current tokens' ``q (B, H, Tq, dk)``, ``k (B, H, T, dk)``, ``v (B, H, T, dv)`` ->
        ``(B, H, Tq, dv)``; ``Tq < T``: queries of the last ``Tq`` tokens only (rollout)."""
        ...

    def restrict(self, neighbours: torch.Tensor) -> AttentionContext:
        """The same context where a token sees, in frames other than its own, only the residues
        ``neighbours (B, L, k)`` (each residue's key residues) lists."""
        ...


def neighbour_mask(neighbours: torch.Tensor) -> torch.Tensor:
    """``neighbours (B, L, k)`` as a bool ``(B, L, L)``: ``[query residue, key residue]``."""
    b, l, _ = neighbours.shape
    allowed = torch.zeros(b, l, l, dtype=torch.bool, device=neighbours.device)
    return allowed.scatter_(-1, neighbours, True)


class MaskedContext:
    """Training layout: all tokens in one call, visibility from a dense or block mask."""

    def __init__(self, mask: torch.Tensor | BlockMask | None) -> None:
        self.mask = mask

    def restrict(self, neighbours: torch.Tensor) -> MaskedContext:
        """As a key mask: the same cost as full attention (training windows are short)."""
        if not isinstance(self.mask, torch.Tensor):
            raise ValueError("attention restricted to neighbours needs a dense mask (sdpa)")
        near = neighbour_mask(neighbours)
        b, l, _ = near.shape
        groups = self.mask.shape[-1] // l
        group = torch.arange(groups, device=near.device).repeat_interleave(l)
        own_frame = group[:, None] == group[None, :]  # (N, N)
        allowed = own_frame | near.repeat(1, groups, groups)  # (B, N, N)
        return MaskedContext(self.mask & allowed[:, None])

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if isinstance(self.mask, BlockMask):
            return _flex_attention(q.device.type)(q, k, v, block_mask=self.mask, scale=1.0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, scale=1.0)


class CacheContext:
    """Rollout: the current group attends to the cached clean groups and to itself.

    The current group's keys/values are written into ``slot``; whether they stay there is the
    caller's decision (:meth:`KVCache.commit`). With a list of slots, several groups (in time
    order) run in one pass, each attending to the cache, the earlier groups and itself.
    """

    def __init__(self, cache: KVCache, slot: int | list[int]) -> None:
        self.cache, self.slot = cache, slot
        self._visibility: tuple[int, torch.Tensor | None] | None = None

    def restrict(self, neighbours: torch.Tensor) -> NeighbourCacheContext:
        return NeighbourCacheContext(self.cache, self.slot, neighbours)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._visibility is None:  # the same for every layer of the pass
            self._visibility = self.cache.visibility(self.slot)
        num_slots, mask = self._visibility
        self.cache.write(layer, self.slot, k, v)
        keys, values = self.cache.layer(layer, num_slots)
        if mask is not None and mask.shape[-2] > q.shape[-2]:  # queries of the last groups only
            mask = mask[..., mask.shape[-2] - q.shape[-2] :, :]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0)


NEIGHBOUR_BLOCK = 16
"""Query residues (consecutive in index order) that share one gathered key set."""


@dataclass(frozen=True)
class NeighbourLayout:
    """Which cached keys each query sees when attention across frames is restricted to
    neighbours: every residue of its own slot, and its ``k`` neighbours in ``M`` other slots.
    Layer-independent: built once per pass, used by every attention layer.

    Query residues go in ``nb`` blocks of ``c`` consecutive residues (the last one padded);
    a block's key residues in other slots are the union of its residues' neighbour lists
    (``U`` residues, padded to the largest block's), so one fused attention call scores a
    block's queries against them (each key gathered once per block, not once per query) and
    an additive mask keeps each query to its own ``k``. Neighbours of consecutive residues
    overlap (``U`` about 4-5 k for ``c`` = 16 on protein chains).

    Attributes:
        query_slots: the slot of each query group, ``G`` in time order.
        num_slots: ``S``, leading cache slots covering every key seen.
        block: ``c``, query residues per block.
        key_index: ``(B, nb M U)`` token positions (in the cache's ``S L`` tokens) of each
            block's key residues in each other slot.
        near_bias: ``(B nb, 1, G, c, M U)`` additive mask, 0 where the gathered key is visible
            to the query (its slot is one the query group sees, not its own; its residue is one
            of the query's neighbours and not padding), ``-inf`` elsewhere.
        near_seen: ``(B, 1, G, nb c)`` bool: the query sees at least one gathered key.
        own_bias: ``(B, 1, 1, L)`` additive mask of the own slot's padding (None: none).
    """

    query_slots: list[int]
    num_slots: int
    block: int
    key_index: torch.Tensor
    near_bias: torch.Tensor
    near_seen: torch.Tensor
    own_bias: torch.Tensor | None

    @classmethod
    def build(
        cls, cache: KVCache, slot: int | list[int], neighbours: torch.Tensor
    ) -> NeighbourLayout | None:
        """The layout of query groups in ``slot`` of ``cache`` (see :meth:`KVCache.visibility`)
        with key residues ``neighbours (B, L, k)`` in other slots; None where masked attention
        over the whole cache costs less: no other slot seen, blocks' key sets above a quarter of
        the residues (small proteins: the fused masked call beats two calls and the gathers),
        or not on a CPU (the merge needs the CPU kernel's log-sum-exp)."""
        query_slots = [slot] if isinstance(slot, int) else list(slot)
        slot_visible = cache.slot_visibility(slot).cpu()  # (G, S)
        other = slot_visible.clone()
        # a group's own slot is seen whole, not through neighbours
        other[torch.arange(len(query_slots)), query_slots] = False
        other_slots = [int(i) for i in other.any(0).nonzero().flatten()]
        if not other_slots or neighbours.device.type != "cpu":
            return None
        residue_mask = cache.residue_mask
        near = neighbour_mask(neighbours) & residue_mask[:, None, :]  # (B, L, L)
        b, l, _ = near.shape
        union, key_near = _neighbour_blocks(near, NEIGHBOUR_BLOCK)
        nb, u = union.shape[1:]
        if 4 * u > l:
            return None
        offsets = torch.tensor(other_slots, dtype=union.dtype, device=union.device) * l
        key_index = offsets[None, None, :, None] + union[:, :, None, :]  # (B, nb, M, U)
        slot_seen = other[:, other_slots].to(near.device)  # (G, M)
        # (B, nb, G, c, M, U): query block, query group, query residue, key slot, key residue
        visible = slot_seen[None, None, :, None, :, None] & key_near[:, :, None, :, None]
        visible = visible.flatten(-2)
        dtype = cache.keys[0].dtype
        own_bias = None
        if not bool(residue_mask.all()):
            own_bias = _additive(residue_mask, dtype)[:, None, None, :]
        return cls(
            query_slots=query_slots,
            num_slots=slot_visible.shape[1],
            block=NEIGHBOUR_BLOCK,
            key_index=key_index.flatten(1),
            near_bias=_additive(visible, dtype).flatten(0, 1)[:, None],
            near_seen=visible.any(-1).permute(0, 2, 1, 3).flatten(2)[:, None],
            own_bias=own_bias,
        )


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as an additive one (0 visible, -inf hidden): the fused CPU kernel that
    returns the log-sum-exp takes no bool mask."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(
        ~visible, -torch.inf
    )


def _neighbour_blocks(near: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of ``block`` consecutive query residues of ``near (B, L, L)``: each block's key
    residues ``(B, nb, U)`` (the union of its rows, padded with residues no row sees) and which
    of them each row sees ``(B, nb, block, U)``."""
    b, l, _ = near.shape
    nb = -(-l // block)
    rows = F.pad(near, (0, 0, 0, nb * block - l)).view(b, nb, block, l)
    member = rows.any(2)  # (B, nb, L)
    u = int(member.sum(-1).max())
    # members first (a stable sort keeps them in residue order), then padding
    union = torch.sort(member.to(torch.uint8), dim=-1, descending=True, stable=True).indices
    union = union[..., :u]
    return union, rows.gather(-1, union[:, :, None, :].expand(b, nb, block, u))


def _attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused CPU attention (scale 1) returning the output and the log-sum-exp of the scores
    ``(..., Tq)`` (head sizes of ``q, k`` and ``v`` may differ: zero padding, which changes
    no score)."""
    dk, dv = q.shape[-1], v.shape[-1]
    width = max(dk, dv)
    q, k, v = (F.pad(x, (0, width - x.shape[-1])) if x.shape[-1] < width else x for x in (q, k, v))
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, False, attn_mask=bias, scale=1.0
    )
    return out[..., :dv], lse


def neighbour_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, layout: NeighbourLayout
) -> torch.Tensor:
    """Attention of the last ``G'`` query groups of ``layout`` over their own slot's keys and
    their neighbours' keys in other slots, with one softmax over both (scale 1: queries carry
    it): two fused calls, own slot and gathered neighbours, merged exactly through their
    log-sum-exps (``softmax`` over a union = the parts weighted by ``exp(lse_part - lse)``).

    Equal to masked attention over all ``S L`` cached keys with the same visibility, at
    ``O(L^2 + L M U)`` per group instead of ``O(L^2 S)`` (``U``: key residues per query block,
    see :class:`NeighbourLayout`).

    Args:
        q: ``(B, H, G' L, dk)``; keys ``(B, H, S L, dk)`` and values ``(B, H, S L, dv)``: the
            cache's first ``layout.num_slots`` slots.

    Returns:
        ``(B, H, G' L, dv)``.
    """
    b, h, _, dk = q.shape
    c, n_blocks = layout.block, layout.near_bias.shape[0] // b
    l = keys.shape[2] // layout.num_slots
    g = q.shape[2] // l
    first = len(layout.query_slots) - g
    q = q.view(b, h, g, l, dk)

    # own slot, per query group: (B, H, L, dv) and (B, H, L)
    own = [
        _attention_with_lse(
            q[:, :, i],
            keys[:, :, s * l : (s + 1) * l],
            values[:, :, s * l : (s + 1) * l],
            layout.own_bias,
        )
        for i, s in enumerate(layout.query_slots[first:])
    ]
    own_out = torch.stack([o for o, _ in own], dim=2)
    own_lse = torch.stack([lse for _, lse in own], dim=2)  # (B, H, G', L)

    # neighbours in other slots: the blocks go into the batch, (B nb, H, G' c, d)
    def gathered(x: torch.Tensor) -> torch.Tensor:  # (B nb, H, M U, d), token-major gather
        rows = x.transpose(1, 2).reshape(b, x.shape[2], h * x.shape[-1])
        index = layout.key_index
        if b == 1 or bool((index == index[:1]).all()):  # replicas of one protein: one gather
            picked = rows.index_select(1, index[0])
        else:
            picked = torch.stack([r.index_select(0, i) for r, i in zip(rows, index, strict=True)])
        return picked.view(b * n_blocks, -1, h, x.shape[-1]).transpose(1, 2)

    q_blocks = F.pad(q, (0, 0, 0, n_blocks * c - l)).view(b, h, g, n_blocks, c, dk)
    q_blocks = q_blocks.permute(0, 3, 1, 2, 4, 5).reshape(b * n_blocks, h, g * c, dk)
    bias = layout.near_bias[:, :, first:].flatten(2, 3)
    near_out, near_lse = _attention_with_lse(q_blocks, gathered(keys), gathered(values), bias)
    near_out = near_out.view(b, n_blocks, h, g, c, -1).permute(0, 2, 3, 1, 4, 5)
    near_out = near_out.reshape(b, h, g, n_blocks * c, -1)[:, :, :, :l]
    near_lse = near_lse.view(b, n_blocks, h, g, c).permute(0, 2, 3, 1, 4)
    near_lse = near_lse.reshape(b, h, g, n_blocks * c)
    # a query that sees no gathered key: the kernel returns 0 for both, the merge needs -inf
    near_lse = near_lse.masked_fill(~layout.near_seen[:, :, first:], -torch.inf)[..., :l]

    lse = torch.logaddexp(own_lse, near_lse)
    out = own_out * (own_lse - lse).exp()[..., None] + near_out * (near_lse - lse).exp()[..., None]
    return out.reshape(b, h, g * l, -1)


def dense_neighbour_mask(
    cache: KVCache, slot: int | list[int], neighbours: torch.Tensor
) -> tuple[int, torch.Tensor]:
    """Masked form of the same visibility: the number ``S`` of leading slots and a bool key
    mask ``(B, 1, G L, S L)`` over their tokens (the cache's visibility, own slot whole,
    other slots through ``neighbours (B, L, k)``)."""
    slots = [slot] if isinstance(slot, int) else list(slot)
    num_slots, key_mask = cache.visibility(slot)
    b, l, _ = neighbours.shape
    device = neighbours.device
    key_slot = torch.arange(num_slots, device=device).repeat_interleave(l)  # (S L,)
    query_slot = torch.tensor(slots, device=device).repeat_interleave(l)  # (G L,)
    own_frame = query_slot[:, None] == key_slot[None, :]  # (G L, S L)
    near = neighbour_mask(neighbours).repeat(1, len(slots), num_slots)
    allowed = (own_frame | near)[:, None]  # (B, 1, G L, S L)
    return num_slots, allowed if key_mask is None else allowed & key_mask


class NeighbourCacheContext:
    """:class:`CacheContext` with attention across frames restricted to neighbours
    (``DenoiserConfig.attention_neighbours``): gathered keys (:func:`neighbour_attention`)
    where that costs less, otherwise a key mask on the whole cache (the same result).

    Args:
        neighbours: ``(B, L, k)`` key residues of each query residue in other frames (fixed for
            the rollout).
    """

    def __init__(self, cache: KVCache, slot: int | list[int], neighbours: torch.Tensor) -> None:
        self.cache, self.slot = cache, slot
        self.layout = NeighbourLayout.build(cache, slot, neighbours)
        if self.layout is None:
            self.num_slots, self.key_mask = dense_neighbour_mask(cache, slot, neighbours)
        else:
            self.num_slots, self.key_mask = self.layout.num_slots, None

    def restrict(self, neighbours: torch.Tensor) -> NeighbourCacheContext:
        return NeighbourCacheContext(self.cache, self.slot, neighbours)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.write(layer, self.slot, k, v)
        keys, values = self.cache.layer(layer, self.num_slots)
        if self.layout is not None:
            return neighbour_attention(q, keys, values, self.layout)
        mask = self.key_mask[..., self.key_mask.shape[-2] - q.shape[-2] :, :]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0)


class JointSpatioTemporalAttention(nn.Module):
    """Attention over tokens of many frames with rotary (residue, time) and point terms."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        h, c = config.n_heads, config.c_head
        pq, pv = config.n_qk_points, config.n_v_points
        self.linear_qkv = nn.Linear(config.c_s, 3 * h * c, bias=False)
        self.linear_qk_points = nn.Linear(config.c_s, 2 * h * pq * 3)
        self.linear_v_points = nn.Linear(config.c_s, h * pv * 3)
        self.head_weights = nn.Parameter(torch.full((h,), SOFTPLUS_INV_ONE))
        self.linear_out = nn.Linear(h * (c + 4 * pv), config.c_s)
        self.key_dim = _round_up(c + 3 * pq + 1)
        self.value_dim = _round_up(c + 3 * pv)

    def project(
        self, s: torch.Tensor, frames: Rigid, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented queries, keys ``(B, H, T, key_dim)`` and values ``(B, H, T, value_dim)``.

        Args:
            s: normalized single features ``(B, T, c_s)``.
            frames: token frames :class:`Rigid` ``(B, T)``, internal units, relative to the
                reference point.
            rope: ``(cos, sin)`` from :func:`rotary_angles`.
        """
        cfg = self.config
        b, t, _ = s.shape
        h, c, pq, pv = cfg.n_heads, cfg.c_head, cfg.n_qk_points, cfg.n_v_points
        qkv = self.linear_qkv(s).view(b, t, 3, h, c).permute(2, 0, 3, 1, 4)  # (3, B, H, T, c)
        q, k = apply_rotary(qkv[:2], *rope)  # both in one call: half the small operations
        v = qkv[2]

        point_frames = frames.unsqueeze(-1)
        qk_pts = point_frames.apply(self.linear_qk_points(s).view(b, t, 2 * h * pq, 3))
        q_pts, k_pts = qk_pts.view(b, t, 2, h, pq * 3).permute(2, 0, 3, 1, 4)  # (B, H, T, 3P)
        v_pts = point_frames.apply(self.linear_v_points(s).view(b, t, h * pv, 3))
        v_pts = v_pts.view(b, t, h, pv * 3).transpose(1, 2)

        w_l = math.sqrt(1.0 / 2.0)
        w_c = math.sqrt(2.0 / (9.0 * pq))
        w = (F.softplus(self.head_weights) * w_c * w_l).to(s.dtype)[None, :, None, None]
        q_aug = torch.cat([q * (w_l / math.sqrt(c)), w * q_pts, w.expand(b, h, t, 1)], dim=-1)
        k_aug = torch.cat([k, k_pts, -0.5 * (k_pts**2).sum(-1, keepdim=True)], dim=-1)
        v_aug = torch.cat([v, v_pts], dim=-1)
        pad_k, pad_v = self.key_dim - q_aug.shape[-1], self.value_dim - v_aug.shape[-1]
        return F.pad(q_aug, (0, pad_k)), F.pad(k_aug, (0, pad_k)), F.pad(v_aug, (0, pad_v))

    def forward(
        self,
        s: torch.Tensor,
        frames: Rigid,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: AttentionContext,
        layer: int,
        queries: int | None = None,
    ) -> torch.Tensor:
        """``s (B, T, c_s)`` -> ``(B, T, c_s)``; ``layer`` indexes the cache. With ``queries``
        only the last ``queries`` tokens' outputs ``(B, queries, c_s)`` (every token still
        gives keys and values)."""
        cfg = self.config
        b, t, _ = s.shape
        h, c, pv = cfg.n_heads, cfg.c_head, cfg.n_v_points
        q, k, v = self.project(s, frames, rope)
        if queries is not None and queries < t:
            q, frames, t = q[:, :, t - queries :], frames[:, t - queries :], queries
        o = context.attend(layer, q, k, v).transpose(1, 2)  # (B, T, H, value_dim)
        o_scalar = o[..., :c].reshape(b, t, h * c)
        o_pts = o[..., c : c + 3 * pv].reshape(b, t, h * pv, 3)
        o_pts = frames.unsqueeze(-1).invert_apply(o_pts)
        o_norm = torch.sqrt((o_pts**2).sum(-1) + 1e-8)
        return self.linear_out(torch.cat([o_scalar, o_pts.reshape(b, t, -1), o_norm], dim=-1))
