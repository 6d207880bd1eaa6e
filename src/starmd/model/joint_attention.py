"""Joint spatio-temporal attention with rotary encodings and an invariant point term.

One attention call covers the single features of all tokens (frame group x residue) that a
query may see, with no space/time factorization (the factorized layout of the paper's ablation
restricts what each layer sees by key masks on the same call: :func:`factorized_contexts`). Per
head the query/key vectors are augmented so that ``scaled_dot_product_attention`` computes, up
to a per-query constant that softmax drops,

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

import copy
import functools
import math
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

    def restrict(self, near: torch.Tensor, own: torch.Tensor | None = None) -> AttentionContext:
        """The same context where a token sees, in frames other than its own, only the residues
        ``near (B, L, L)`` (bool, ``[query residue, key residue]``) allows, and in its own frame
        only those ``own (B, L, L)`` allows (None: every residue of its own frame)."""
        ...


def _allowed(
    own_frame: torch.Tensor, near: torch.Tensor, own: torch.Tensor | None, groups: tuple[int, int]
) -> torch.Tensor:
    """Token visibility ``(B, G L, S L)`` from group visibility ``own_frame (G L, S L)`` (True
    where query and key are the same frame) and the residue masks ``near``, ``own`` of
    :meth:`AttentionContext.restrict` tiled over ``groups = (G, S)``."""
    other = near.repeat(1, *groups)
    if own is None:
        return own_frame | other
    return torch.where(own_frame, own.repeat(1, *groups), other)


class MaskedContext:
    """Training layout: all tokens in one call, visibility from a dense or block mask."""

    def __init__(self, mask: torch.Tensor | BlockMask | None) -> None:
        self.mask = mask

    def restrict(self, near: torch.Tensor, own: torch.Tensor | None = None) -> MaskedContext:
        if not isinstance(self.mask, torch.Tensor):
            raise ValueError("attention restricted by residue needs a dense mask (sdpa)")
        b, l, _ = near.shape
        groups = self.mask.shape[-1] // l
        group = torch.arange(groups, device=near.device).repeat_interleave(l)
        own_frame = group[:, None] == group[None, :]  # (N, N)
        allowed = _allowed(own_frame, near, own, (groups, groups))  # (B, N, N)
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
        self.num_slots, self.key_mask = cache.visibility(slot)
        self.token_index = cache.token_index(slot)
        self._additive: torch.Tensor | None = None  # key_mask as 0 / -inf, made once per pass

    def restrict(self, near: torch.Tensor, own: torch.Tensor | None = None) -> CacheContext:
        b, l, _ = near.shape
        slots = [self.slot] if isinstance(self.slot, int) else self.slot
        g, n = len(slots), self.num_slots
        key_slot = torch.arange(n, device=near.device).repeat_interleave(l)  # (S L,)
        query_slot = torch.tensor(slots, device=near.device).repeat_interleave(l)  # (G L,)
        own_frame = query_slot[:, None] == key_slot[None, :]  # (G L, S L)
        allowed = _allowed(own_frame, near, own, (g, n))[:, None]  # (B, 1, G L, S L)
        restricted = copy.copy(self)
        restricted.key_mask = allowed if self.key_mask is None else allowed & self.key_mask
        restricted._additive = None
        return restricted

    def _mask(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The key mask as the additive float mask that attention would make of the bool one
        (0 where visible, -inf elsewhere; the same result), made once for all layers of the
        pass instead of once per layer."""
        if self.key_mask is None:
            return None
        if self._additive is None or self._additive.dtype != dtype:
            zeros = torch.zeros(self.key_mask.shape, dtype=dtype, device=self.key_mask.device)
            self._additive = zeros.masked_fill_(~self.key_mask, float("-inf"))
        return self._additive

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.write_tokens(layer, self.token_index, k, v)
        keys, values = self.cache.layer(layer, self.num_slots)
        mask = self._mask(q.dtype)
        if mask is not None and mask.shape[-2] > q.shape[-2]:  # queries of the last groups only
            mask = mask[..., mask.shape[-2] - q.shape[-2] :, :]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0)


class LayerContexts:
    """A different visibility per attention layer: layer ``i`` attends through
    ``contexts[i % len(contexts)]`` (the factorized layout: with two contexts and two layers per
    block, every block's first layer uses the first, its second layer the second)."""

    def __init__(self, contexts: list[AttentionContext]) -> None:
        self.contexts = contexts

    def restrict(self, near: torch.Tensor, own: torch.Tensor | None = None) -> LayerContexts:
        return LayerContexts([context.restrict(near, own) for context in self.contexts])

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.contexts[layer % len(self.contexts)].attend(layer, q, k, v)


def factorized_contexts(context: AttentionContext, residue_mask: torch.Tensor) -> LayerContexts:
    """Space, then time: a spatial context (a token sees every residue of its own frame and
    nothing of other frames) and a temporal one (a token sees only its own residue, in its own
    frame and in every other frame ``context`` lets it see).

    Args:
        residue_mask: ``(B, L)`` bool, False for padding. A padding query keeps every key of
            the temporal layer (its own residue is masked as a key everywhere, and a query with
            no key would need the kernels' handling of empty rows); its output is discarded.
    """
    b, l = residue_mask.shape
    nothing = torch.zeros(b, l, l, dtype=torch.bool, device=residue_mask.device)
    own_residue = torch.eye(l, dtype=torch.bool, device=residue_mask.device)[None]
    own_residue = own_residue | ~residue_mask[:, :, None]  # (B, L, L)
    return LayerContexts([context.restrict(nothing), context.restrict(own_residue, own_residue)])


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
