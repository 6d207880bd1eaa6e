"""Optimal superposition (Kabsch) of frames on a reference, streamed in chunks.

Used when writing generated trajectories (superposed on frame 0) and by every evaluation metric.
Angstrom or nm alike (the unit of the input).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK = 512


def chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    """Slices covering ``range(n)`` in blocks of ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def kabsch_rotations(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotations ``(B, 3, 3)`` that best map centred ``mobile (B, M, 3)`` on centred ``target``."""
    h = np.einsum("bmi,bmj->bij", mobile, target)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("bij,bjk->bik", u, vt)))
    u[:, :, -1] *= d[:, None]
    return np.einsum("bij,bjk->bik", u, vt)


def superpose(frames: np.ndarray, reference: np.ndarray, fit_atoms: np.ndarray) -> np.ndarray:
    """Superpose every frame on ``reference`` by the atoms ``fit_atoms`` (Kabsch).

    Args:
        frames: ``(T, N, 3)`` Angstrom.
        reference: ``(N, 3)`` Angstrom.
        fit_atoms: indices of the atoms to fit (e.g. CA).

    Returns:
        ``(T, N, 3)`` float32 superposed copy; a frame with any non-finite coordinate comes
        back all NaN.
    """
    out = np.empty_like(frames, dtype=np.float32)
    ref_fit = reference[fit_atoms].astype(np.float64)
    ref_center = ref_fit.mean(axis=0)
    ref_fit = ref_fit - ref_center
    for block in chunks(len(frames)):
        x = frames[block].astype(np.float64)
        finite = np.isfinite(x).all(axis=(1, 2))
        fit = x[:, fit_atoms]
        center = fit.mean(axis=1, keepdims=True)
        rot = np.zeros((len(x), 3, 3))
        if finite.any():
            rot[finite] = kabsch_rotations(fit[finite] - center[finite], ref_fit[None])
        moved = np.einsum("bni,bij->bnj", x - center, rot) + ref_center
        moved[~finite] = np.nan
        out[block] = moved
    return out
