"""MDGen's dynamics metrics (docs/metrics.md, section C): torsion and tICA JSDs, decorrelation
times, MSM metastable-state occupancies.

Reference = the MD replicas. Model and reference trajectories are first brought onto a common
time step (the coarser of the two, see :func:`starmd.evaluate.paper.common_time_step`) so every
lag is the same physical time for both. JSD means JS distance, natural log
(:func:`starmd.evaluate.divergence.js_distance`).
"""

from __future__ import annotations

import numpy as np

from starmd.evaluate.divergence import js_distance
from starmd.evaluate.features import Torsions
from starmd.evaluate.tica import TICAModel, fit_tica, lagged_pairs
from starmd.structure.superpose import chunks

TORSION_BINS = 100
JOINT_BINS = 50
MSM_CLUSTERS = 100
MSM_STATES = 10
MSM_TICS = 4
BACKBONE_KINDS = ("phi", "psi")
SIDECHAIN_KINDS = ("chi1", "chi2", "chi3", "chi4")


def torsion_histograms(angles: np.ndarray, bins: int = TORSION_BINS) -> np.ndarray:
    """Counts ``(K, bins)`` of each torsion column of ``angles (T, K)`` on [-pi, pi]."""
    angles = angles[np.isfinite(angles).all(axis=1)]
    index = np.clip(np.floor((angles + np.pi) / (2 * np.pi) * bins).astype(int), 0, bins - 1)
    k = angles.shape[1]
    flat = (np.arange(k)[None, :] * bins + index).ravel()
    return np.bincount(flat, minlength=k * bins).reshape(k, bins).astype(float)


def torsion_jsds(
    reference_angles: np.ndarray, generated_angles: np.ndarray, torsions: Torsions
) -> dict[str, float | np.ndarray]:
    """Per-torsion JS distance of 100-bin histograms on [-pi, pi], and their means.

    Returns:
        ``torsion_jsd`` (K,), ``torsion_jsd_backbone`` (mean over phi/psi),
        ``torsion_jsd_sidechain`` (mean over chi1-chi4), ``phi_psi_jsd`` (mean over residues of
        the JS distance of joint (phi, psi) 50 x 50 histograms).
    """
    per = js_distance(
        torsion_histograms(reference_angles), torsion_histograms(generated_angles), axis=1
    )
    backbone = np.isin(torsions.kinds, BACKBONE_KINDS)
    sidechain = np.isin(torsions.kinds, SIDECHAIN_KINDS)
    return {
        "torsion_jsd": per,
        "torsion_jsd_backbone": float(np.nanmean(per[backbone])) if backbone.any() else np.nan,
        "torsion_jsd_sidechain": float(np.nanmean(per[sidechain])) if sidechain.any() else np.nan,
        "phi_psi_jsd": _phi_psi_jsd(reference_angles, generated_angles, torsions),
    }


def _phi_psi_jsd(reference: np.ndarray, generated: np.ndarray, torsions: Torsions) -> float:
    phi = {
        r: k
        for k, (r, kind) in enumerate(zip(torsions.residues, torsions.kinds, strict=True))
        if kind == "phi"
    }
    psi = {
        r: k
        for k, (r, kind) in enumerate(zip(torsions.residues, torsions.kinds, strict=True))
        if kind == "psi"
    }
    edges = np.linspace(-np.pi, np.pi, JOINT_BINS + 1)
    values = []
    for residue in sorted(set(phi) & set(psi)):
        cols = [phi[residue], psi[residue]]
        h = [
            np.histogram2d(*a[np.isfinite(a[:, cols]).all(axis=1)][:, cols].T, bins=(edges, edges))[
                0
            ]
            for a in (reference, generated)
        ]
        values.append(js_distance(h[0], h[1]))
    return float(np.nanmean(values)) if values else np.nan


def tica_jsds(
    reference_features: list[np.ndarray], generated_features: list[np.ndarray], lag: int
) -> tuple[dict[str, float], TICAModel | None]:
    """JS distances of TIC-0 (100 bins) and TIC-0,1 (50 x 50 bins) over the joint range.

    tICA is fitted on the reference's torsion (sin, cos) features at ``lag`` frames; both sets
    are projected on it.

    Returns:
        (``tica_0_jsd``, ``tica_01_jsd``; the fitted model or None when the reference has fewer
        than 2 lagged pairs).
    """
    x0, xt = lagged_pairs(reference_features, lag)
    if len(x0) < 2:
        return {"tica_0_jsd": np.nan, "tica_01_jsd": np.nan}, None
    model = fit_tica(x0, xt)
    ref = _finite_rows(model.transform(np.concatenate(reference_features)))[:, :2]
    gen = _finite_rows(model.transform(np.concatenate(generated_features)))[:, :2]
    if len(gen) == 0 or ref.shape[1] < 2:
        return {"tica_0_jsd": np.nan, "tica_01_jsd": np.nan}, model
    both = np.concatenate([ref, gen])
    e0 = np.linspace(both[:, 0].min(), both[:, 0].max() + 1e-9, TORSION_BINS + 1)
    e0_2d = np.linspace(both[:, 0].min(), both[:, 0].max() + 1e-9, JOINT_BINS + 1)
    e1_2d = np.linspace(both[:, 1].min(), both[:, 1].max() + 1e-9, JOINT_BINS + 1)
    h0 = [np.histogram(p[:, 0], bins=e0)[0] for p in (ref, gen)]
    h01 = [np.histogram2d(p[:, 0], p[:, 1], bins=(e0_2d, e1_2d))[0] for p in (ref, gen)]
    return {"tica_0_jsd": js_distance(*h0), "tica_01_jsd": js_distance(*h01)}, model


