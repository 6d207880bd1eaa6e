"""STAR-MD paper table (docs/metrics.md, section A): coverage, tICA correlation, dynamics gaps.

Reference = one MD replica. Coordinates in Angstrom, superposed on the reference structure by CA.
Lags are in frames of a common time step shared by model and reference (see
:func:`common_time_step`), so curves are compared at matching physical lags.
"""

from __future__ import annotations

import numpy as np

from starmd.evaluate.divergence import histogram_2d, js_distance
from starmd.evaluate.geometry import paired_rmsd
from starmd.evaluate.tica import fit_tica, lagged_pairs, vamp2_score

COVERAGE_BINS = 10
MIN_TICA_PAIRS = 30
MAX_LAG_PAIRS = 2000


def common_time_step(dt_a_ps: float, dt_b_ps: float) -> tuple[float, int, int, bool]:
    """Coarser of two time steps and the strides that bring each trajectory onto it.

    Returns:
        (common dt ps, stride for a, stride for b, exact) where ``exact`` is False when the
        coarser step is not an integer multiple (within 1%) of the finer one (the lag then
        differs from the nominal one by the rounding, which the report states).
    """
    common = max(dt_a_ps, dt_b_ps)
    stride_a = max(1, round(common / dt_a_ps))
    stride_b = max(1, round(common / dt_b_ps))
    exact = (
        abs(stride_a * dt_a_ps - common) <= 0.01 * common
        and abs(stride_b * dt_b_ps - common) <= 0.01 * common
    )
    return common, stride_a, stride_b, exact


