"""Reference distributions of backbone and side-chain torsions, and a smooth Ramachandran term.

The reference histograms (``data/README.md``: MDAnalysis's copies, computed on the Lovell et al.
2003 structure set) define what the evaluation calls an outlier: a non-glycine residue whose
(phi, psi) fall in a 4-degree bin below the 99% contour (count < 1), and a residue whose
(chi1, chi2) fall in a 6-degree Janin bin below its 99% contour. Both the evaluation
(:mod:`starmd.evaluate.validity`) and the rollout's refinement (:mod:`starmd.sample.refine`)
read them from here.

For refinement the allowed region is turned into a differentiable field:
:func:`ramachandran_distance_deg` is the signed distance (degrees, on the torus) from (phi, psi)
to the edge of the 99% region: negative inside, positive outside, growing linearly with how far
an outlier is from the nearest allowed bin, so its gradient points there even deep inside a
forbidden region (a smoothed log-density would be flat there). It is an exact Euclidean
distance transform between bin centres, linearly interpolated in between; the zero level lies
on the bin edges to within the interpolation (about 1 degree).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

RAMA_BIN_DEG = 4.0
JANIN_BIN_DEG = 6.0


@cache
def reference_histograms() -> tuple[np.ndarray, np.ndarray]:
    """The Ramachandran ``(90, 90)`` histogram indexed ``[psi_bin, phi_bin]`` (4-degree bins on
    [-180, 180)) and the Janin ``(60, 60)`` one indexed ``[chi2_bin, chi1_bin]`` (6-degree
    bins on [0, 360)); counts, >= 1 inside the 99% contour."""
    data = resources.files("starmd.structure") / "data"
    with (data / "rama_ref_data.npy").open("rb") as fh:
        rama = np.load(fh)
    with (data / "janin_ref_data.npy").open("rb") as fh:
        janin = np.load(fh)
    return rama, janin


def ramachandran_allowed(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Whether (phi, psi) in radians lie inside the 99% reference contour; same shape, bool."""
    rama, _ = reference_histograms()
    phi, psi = np.nan_to_num(phi), np.nan_to_num(psi)  # undefined angles: judged elsewhere
    i = (np.floor((np.degrees(phi) + 180.0) / RAMA_BIN_DEG).astype(int)) % 90
    j = (np.floor((np.degrees(psi) + 180.0) / RAMA_BIN_DEG).astype(int)) % 90
    return rama[j, i] >= 1.0


def janin_allowed(chi1: np.ndarray, chi2: np.ndarray) -> np.ndarray:
    """Whether (chi1, chi2) in radians lie inside the 99% Janin reference contour; bool."""
    _, janin = reference_histograms()
    chi1, chi2 = np.nan_to_num(chi1), np.nan_to_num(chi2)
    i = (np.floor((np.degrees(chi1) % 360.0) / JANIN_BIN_DEG).astype(int)) % 60
    j = (np.floor((np.degrees(chi2) % 360.0) / JANIN_BIN_DEG).astype(int)) % 60
    return janin[j, i] >= 1.0


@cache
def _signed_distance_grid() -> np.ndarray:
    """``(90, 90)`` signed distance (degrees) of each bin centre to the allowed region's edge,
    indexed ``[psi_bin, phi_bin]``; periodic (computed on a 3 x 3 tiling, centre kept)."""
    rama, _ = reference_histograms()
    allowed = np.tile(rama >= 1.0, (3, 3))
    n = len(rama)
    centre = (slice(n, 2 * n), slice(n, 2 * n))
    # distance between bin centres to the nearest bin of the other kind, less half a bin: the
    # edge between two bins is where the field crosses zero
    to_allowed = distance_transform_edt(~allowed)[centre] * RAMA_BIN_DEG
    to_forbidden = distance_transform_edt(allowed)[centre] * RAMA_BIN_DEG
    half = RAMA_BIN_DEG / 2
    return np.where(allowed[centre], -(to_forbidden - half), to_allowed - half)


@cache
def _grid_tensor(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`_signed_distance_grid` as a tensor, made once per dtype and device (it is read
    at every refinement and polish step)."""
    return torch.as_tensor(_signed_distance_grid(), dtype=dtype, device=device)


def ramachandran_distance_deg(phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Signed distance (degrees) from (phi, psi) (radians, any shape) to the edge of the 99%
    Ramachandran region: > 0 for an outlier (how far to the nearest allowed angles), < 0
    inside. Bilinear between bin centres on the torus, so differentiable almost everywhere."""
    grid = _grid_tensor(phi.dtype, phi.device)
    n = grid.shape[0]
    # continuous bin coordinates with bin centres at integers
    u = (torch.rad2deg(phi) + 180.0) / RAMA_BIN_DEG - 0.5
    v = (torch.rad2deg(psi) + 180.0) / RAMA_BIN_DEG - 0.5
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    i0, j0 = u0.long() % n, v0.long() % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    return (
        (1 - fu) * (1 - fv) * grid[j0, i0]
        + fu * (1 - fv) * grid[j0, i1]
        + (1 - fu) * fv * grid[j1, i0]
        + fu * fv * grid[j1, i1]
    )


def judged_residue_atoms(topology) -> np.ndarray:
    """The atoms C(i-1), N, CA, C, N(i+1) ``(K, 5)`` of every residue of an mdtraj topology whose
    (phi, psi) the Ramachandran check judges: not glycine, bonded to both neighbours (same
    chain, consecutive residue numbers), all five atoms present."""
    named = {(atom.residue.index, atom.name): atom.index for atom in topology.atoms}
    residues = list(topology.residues)

    def bonded(r1, r2) -> bool:
        return r1.chain.index == r2.chain.index and r2.resSeq - r1.resSeq == 1

    rows = []
    for prev, residue, nxt in zip(residues[:-2], residues[1:-1], residues[2:], strict=True):
        keys = [(prev.index, "C")] + [(residue.index, n) for n in ("N", "CA", "C")]
        keys.append((nxt.index, "N"))
        if (
            residue.name != "GLY"
            and bonded(prev, residue)
            and bonded(residue, nxt)
            and all(k in named for k in keys)
        ):
            rows.append([named[k] for k in keys])
    return np.array(rows, dtype=np.int64).reshape(-1, 5)
