"""Distances between distributions: Jensen-Shannon, Gaussian and empirical 2-Wasserstein.

Every table of the report states the same convention: **JS distance** (the square root of the
Jensen-Shannon divergence) with the **natural logarithm**, i.e. what
``scipy.spatial.distance.jensenshannon`` returns, in [0, sqrt(ln 2)] = [0, 0.833]. MDGen and the
STAR-MD paper report this quantity.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def js_distance(p: np.ndarray, q: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Jensen-Shannon distance between two histograms (natural log).

    ``JS(p, q) = sqrt(0.5 KL(p || m) + 0.5 KL(q || m))`` with ``m = (p + q) / 2``, after each
    histogram is normalised to sum 1 (over ``axis``, or over all entries when ``axis`` is None).

    Args:
        p, q: non-negative counts or probabilities of the same shape.
        axis: axis holding the bins (None: the whole array is one histogram).

    Returns:
        JS distance in [0, sqrt(ln 2)]; NaN where either histogram is empty.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    sp = p.sum(axis=axis, keepdims=axis is not None)
    sq = q.sum(axis=axis, keepdims=axis is not None)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / sp
        q = q / sq
        m = 0.5 * (p + q)
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0)
    div = 0.5 * (kl_p.sum(axis=axis) + kl_q.sum(axis=axis))
    out = np.sqrt(np.clip(div, 0.0, None))
    empty = (np.asarray(sp) == 0) | (np.asarray(sq) == 0)
    if axis is not None:
        empty = np.squeeze(empty, axis=axis)
    out = np.where(empty, np.nan, out)
    return float(out) if np.ndim(out) == 0 else out


def _sqrt_spd(matrices: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrices)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))[..., None, :]) @ np.swapaxes(
        vectors, -1, -2
    )


def gaussian_w2_parts(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Squared 2-Wasserstein distance between Gaussians, split in two parts (batched).

    ``W2^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``.

    Args:
        mu1, mu2: means ``(..., d)``.
        cov1, cov2: covariances ``(..., d, d)``, symmetric positive semi-definite.

    Returns:
        (translation part ``|mu1 - mu2|^2``, variance part = the trace term), each ``(...)``,
        in the units of the inputs squared.
    """
    translation = ((mu1 - mu2) ** 2).sum(axis=-1)
    root1 = _sqrt_spd(cov1)
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_cross = np.sqrt(np.clip(cross, 0.0, None)).sum(axis=-1)
    variance = np.trace(cov1, axis1=-2, axis2=-1) + np.trace(cov2, axis1=-2, axis2=-1)
    return translation, np.clip(variance - 2.0 * trace_cross, 0.0, None)


def assignment_w2(a: np.ndarray, b: np.ndarray) -> float:
    """Exact 2-Wasserstein distance between two equal-size point clouds (uniform weights).

    Solved as a linear assignment on squared Euclidean costs:
    ``W2 = sqrt(min_perm mean_i |a_i - b_perm(i)|^2)``.

    Args:
        a, b: ``(n, d)`` points, same ``n``.

    Returns:
        W2 in the units of the points.
    """
    if len(a) != len(b):
        raise ValueError("assignment_w2 needs point sets of equal size")
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def histogram_2d(
    points: np.ndarray, edges_x: np.ndarray, edges_y: np.ndarray, outside_bin: bool = True
) -> np.ndarray:
    """Counts of 2D points on a fixed grid, optionally with one extra bin for points outside.

    Args:
        points: ``(T, 2)``; non-finite rows are ignored.
        edges_x, edges_y: bin edges (closed on the last edge).
        outside_bin: append the count of points outside the grid as the last entry.

    Returns:
        flat counts ``(nx * ny [+ 1],)``.
    """
    points = points[np.isfinite(points).all(axis=1)]
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=(edges_x, edges_y))
    flat = counts.ravel()
    if outside_bin:
        flat = np.append(flat, len(points) - flat.sum())
    return flat
