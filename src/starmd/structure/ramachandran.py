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

import math
from functools import cache
from importlib import resources

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

RAMA_BIN_DEG = 4.0
JANIN_BIN_DEG = 6.0
STAGGERED_TOLERANCE_DEG = 40.0
"""chi1 of a residue with no chi2 rotamer library (CYS, SER, THR, VAL) must lie this close to a
staggered rotamer."""
JANIN_EXCLUDED = frozenset({"ALA", "CYS", "GLY", "PRO", "SER", "THR", "VAL"})
CHI1_ONLY = frozenset({"CYS", "SER", "THR", "VAL"})


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


@cache
def allowed_grid() -> np.ndarray:
    """The 99% Ramachandran region as a bool ``(90, 90)`` grid indexed ``[psi_bin, phi_bin]``
    (the bins of :func:`reference_histograms`), read-only: cached."""
    rama, _ = reference_histograms()
    grid = rama >= 1.0
    grid.flags.writeable = False
    return grid


def ramachandran_allowed(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Whether (phi, psi) in radians lie inside the 99% reference contour; same shape, bool."""
    phi, psi = np.nan_to_num(phi), np.nan_to_num(psi)  # undefined angles: judged elsewhere
    i = (np.floor((np.degrees(phi) + 180.0) / RAMA_BIN_DEG).astype(int)) % 90
    j = (np.floor((np.degrees(psi) + 180.0) / RAMA_BIN_DEG).astype(int)) % 90
    return allowed_grid()[j, i]


def janin_allowed(chi1: np.ndarray, chi2: np.ndarray) -> np.ndarray:
    """Whether (chi1, chi2) in radians lie inside the 99% Janin reference contour; bool."""
    _, janin = reference_histograms()
    chi1, chi2 = np.nan_to_num(chi1), np.nan_to_num(chi2)
    i = (np.floor((np.degrees(chi1) % 360.0) / JANIN_BIN_DEG).astype(int)) % 60
    j = (np.floor((np.degrees(chi2) % 360.0) / JANIN_BIN_DEG).astype(int)) % 60
    return janin[j, i] >= 1.0


def _signed_distance(allowed: np.ndarray, bin_deg: float) -> np.ndarray:
    """Signed distance (degrees) of each bin centre of a periodic ``allowed`` grid to the
    region's edge: the distance between bin centres to the nearest bin of the other kind, less
    half a bin (the edge between two bins is where the field crosses zero); computed on a 3 x 3
    tiling, centre kept."""
    tiled = np.tile(allowed, (3, 3))
    n, m = allowed.shape
    centre = (slice(n, 2 * n), slice(m, 2 * m))
    to_allowed = distance_transform_edt(~tiled)[centre] * bin_deg
    to_forbidden = distance_transform_edt(tiled)[centre] * bin_deg
    half = bin_deg / 2
    return np.where(allowed, -(to_forbidden - half), to_allowed - half)


@cache
def _grid_tensor(kind: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Signed distance grid of the Ramachandran (``"rama"``, ``(90, 90)`` indexed ``[psi_bin,
    phi_bin]``) or Janin (``"janin"``, ``(60, 60)`` indexed ``[chi2_bin, chi1_bin]``) 99%
    region, made once per kind, dtype and device (it is read at every refinement and polish
    step)."""
    rama, janin = reference_histograms()
    if kind == "rama":
        grid = _signed_distance(rama >= 1.0, RAMA_BIN_DEG)
    else:
        grid = _signed_distance(janin >= 1.0, JANIN_BIN_DEG)
    return torch.as_tensor(grid, dtype=dtype, device=device)


def _bilinear(kind: str, first: torch.Tensor, second: torch.Tensor, gradient: bool):
    """Signed distance at angles (radians) ``first`` (phi or chi1) and ``second`` (psi or chi2)
    on a grid of :func:`_grid_tensor`, bilinear between bin centres on the torus, and its
    partial derivatives (degrees per radian) if asked (else None)."""
    grid = _grid_tensor(kind, first.dtype, first.device)
    n = grid.shape[0]
    bin_deg, origin = (RAMA_BIN_DEG, -180.0) if kind == "rama" else (JANIN_BIN_DEG, 0.0)
    # continuous bin coordinates with bin centres at integers
    u = (torch.rad2deg(first) - origin) / bin_deg - 0.5
    v = (torch.rad2deg(second) - origin) / bin_deg - 0.5
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    i0, j0 = u0.long() % n, v0.long() % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    g00, g01, g10, g11 = grid[j0, i0], grid[j0, i1], grid[j1, i0], grid[j1, i1]
    distance = (1 - fu) * (1 - fv) * g00 + fu * (1 - fv) * g01 + (1 - fu) * fv * g10 + fu * fv * g11
    if not gradient:
        return distance, None, None
    per_radian = 180.0 / math.pi / bin_deg  # bin coordinates per radian
    d_first = ((1 - fv) * (g01 - g00) + fv * (g11 - g10)) * per_radian
    d_second = ((1 - fu) * (g10 - g00) + fu * (g11 - g01)) * per_radian
    return distance, d_first, d_second


def ramachandran_distance_deg(phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Signed distance (degrees) from (phi, psi) (radians, any shape) to the edge of the 99%
    Ramachandran region: > 0 for an outlier (how far to the nearest allowed angles), < 0
    inside. Bilinear between bin centres on the torus, so differentiable almost everywhere."""
    return _bilinear("rama", phi, psi, gradient=False)[0]


def distance_grid(kind: str) -> np.ndarray:
    """The signed-distance grid behind :func:`ramachandran_distance_deg` (``kind="rama"``,
    ``(90, 90)`` indexed ``[psi_bin, phi_bin]``, bin ``k`` centred at ``-180 + (k + 0.5) *
    RAMA_BIN_DEG`` degrees) or :func:`janin_distance_slope` (``"janin"``, ``(60, 60)`` indexed
    ``[chi2_bin, chi1_bin]``, centres at ``(k + 0.5) * JANIN_BIN_DEG``), float64, for compiled
    code (read-only: it is cached)."""
    return _grid_tensor(kind, torch.float64, torch.device("cpu")).numpy()


def ramachandran_distance_slope(
    phi: torch.Tensor, psi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ramachandran_distance_deg` and its partial derivatives with respect to phi and
    psi (degrees per radian), for minimisers that assemble gradients by hand."""
    return _bilinear("rama", phi, psi, gradient=True)


def janin_distance_slope(
    chi1: torch.Tensor, chi2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signed distance (degrees) from (chi1, chi2) (radians) to the edge of the 99% Janin
    region (> 0 for the evaluation's rotamer outlier, :func:`janin_allowed`), built as the
    Ramachandran field is, and its partial derivatives (degrees per radian)."""
    return _bilinear("janin", chi1, chi2, gradient=True)


def staggered_distance_slope(chi1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far (degrees) chi1 (radians) lies beyond :data:`STAGGERED_TOLERANCE_DEG` of the
    nearest staggered rotamer (60, 180, 300 degrees; > 0 for the evaluation's outlier of a
    chi1-only residue), and its derivative (degrees per radian)."""
    degrees = torch.rad2deg(chi1)
    offsets = torch.stack(
        [torch.remainder(degrees - c + 180.0, 360.0) - 180.0 for c in (60.0, 180.0, 300.0)]
    )
    offset = offsets.gather(0, offsets.abs().argmin(0, keepdim=True))[0]
    return offset.abs() - STAGGERED_TOLERANCE_DEG, torch.sign(offset) * 180.0 / math.pi


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


def judged_chi_atoms(topology) -> tuple[np.ndarray, np.ndarray]:
    """The side-chain torsions the rotamer check judges in an mdtraj topology: (chi1, chi2)
    quartet pairs ``(K, 2, 4)`` of Janin residues, and chi1 quartets ``(K', 4)`` of the
    chi1-only residues (CYS, SER, THR, VAL)."""
    import mdtraj as md

    dummy = md.Trajectory(np.zeros((1, topology.n_atoms, 3), dtype=np.float32), topology)
    chi1_idx, _ = md.compute_chi1(dummy)
    chi2_idx, _ = md.compute_chi2(dummy)
    chi2_by_residue = {topology.atom(q[1]).residue.index: q for q in chi2_idx}
    pairs, singles = [], []
    for q in chi1_idx:
        residue = topology.atom(q[1]).residue
        if residue.name in CHI1_ONLY:
            singles.append(q)
        elif residue.name not in JANIN_EXCLUDED and residue.index in chi2_by_residue:
            pairs.append((q, chi2_by_residue[residue.index]))
    return (
        np.array(pairs, dtype=np.int64).reshape(-1, 2, 4),
        np.array(singles, dtype=np.int64).reshape(-1, 4),
    )
