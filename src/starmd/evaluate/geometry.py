"""Coordinate geometry shared by the metrics: superposition, RMSD, RMSF, Rg, PCA, dihedrals.

All functions take Angstrom and stream over frames in chunks so memory stays linear in the
trajectory size. Frames with non-finite coordinates propagate NaN instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starmd.structure.superpose import chunks, kabsch_rotations


def paired_rmsd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMSD after optimal superposition between paired frames.

    Args:
        a, b: ``(T, N, 3)`` Angstrom, or ``b`` of shape ``(N, 3)`` for one reference frame.

    Returns:
        ``(T,)`` Angstrom; NaN where either frame is non-finite.
    """
    if b.ndim == 2:
        b = np.broadcast_to(b, a.shape)
    out = np.full(len(a), np.nan)
    for block in chunks(len(a)):
        x = a[block].astype(np.float64)
        y = b[block].astype(np.float64)
        finite = np.isfinite(x).all(axis=(1, 2)) & np.isfinite(y).all(axis=(1, 2))
        if not finite.any():
            continue
        x = x[finite] - x[finite].mean(axis=1, keepdims=True)
        y = y[finite] - y[finite].mean(axis=1, keepdims=True)
        rot = kabsch_rotations(x, y)
        diff = np.einsum("bni,bij->bnj", x, rot) - y
        out[np.flatnonzero(finite) + block.start] = np.sqrt((diff**2).sum(axis=2).mean(axis=1))
    return out


def rmsf(frames: np.ndarray) -> np.ndarray:
    """Root-mean-square fluctuation of each atom about its mean position.

    Two streaming passes over the frames (mean, then squared deviations), so memory stays at
    one chunk whatever the trajectory length.

    Args:
        frames: ``(T, N, 3)`` Angstrom, already superposed; non-finite frames are skipped.

    Returns:
        ``(N,)`` Angstrom, ``sqrt(mean_t |x_t - <x>|^2)``.
    """
    total = np.zeros(frames.shape[1:])
    count = 0
    for block in chunks(len(frames)):
        x = frames[block].astype(np.float64)
        x = x[np.isfinite(x).all(axis=(1, 2))]
        total += x.sum(axis=0)
        count += len(x)
    if count == 0:
        return np.full(frames.shape[1], np.nan)
    mean = total / count
    squares = np.zeros(frames.shape[1])
    for block in chunks(len(frames)):
        x = frames[block].astype(np.float64)
        x = x[np.isfinite(x).all(axis=(1, 2))]
        squares += ((x - mean) ** 2).sum(axis=(0, 2))
    return np.sqrt(squares / count)


def radius_of_gyration(frames: np.ndarray) -> np.ndarray:
    """Unweighted radius of gyration per frame, ``(T,)`` Angstrom, from ``(T, N, 3)``."""
    out = np.empty(len(frames))
    for block in chunks(len(frames)):
        x = frames[block].astype(np.float64)
        out[block] = np.sqrt(((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=2).mean(axis=1))
    return out


@dataclass(frozen=True)
class PCA:
    """Principal components of flattened coordinates.

    Attributes:
        mean: ``(D,)`` mean, Angstrom.
        components: ``(K, D)`` orthonormal rows, by decreasing variance.
        variances: ``(K,)`` Angstrom^2.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray

    def project(self, frames: np.ndarray) -> np.ndarray:
        """Projections ``(T, K)`` (Angstrom) of frames ``(T, M, 3)`` or ``(T, D)``."""
        flat = frames.reshape(len(frames), -1)
        out = np.empty((len(flat), len(self.components)))
        for block in chunks(len(flat), 4096):
            out[block] = (flat[block].astype(np.float64) - self.mean) @ self.components.T
        return out


def fit_pca(frames: np.ndarray, n_components: int) -> PCA:
    """PCA of frames ``(T, M, 3)`` flattened to ``(T, 3M)``; covariance accumulated in chunks."""
    flat = frames.reshape(len(frames), -1)
    finite = np.isfinite(flat).all(axis=1)
    flat = flat[finite]
    mean = flat.mean(axis=0, dtype=np.float64)
    cov = np.zeros((flat.shape[1], flat.shape[1]))
    for block in chunks(len(flat), 4096):
        x = flat[block].astype(np.float64) - mean
        cov += x.T @ x
    cov /= max(len(flat) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:n_components]
    return PCA(mean, vectors[:, order].T, np.clip(values[order], 0.0, None))


def dihedrals(frames: np.ndarray, quartets: np.ndarray) -> np.ndarray:
    """Dihedral angles (radians, in [-pi, pi]) of atom quartets, IUPAC sign convention.

    Args:
        frames: ``(T, N, 3)``.
        quartets: ``(K, 4)`` atom indices.

    Returns:
        ``(T, K)`` radians.
    """
    out = np.empty((len(frames), len(quartets)))
    if len(quartets) == 0:
        return out
    for block in chunks(len(frames)):
        p = frames[block][:, quartets].astype(np.float64)
        b0, b1, b2 = p[:, :, 0] - p[:, :, 1], p[:, :, 2] - p[:, :, 1], p[:, :, 3] - p[:, :, 2]
        with np.errstate(invalid="ignore", divide="ignore"):  # degenerate quartets give NaN
            n1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
        v = b0 - (b0 * n1).sum(-1, keepdims=True) * n1
        w = b2 - (b2 * n1).sum(-1, keepdims=True) * n1
        x = (v * w).sum(-1)
        y = (np.cross(n1, v) * w).sum(-1)
        out[block] = np.arctan2(y, x)
    return out
