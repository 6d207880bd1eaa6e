import mdtraj as md
import numpy as np
from scipy.spatial.distance import jensenshannon

from starmd.evaluate.paper import (
    autocorrelation_curve,
    common_time_step,
    coverage,
    curve_gap,
    rmsd_lag_curve,
    tica_residue_contributions,
)

from .conftest import synthetic_frames


def test_identical_sets_have_zero_coverage_jsd_and_full_recall():
    points = np.random.default_rng(0).normal(size=(500, 2))
    scores = coverage(points, points)
    assert scores["coverage_jsd"] == 0.0
    assert scores["coverage_recall"] == scores["coverage_precision"] == scores["coverage_f1"] == 1.0


def test_coverage_matches_independent_histogram_computation():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(400, 2))
    gen = rng.normal(0.7, 0.6, size=(300, 2))
    scores = coverage(ref, gen)
    ex = np.linspace(ref[:, 0].min(), ref[:, 0].max(), 11)
    ey = np.linspace(ref[:, 1].min(), ref[:, 1].max(), 11)
    h_ref = np.histogram2d(ref[:, 0], ref[:, 1], bins=(ex, ey))[0].ravel()
    h_gen = np.histogram2d(gen[:, 0], gen[:, 1], bins=(ex, ey))[0].ravel()
    outside = len(gen) - h_gen.sum()
    expected = jensenshannon(np.append(h_ref, 0), np.append(h_gen, outside))
    assert np.isclose(scores["coverage_jsd"], expected)
    assert np.isclose(
        scores["coverage_recall"], ((h_ref > 0) & (h_gen > 0)).sum() / (h_ref > 0).sum()
    )
    gen_bins = (h_gen > 0).sum() + (outside > 0)
    assert np.isclose(scores["coverage_precision"], ((h_ref > 0) & (h_gen > 0)).sum() / gen_bins)


def test_rmsd_lag_curve_matches_mdtraj(villin):
    traj = md.Trajectory(synthetic_frames(villin, 12, 0, noise=0.4), villin.topology)
    ca = villin.topology.select("name CA")
    lags = np.array([1, 3])
    curve = rmsd_lag_curve([traj.xyz[:, ca] * 10], lags)
    ca_traj = traj.atom_slice(ca)
    for value, lag in zip(curve, lags, strict=True):
        expected = np.mean(
            [md.rmsd(ca_traj[i + lag], ca_traj, frame=i)[0] for i in range(len(traj) - lag)]
        )
        assert np.isclose(value, expected * 10, atol=1e-3)


def test_autocorrelation_of_ar1_process_follows_its_memory():
    rng = np.random.default_rng(2)
    x = np.zeros((20000, 1))
    for t in range(1, len(x)):
        x[t] = 0.8 * x[t - 1] + rng.standard_normal()
    lags = np.array([1, 2, 5])
    curve = autocorrelation_curve([x], lags)
    assert np.allclose(curve, 0.8**lags, atol=0.03)
    assert curve_gap(curve, curve) == 0.0


def test_tica_contributions_of_identical_trajectories_correlate_perfectly():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(200, 6)).cumsum(axis=0)
    residue = np.array([0, 0, 1, 1, 2, 2])
    a, n = tica_residue_contributions([features], residue, 3, lag=2)
    b, _ = tica_residue_contributions([features.copy()], residue, 3, lag=2)
    assert n == 198
    assert np.corrcoef(a, b)[0, 1] > 1 - 1e-9


def test_tica_contributions_are_na_below_30_valid_pairs():
    features = np.random.default_rng(4).normal(size=(100, 4))
    valid = np.zeros(100, dtype=bool)
    valid[:30] = True  # 29 lagged pairs at lag 1
    result, n_pairs = tica_residue_contributions([features], np.array([0, 0, 1, 1]), 2, 1, [valid])
    assert result is None and n_pairs == 29


def test_common_time_step_strides_the_finer_trajectory():
    assert common_time_step(10.0, 50.0) == (50.0, 5, 1, True)
    assert common_time_step(10.0, 25.0)[3] is False
