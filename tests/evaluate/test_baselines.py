import numpy as np

from starmd.evaluate.baselines import (
    GENERIC_B_FACTOR_A2,
    anm_ensemble,
    anm_hessian,
    anm_modes,
    static_ensemble,
)
from starmd.evaluate.geometry import rmsf
from starmd.evaluate.trajectories import load_heavy_topology

from .conftest import VILLIN_PDB


def _hand_built_hessian(ca, cutoff):
    n = len(ca)
    h = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = ca[j] - ca[i]
            if np.linalg.norm(d) >= cutoff:
                continue
            block = -np.outer(d, d) / (d @ d)
            h[3 * i : 3 * i + 3, 3 * j : 3 * j + 3] = block
            h[3 * i : 3 * i + 3, 3 * i : 3 * i + 3] -= block
    return h


def test_anm_hessian_and_modes_match_hand_built_three_residue_toy():
    ca = np.array([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [5.0, 3.6, 0.0]])
    expected = _hand_built_hessian(ca, 15.0)
    hessian = anm_hessian(ca, cutoff=15.0)
    assert np.allclose(hessian, expected)
    values, vectors = anm_modes(hessian)
    reference = np.linalg.eigvalsh(expected)
    assert np.allclose(values, reference[6:])
    assert np.allclose(reference[:6], 0.0, atol=1e-10)
    assert np.allclose(expected @ vectors, vectors * values)


def test_anm_cutoff_removes_distant_springs():
    ca = np.array([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [20.0, 0.0, 0.0]])
    hessian = anm_hessian(ca, cutoff=15.0)
    assert np.allclose(hessian[0:3, 6:9], 0.0)


def test_anm_ensemble_matches_the_generic_b_factor_scale():
    topology, xyz = load_heavy_topology(VILLIN_PDB)
    ensemble = anm_ensemble("villin", topology, xyz, 3000, 10.0, seed=1)
    ca = topology.select("name CA")
    msf = rmsf(ensemble.replicas[0][:, ca]) ** 2
    assert np.isclose(msf.mean(), 3 * GENERIC_B_FACTOR_A2 / (8 * np.pi**2), rtol=0.05)


def test_static_ensemble_has_zero_rmsf():
    topology, xyz = load_heavy_topology(VILLIN_PDB)
    frames = static_ensemble("villin", topology, xyz, 10, 10.0).replicas[0]
    assert frames.shape == (10, *xyz.shape)
    assert np.allclose(rmsf(frames), 0.0)
