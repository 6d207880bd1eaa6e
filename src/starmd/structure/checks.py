"""Fast per-frame CA health checks (used while generating; the evaluation suite reports the full
validity metrics). Thresholds follow the STAR-MD validity definitions (docs/metrics.md,
section A)."""

from __future__ import annotations

import torch

CA_CLASH_A = 3.0
"""Two CA atoms at least two residues apart closer than this (Angstrom) clash."""
CA_BREAK_A = 4.5
"""Bonded consecutive CA atoms farther apart than this (Angstrom) are a chain break."""


def ca_health(ca: torch.Tensor, linked_prev: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-frame counts of problems.

    Args:
        ca: ``(B, L, 3)`` CA positions, Angstrom.
        linked_prev: ``(L,)`` bool, residue i is bonded to i-1 in the input.

    Returns:
        ``nan (B,)`` bool (any non-finite coordinate), ``breaks (B,)`` and ``clashes (B,)`` int.
    """
    finite = torch.isfinite(ca).all(-1)
    nan = ~finite.all(-1)
    ca = torch.where(finite[..., None], ca, torch.zeros_like(ca))
    bond = torch.linalg.vector_norm(ca[:, 1:] - ca[:, :-1], dim=-1)
    breaks = ((bond > CA_BREAK_A) & linked_prev[1:]).sum(-1)
    dist = torch.cdist(ca, ca)
    index = torch.arange(ca.shape[1], device=ca.device)
    apart = (index[:, None] - index[None, :]).abs() >= 2
    close = (dist < CA_CLASH_A) & apart & finite[:, :, None] & finite[:, None, :]
    clashes = torch.triu(close, diagonal=1).sum((-1, -2))
    return {"nan": nan, "breaks": breaks, "clashes": clashes}
