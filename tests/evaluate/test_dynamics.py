import numpy as np
from scipy.spatial.distance import jensenshannon

from starmd.evaluate.dynamics import (
    decorrelation_times,
    msm_comparison,
    tica_jsds,
    torsion_histograms,
    torsion_jsds,
)
from starmd.evaluate.features import Torsions, sincos


def _wrapped_walk(n=4000, k=3, step=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return np.angle(np.exp(1j * np.cumsum(rng.normal(scale=step, size=(n, k)), axis=0)))


def _torsions(kinds):
    k = len(kinds)
    return Torsions(np.zeros((k, 4), int), np.array(kinds), np.arange(k))


def test_torsion_histograms_match_numpy():
    angles = _wrapped_walk(500, 2)
    counts = torsion_histograms(angles)
    for k in range(2):
        expected = np.histogram(angles[:, k], bins=100, range=(-np.pi, np.pi))[0]
        assert np.abs(counts[k] - expected).sum() <= 2  # bin-edge rounding only


def test_torsion_jsd_is_zero_for_identical_and_matches_scipy():
    a, b = _wrapped_walk(seed=1), _wrapped_walk(seed=2)
    torsions = _torsions(["phi", "psi", "chi1"])
    same = torsion_jsds(a, a.copy(), torsions)
    assert np.allclose(same["torsion_jsd"], 0.0) and same["torsion_jsd_backbone"] == 0.0
    diff = torsion_jsds(a, b, torsions)
    expected = jensenshannon(torsion_histograms(a)[2], torsion_histograms(b)[2])
    assert np.isclose(diff["torsion_jsd"][2], expected)
    assert np.isclose(diff["torsion_jsd_sidechain"], expected)


def test_decorrelation_time_matches_direct_autocovariance():
    angles = _wrapped_walk(3000, 1, step=0.15, seed=3)
    dt = 10.0
    u = np.stack([np.sin(angles[:, 0]), np.cos(angles[:, 0])], axis=1)
    b = (u.mean(0) ** 2).sum()
    expected = np.nan
    for lag in range(1, len(u) // 2):
        c = (u[:-lag] * u[lag:]).sum(1).mean()
        if (c - b) / (1 - b) < 1 / np.e:
            expected = lag * dt
            break
    assert np.isclose(decorrelation_times([angles], dt)[0], expected)


def test_frozen_torsion_never_decorrelates():
    angles = np.full((100, 1), 0.3)
    assert np.isnan(decorrelation_times([angles], 1.0)[0])


def test_tica_and_msm_of_identical_trajectories_agree_perfectly():
    angles = _wrapped_walk(1500, 3, step=0.2, seed=4)
    features = [sincos(angles)]
    scores, model = tica_jsds(features, [sincos(angles.copy())], lag=5)
    assert scores["tica_0_jsd"] == 0.0 and scores["tica_01_jsd"] == 0.0
    tics = [model.transform(features[0])]
    msm = msm_comparison(tics, [tics[0].copy()], lag=5, n_states=4)
    assert msm["msm_note"] == ""
    assert msm["msm_states"] == 4
    assert msm["msm_state_jsd"] == 0.0 and msm["msm_transition_mae"] == 0.0
    shifted = msm_comparison(tics, [tics[0][:300]], lag=5, n_states=4)
    assert shifted["msm_state_jsd"] > 0.0