def lag_grid(n_frames: int, n_lags: int = 20) -> np.ndarray:
    """Roughly log-spaced integer lags from 1 to ``n_frames // 2`` (frames)."""
    top = max(1, n_frames // 2)
    return np.unique(np.round(np.geomspace(1, top, n_lags)).astype(int))


def coverage(
    reference_pcs: np.ndarray, generated_pcs: np.ndarray, bins: int = COVERAGE_BINS
) -> dict[str, float]:
    """Coverage of the reference's PC1-PC2 histogram by the generated frames.

    Both point sets are histogrammed on the same ``bins x bins`` grid spanning the reference's
    range of PC1 and PC2, plus one extra bin that collects generated points outside that range
    (so leaving the reference region costs JSD and precision instead of being dropped).

    Args:
        reference_pcs: ``(T, 2)`` projections (Angstrom) of the reference on its PC1, PC2.
        generated_pcs: ``(T', 2)`` projections of the generated frames on the same PCs.

    Returns:
        ``coverage_jsd`` (JS distance, natural log), ``coverage_recall`` (fraction of
        reference-occupied bins the generated frames occupy), ``coverage_precision`` (fraction
        of generated-occupied bins, the outside bin included, that the reference occupies),
        ``coverage_f1``.
    """
    ref = reference_pcs[np.isfinite(reference_pcs).all(axis=1)]
    edges = [np.linspace(ref[:, k].min(), ref[:, k].max(), bins + 1) for k in range(2)]
    for e in edges:  # a degenerate axis (static reference) still needs increasing edges
        if e[-1] <= e[0]:
            e[:] = np.linspace(e[0] - 1e-3, e[0] + 1e-3, bins + 1)
    h_ref = histogram_2d(ref, *edges)
    h_gen = histogram_2d(generated_pcs, *edges)
    occ_ref, occ_gen = h_ref > 0, h_gen > 0
    both = float((occ_ref & occ_gen).sum())
    recall = both / occ_ref.sum() if occ_ref.any() else np.nan
    precision = both / occ_gen.sum() if occ_gen.any() else np.nan
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    return {
        "coverage_jsd": js_distance(h_ref, h_gen),
        "coverage_recall": recall,
        "coverage_precision": precision,
        "coverage_f1": f1,
    }


def tica_residue_contributions(
    features: list[np.ndarray],
    feature_residue: np.ndarray,
    n_residues: int,
    lag: int,
    valid: list[np.ndarray] | None = None,
    min_pairs: int = MIN_TICA_PAIRS,
) -> tuple[np.ndarray | None, int]:
    """Per-residue contribution to the slowest tICA component.

    tICA is fitted on the given trajectories' own features (valid frames only); a residue's
    contribution is the sum over its features of the squared correlation between the feature
    and TIC-1 (structural loadings, independent of the TIC's scale and sign).

    Args:
        features: per trajectory ``(T_i, F)``.
        feature_residue: ``(F,)`` residue index of each feature.
        n_residues: number of residues.
        lag: frames.
        valid: per trajectory ``(T_i,)`` bool (frames that pass the validity checks).
        min_pairs: fewer valid lagged pairs than this gives ``None`` (N/A).

    Returns:
        (contributions ``(n_residues,)`` or None, number of valid lagged pairs); None also when
        the features have no variance.
    """
    x0, xt = lagged_pairs(features, lag, valid)
    if len(x0) < min_pairs:
        return None, len(x0)
    model = fit_tica(x0, xt)
    if model.eigenvectors.shape[1] == 0:  # features never move (e.g. a static structure)
        return None, len(x0)
    loadings = model.feature_loadings(0) ** 2
    return np.bincount(feature_residue, weights=loadings, minlength=n_residues), len(x0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two vectors over entries finite in both; NaN if either is constant (a
    spread below 1e-5, e.g. float32 noise of a static structure, counts as constant)."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2 or np.ptp(a) <= 1e-5 or np.ptp(b) <= 1e-5:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def rmsd_lag_curve(
    replicas: list[np.ndarray], lags: np.ndarray, max_pairs: int = MAX_LAG_PAIRS
) -> np.ndarray:
    """Mean RMSD (optimal superposition, Angstrom) between frames ``lag`` apart, per lag.

    Pairs are pooled over replicas; at most ``max_pairs`` evenly spaced pairs per replica and
    lag are used (deterministic), so the cost stays linear in the trajectory length.

    Args:
        replicas: ``(T_i, M, 3)`` Angstrom, on the common time step.
        lags: ``(L,)`` frames.

    Returns:
        ``(L,)`` Angstrom; NaN where no pair exists.
    """
    curve = np.full(len(lags), np.nan)
    for k, lag in enumerate(lags):
        values = []
        for x in replicas:
            n = len(x) - lag
            if n <= 0:
                continue
            starts = np.unique(np.linspace(0, n - 1, min(n, max_pairs)).astype(int))
            values.append(paired_rmsd(x[starts], x[starts + lag]))
        if values:
            pooled = np.concatenate(values)
            if np.isfinite(pooled).any():
                curve[k] = np.nanmean(pooled)
    return curve


def autocorrelation_curve(projections: list[np.ndarray], lags: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of a multi-dimensional projection, per lag.

    ``C(tau) = <(x_t - mu) . (x_{t+tau} - mu)> / <|x_t - mu|^2>`` with ``mu`` the mean over all
    finite frames of all replicas and averages over all finite pairs; 1 at lag 0.

    Args:
        projections: per replica ``(T_i, K)`` (e.g. on the reference's top PCs).
        lags: ``(L,)`` frames.

    Returns:
        ``(L,)`` dimensionless; NaN where no pair exists or the variance is 0.
    """
    pooled = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in projections])
    mu = pooled.mean(axis=0)
    variance = ((pooled - mu) ** 2).sum(axis=1).mean()
    curve = np.full(len(lags), np.nan)
    if variance <= 0:
        return curve
    centred = [p - mu for p in projections]
    for k, lag in enumerate(lags):
        x0, xt = lagged_pairs(centred, int(lag))
        if len(x0):
            curve[k] = float((x0 * xt).sum(axis=1).mean() / variance)
    return curve


def curve_gap(model: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference of two curves over the lags where both are defined."""
    ok = np.isfinite(model) & np.isfinite(reference)
    return float(np.abs(model[ok] - reference[ok]).mean()) if ok.any() else np.nan


def vamp2(projections: list[np.ndarray], lag: int, min_pairs: int = MIN_TICA_PAIRS) -> float:
    """VAMP-2 score of per-replica features ``(T_i, K)`` at ``lag`` frames; NaN if too few pairs."""
    x0, xt = lagged_pairs(projections, lag)
    if len(x0) < min_pairs:
        return np.nan
    return vamp2_score(x0, xt)
