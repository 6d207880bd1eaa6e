"""Long-horizon health (docs/metrics.md, section D): validity, drift and blow-ups over time.

A rollout that unfolds or explodes shows up here instead of being averaged away: every frame is
kept, non-finite frames are counted, and frames whose radius of gyration exceeds three times the
initial structure's (or with coordinates beyond 10^4 A) are counted as exploded.
"""

from __future__ import annotations

import numpy as np

from starmd.evaluate.geometry import paired_rmsd, radius_of_gyration

EXPLODED_RG_FACTOR = 3.0
EXPLODED_COORDINATE_A = 1.0e4


def health_series(
    frames: np.ndarray,
    initial: np.ndarray,
    ca: np.ndarray,
    dt_ps: float,
    checks: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Per-frame health of one trajectory.

    Args:
        frames: ``(T, N, 3)`` Angstrom (raw, not filtered).
        initial: ``(N, 3)`` Angstrom, the initial / reference structure.
        ca: indices of the CA atoms.
        dt_ps: time step, ps.
        checks: output of :func:`starmd.evaluate.validity.check_validity` for these frames.

    Returns:
        arrays ``(T,)``: ``time_ps``, ``rmsd_to_initial`` (CA, optimal superposition, A),
        ``radius_of_gyration`` (heavy atoms, A; NaN for non-finite frames), ``nan_frame``,
        ``exploded_frame``, ``valid``, ``valid_ca``, ``valid_aa`` (bool).
    """
    rg = radius_of_gyration(frames)
    rg_initial = radius_of_gyration(initial[None])[0]
    finite = checks["finite"]
    with np.errstate(invalid="ignore"):
        huge = np.zeros(len(frames), dtype=bool)
        huge[finite] = np.abs(frames[finite]).max(axis=(1, 2)) > EXPLODED_COORDINATE_A
        exploded = finite & ((rg > EXPLODED_RG_FACTOR * rg_initial) | huge)
    return {
        "time_ps": np.arange(1, len(frames) + 1) * dt_ps,
        "rmsd_to_initial": paired_rmsd(frames[:, ca], initial[ca]),
        "radius_of_gyration": np.where(finite, rg, np.nan),
        "nan_frame": ~finite,
        "exploded_frame": exploded,
        "valid": checks["valid"],
        "valid_ca": checks["valid_ca"],
        "valid_aa": checks["valid_aa"],
    }


def health_summary(series: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Scalars over all replicas: frame counts, NaN/exploded counts, final drift, validity trend.

    Returns:
        ``n_frames``, ``nan_frames``, ``exploded_frames``, ``rmsd_to_initial_final`` (mean over
        replicas of the last finite frame's CA RMSD, A), ``rmsd_to_initial_max`` (A),
        ``rg_mean`` (A), ``validity_first_decile_pct`` and ``validity_last_decile_pct``
        (CA+AA validity over the first and last 10% of each trajectory).
    """
    finals, firsts, lasts = [], [], []
    for s in series:
        rmsd = s["rmsd_to_initial"][np.isfinite(s["rmsd_to_initial"])]
        if len(rmsd):
            finals.append(rmsd[-1])
        tenth = max(1, len(s["valid"]) // 10)
        firsts.append(s["valid"][:tenth].mean())
        lasts.append(s["valid"][-tenth:].mean())
    rmsd_all = np.concatenate([s["rmsd_to_initial"] for s in series])
    rg_all = np.concatenate([s["radius_of_gyration"] for s in series])
    return {
        "n_frames": float(sum(len(s["valid"]) for s in series)),
        "nan_frames": float(sum(int(s["nan_frame"].sum()) for s in series)),
        "exploded_frames": float(sum(int(s["exploded_frame"].sum()) for s in series)),
        "rmsd_to_initial_final": float(np.mean(finals)) if finals else np.nan,
        "rmsd_to_initial_max": float(np.nanmax(rmsd_all))
        if np.isfinite(rmsd_all).any()
        else np.nan,
        "rg_mean": float(np.nanmean(rg_all)) if np.isfinite(rg_all).any() else np.nan,
        "validity_first_decile_pct": 100.0 * float(np.mean(firsts)),
        "validity_last_decile_pct": 100.0 * float(np.mean(lasts)),
    }