def _finite_rows(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x).all(axis=1)]


def _lag_sums(x: np.ndarray, max_lag: int) -> np.ndarray:
    """``sum_t x_t x_{t+tau}`` for tau = 0..max_lag, per column of ``x (T, K)`` (FFT)."""
    n = len(x)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, n=size, axis=0)
    return np.fft.irfft(f * np.conj(f), n=size, axis=0)[: max_lag + 1]


def normalised_autocovariance(
    angles: list[np.ndarray], max_lag: int
) -> tuple[np.ndarray, np.ndarray]:
    """The normalised autocovariance of each torsion's unit vector (sin, cos) at lags
    0..``max_lag``: ``(C(tau) - b) / (1 - b)`` with ``C(tau) = <u_t . u_{t+tau}>`` over all
    pairs (replicas pooled, non-finite frames skipped) and ``b = |<u>|^2``.

    Args:
        angles: per replica ``(T_i, K)`` radians on a common time step.
        max_lag: the last lag.

    Returns:
        ``(max_lag + 1, K)`` values (NaN where ``b = 1``) and ``b (K,)``.
    """
    k = angles[0].shape[1]
    sums = np.zeros((max_lag + 1, k))
    pairs = np.zeros(max_lag + 1)
    unit_sum = np.zeros((2, k))
    n_frames = 0
    for a in angles:
        ok = np.isfinite(a).all(axis=1)
        pairs += _lag_sums(ok.astype(float)[:, None], max_lag)[:, 0]
        n_frames += int(ok.sum())
        for cols in chunks(k, 256):  # bounded FFT buffers for proteins with many torsions
            s = np.where(ok[:, None], np.sin(a[:, cols]), 0.0)
            c = np.where(ok[:, None], np.cos(a[:, cols]), 0.0)
            sums[:, cols] += _lag_sums(s, max_lag) + _lag_sums(c, max_lag)
            unit_sum[:, cols] += np.stack([s.sum(axis=0), c.sum(axis=0)])
    b = ((unit_sum / max(n_frames, 1)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (sums / np.round(pairs)[:, None] - b) / (1.0 - b), b


def decorrelation_times(angles: list[np.ndarray], dt_ps: float) -> np.ndarray:
    """Decorrelation time (ps) of each torsion: first lag where the normalised autocovariance
    of its unit vector (sin, cos) drops below 1/e (:func:`normalised_autocovariance`). Lags up
    to half the shortest replica; a torsion that never drops below 1/e, or that never moves
    (``b = 1``), gets NaN (censored).

    Args:
        angles: per replica ``(T_i, K)`` radians on a common time step.
        dt_ps: that time step.

    Returns:
        ``(K,)`` ps.
    """
    max_lag = max(1, min(len(a) for a in angles) // 2)
    normalised, b = normalised_autocovariance(angles, max_lag)
    below = normalised[1:] < 1.0 / np.e
    first = np.where(below.any(axis=0), below.argmax(axis=0) + 1, 0)
    times = first * dt_ps
    times[(first == 0) | (1.0 - b < 1e-9)] = np.nan
    return times


def decorrelation_summary(reference_ps: np.ndarray, generated_ps: np.ndarray) -> dict[str, float]:
    """Median decorrelation times and their agreement.

    Returns:
        ``decorrelation_md_ps`` and ``decorrelation_model_ps`` (medians over torsions that
        decorrelate), ``decorrelation_log_ratio`` (median over torsions decorrelating in both of
        ``|log10(t_model / t_md)|``), ``decorrelated_fraction_model``.
    """
    both = np.isfinite(reference_ps) & np.isfinite(generated_ps)
    return {
        "decorrelation_md_ps": _nanmedian(reference_ps),
        "decorrelation_model_ps": _nanmedian(generated_ps),
        "decorrelation_log_ratio": float(
            np.median(np.abs(np.log10(generated_ps[both] / reference_ps[both])))
        )
        if both.any()
        else np.nan,
        "decorrelated_fraction_model": float(np.isfinite(generated_ps).mean())
        if len(generated_ps)
        else np.nan,
    }


def _nanmedian(x: np.ndarray) -> float:
    return float(np.nanmedian(x)) if np.isfinite(x).any() else np.nan


def _macro_transition_matrix(states: list[np.ndarray], n_states: int, lag: int) -> np.ndarray:
    counts = np.zeros((n_states, n_states))
    for s in states:
        if len(s) <= lag:
            continue
        a, b = s[:-lag], s[lag:]
        keep = (a >= 0) & (b >= 0)
        np.add.at(counts, (a[keep], b[keep]), 1.0)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, counts / rows, np.nan)


def msm_comparison(
    reference_tics: list[np.ndarray],
    generated_tics: list[np.ndarray],
    lag: int,
    seed: int = 0,
    n_states: int = MSM_STATES,
) -> dict[str, float | str]:
    """Metastable-state occupancies and transitions of the model under the MD's Markov model.

    k-means (``min(100, n_md_frames // 10)`` centres) on the first 4 TICs of the MD, a reversible
    maximum-likelihood MSM at ``lag`` frames on the MD's discrete trajectories (largest connected
    set), PCCA+ into ``min(n_states, n_active - 1)`` metastable states (deeptime; MDGen uses
    10); every frame of both sets is assigned through the MD's centres and crisp PCCA+
    memberships (centres outside the connected set inherit the nearest connected centre's state).

    Returns:
        ``msm_state_jsd`` (JS distance of metastable-state occupancies), ``msm_transition_mae``
        (mean absolute difference of the metastable-state transition matrices estimated from
        each set's own lagged pairs at the same lag, over rows populated in both),
        ``msm_states`` (number used) and ``msm_note`` (why a value is NaN, else empty).
    """
    from deeptime.clustering import KMeans
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MaximumLikelihoodMSM

    nan = {"msm_state_jsd": np.nan, "msm_transition_mae": np.nan, "msm_states": 0}
    ref = [np.ascontiguousarray(t[:, :MSM_TICS]) for t in reference_tics]
    gen = [np.ascontiguousarray(t[:, :MSM_TICS]) for t in generated_tics]
    ref_ok = [r[np.isfinite(r).all(axis=1)] for r in ref]
    n_ref = sum(len(r) for r in ref_ok)
    n_clusters = min(MSM_CLUSTERS, n_ref // 10)
    if n_clusters < 3:
        return {**nan, "msm_note": f"too few MD frames ({n_ref}) for a Markov model"}
    kmeans = (
        KMeans(n_clusters, fixed_seed=seed, max_iter=100).fit(np.concatenate(ref_ok)).fetch_model()
    )
    assign = [_assign(kmeans, x) for x in ref]
    segments = [seg for a in assign for seg in _segments(a) if len(seg) > lag]
    if not segments:
        return {**nan, "msm_note": f"no MD segment longer than the lag ({lag} frames)"}
    counts = TransitionCountEstimator(lag, "sliding").fit(segments)
    counts_model = counts.fetch_model().submodel_largest()
    if counts_model.n_states < 3:
        return {**nan, "msm_note": "MD Markov model has fewer than 3 connected states"}
    msm = MaximumLikelihoodMSM(reversible=True).fit(counts_model).fetch_model()
    n_meta = min(n_states, msm.n_states - 1)
    try:
        memberships = msm.pcca(n_meta).memberships
    except (ValueError, np.linalg.LinAlgError, RuntimeError) as err:
        return {**nan, "msm_note": f"PCCA+ failed ({err})"}
    micro_to_macro = _micro_to_macro(
        kmeans.cluster_centers, counts_model.state_symbols, memberships.argmax(axis=1)
    )
    ref_states = [np.where(a >= 0, micro_to_macro[np.maximum(a, 0)], -1) for a in assign]
    gen_states = [
        np.where(a >= 0, micro_to_macro[np.maximum(a, 0)], -1)
        for a in (_assign(kmeans, x) for x in gen)
    ]
    occupancy = [
        np.bincount(np.concatenate(s)[np.concatenate(s) >= 0], minlength=n_meta).astype(float)
        for s in (ref_states, gen_states)
    ]
    t_ref = _macro_transition_matrix(ref_states, n_meta, lag)
    t_gen = _macro_transition_matrix(gen_states, n_meta, lag)
    rows = np.isfinite(t_ref).all(axis=1) & np.isfinite(t_gen).all(axis=1)
    return {
        "msm_state_jsd": js_distance(*occupancy),
        "msm_transition_mae": float(np.abs(t_ref[rows] - t_gen[rows]).mean())
        if rows.any()
        else np.nan,
        "msm_states": n_meta,
        "msm_note": "",
    }


def _micro_to_macro(
    centres: np.ndarray, active: np.ndarray, macro_of_active: np.ndarray
) -> np.ndarray:
    """Metastable state of every k-means centre; centres outside the MSM's connected set take
    the state of the nearest connected centre (so every frame gets a state)."""
    nearest = np.linalg.norm(centres[:, None] - centres[None, active], axis=2).argmin(axis=1)
    return macro_of_active[nearest]


def _segments(states: np.ndarray) -> list[np.ndarray]:
    """Runs of assigned (>= 0) frames, so that no transition spans a skipped frame."""
    runs = [piece[piece >= 0] for piece in np.split(states, np.flatnonzero(states < 0))]
    return [run for run in runs if len(run)]


def _assign(kmeans, x: np.ndarray) -> np.ndarray:
    """Nearest k-means centre per frame, -1 for non-finite frames."""
    out = np.full(len(x), -1, dtype=int)
    ok = np.isfinite(x).all(axis=1)
    if ok.any():
        out[ok] = kmeans.transform(x[ok])
    return out
