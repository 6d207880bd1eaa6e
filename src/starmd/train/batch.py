"""Collated dataset windows -> denoiser inputs (the conditioning and the clean frames).

Translations are centred on the initial structure's CA centroid, the origin of the diffusion's
R3 prior; rotations and torsions pass through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from starmd.model import ProteinConditioning
from starmd.model.denoiser import masked_centroid
from starmd.structure.rigid import Rigid


@dataclass(frozen=True)
class CleanWindow:
    """The clean target window: frames ``Rigid (B, K, L)`` (centred, Angstrom), torsions
    ``(B, K, L, 7)``, ``time_ps (B, K)``."""

    frames: Rigid
    torsions: torch.Tensor
    time_ps: torch.Tensor


def conditioning_from_batch(
    batch: dict[str, torch.Tensor],
) -> tuple[ProteinConditioning, torch.Tensor]:
    """Build :class:`ProteinConditioning`; returns it and the centre ``(B, 3)`` subtracted."""
    init = Rigid.from_tensor_7(batch["init_frames"])
    centre = masked_centroid(init.trans, batch["residue_mask"])
    init = Rigid(init.rots, init.trans - centre[:, None])
    cond = ProteinConditioning(
        aatype=batch["aatype"],
        residue_index=batch["residue_index"],
        chain_index=batch["chain_index"],
        residue_mask=batch["residue_mask"],
        init_frames=init,
        dt_ps=batch["dt_ps"].to(init.dtype),
        torsion_mask=batch["torsion_mask"],
    )
    return cond, centre


def clean_window_from_batch(batch: dict[str, torch.Tensor], centre: torch.Tensor) -> CleanWindow:
    frames = Rigid.from_tensor_7(batch["frames"])
    frames = Rigid(frames.rots, frames.trans - centre[:, None, None])
    return CleanWindow(frames, batch["torsions"], batch["time_ps"].to(frames.dtype))
