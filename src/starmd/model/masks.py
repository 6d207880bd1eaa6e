"""Attention layouts of the training forward (the paper's clean + noisy window scheme).

The token sequence is ``[c_0 .. c_{K-1}, n_0 .. n_{K-1}]``, each group ``L`` tokens long
(group-major: token ``g * L + i`` is residue ``i`` of group ``g``). Visibility between groups:

* clean ``c_t`` sees clean ``c_s`` for ``s <= t``;
* noisy ``n_t`` sees clean ``c_s`` for ``s < t`` and itself;
* with a context window ``W`` only the last ``W`` clean groups before ``t`` (``s >= t - W``)
  stay visible, plus ``c_0`` when ``sink`` is set;
* padding residues are masked as keys.

This is exactly what a :class:`~starmd.model.kv_cache.KVCache` holds at rollout, so the two paths
agree. :func:`training_attention_mask` materializes a boolean ``(B, 1, N, N)`` mask with
``N = 2 K L`` (16 MB per protein at K = 8, L = 256; acceptable at training sizes);
:func:`training_block_mask` builds a FlexAttention block mask instead, which never materializes
``N x N`` and skips fully masked blocks once ``flex_attention`` is compiled.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask


def _in_window(
    query_time: torch.Tensor, key_time: torch.Tensor, window: int | None, sink: bool
) -> torch.Tensor:
    """Whether frame ``key_time`` is inside the context window of frame ``query_time``."""
    if window is None:
        shape = np.broadcast_shapes(query_time.shape, key_time.shape)  # torch's imports sympy
        return torch.ones(shape, dtype=torch.bool, device=query_time.device)
    visible = key_time >= query_time - window
    if sink:
        visible = visible | (key_time == 0)
    return visible


def training_group_mask(
    num_frames: int,
    window: int | None = None,
    sink: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Group visibility ``(2K, 2K)`` bool: entry ``[query group, key group]``.

    Groups ``0..K-1`` are the clean copies, ``K..2K-1`` the noisy copies of frames ``0..K-1``.
    """
    if window is not None and window < 1:
        raise ValueError(f"context window must be >= 1 or None, got {window}")
    k = num_frames
    t = torch.arange(k, device=device)
    q_time, k_time = t[:, None], t[None, :]
    in_window = _in_window(q_time, k_time, window, sink).to(device)
    clean_to_clean = (k_time <= q_time) & in_window
    noisy_to_clean = (k_time < q_time) & in_window
    noisy_to_noisy = torch.eye(k, dtype=torch.bool, device=device)
    top = torch.cat([clean_to_clean, torch.zeros_like(clean_to_clean)], dim=1)
    bottom = torch.cat([noisy_to_clean, noisy_to_noisy], dim=1)
    return torch.cat([top, bottom], dim=0)


def training_attention_mask(
    num_frames: int, residue_mask: torch.Tensor, window: int | None = None, sink: bool = False
) -> torch.Tensor:
    """Dense boolean mask ``(B, 1, N, N)``, ``N = 2 K L``, True = may attend.

    Args:
        num_frames: ``K``, frames in the window.
        residue_mask: ``(B, L)`` bool, False for padding.
    """
    b, l = residue_mask.shape
    groups = training_group_mask(num_frames, window, sink, residue_mask.device)
    tokens = groups.repeat_interleave(l, dim=0).repeat_interleave(l, dim=1)
    key_mask = residue_mask.repeat(1, 2 * num_frames)  # (B, N)
    return tokens[None, None] & key_mask[:, None, None, :]


def training_block_mask(
    num_frames: int,
    residue_mask: torch.Tensor,
    window: int | None = None,
    sink: bool = False,
    block_size: int = 128,
) -> BlockMask:
    """The same layout as a FlexAttention :class:`BlockMask` (no ``N x N`` tensor)."""
    b, l = residue_mask.shape
    n = 2 * num_frames * l
    groups = training_group_mask(num_frames, window, sink, residue_mask.device)
    key_mask = residue_mask.repeat(1, 2 * num_frames)

    def mask_mod(batch, head, q_idx, kv_idx):  # noqa: ARG001 - FlexAttention signature
        return groups[q_idx // l, kv_idx // l] & key_mask[batch, kv_idx]

    return create_block_mask(
        mask_mod, b, None, n, n, device=residue_mask.device, BLOCK_SIZE=block_size
    )
