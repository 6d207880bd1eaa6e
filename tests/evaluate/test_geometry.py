import mdtraj as md
import numpy as np

from starmd.evaluate.geometry import (
    dihedrals,
    fit_pca,
    paired_rmsd,
    radius_of_gyration,
    rmsf,
)
from starmd.structure.superpose import superpose

from .conftest import synthetic_frames


def _noisy(villin, n=20, seed=0):
    return md.Trajectory(synthetic_frames(villin, n, seed, noise=0.5), villin.topology)


def test_paired_rmsd_matches_mdtraj(villin):
    traj = _noisy(villin)
    mine = paired_rmsd(traj.xyz * 10, villin.xyz[0] * 10)
    assert np.allclose(mine, md.rmsd(traj, villin) * 10, atol=1e-3)
    pairs = paired_rmsd(traj.xyz[1:] * 10, traj.xyz[:-1] * 10)
    expected = [md.rmsd(traj[i + 1], traj, frame=i)[0] * 10 for i in range(len(traj) - 1)]
    assert np.allclose(pairs, expected, atol=1e-3)


def test_superpose_then_rmsf_matches_mdtraj(villin):
    traj = _noisy(villin, seed=3)
    ca = villin.topology.select("name CA")
    aligned = superpose(traj.xyz * 10, villin.xyz[0] * 10, ca)
    expected = md.rmsf(traj.atom_slice(ca), villin.atom_slice(ca), 0) * 10
    assert np.allclose(rmsf(aligned)[ca], expected, atol=2e-3)
    manual = traj.superpose(villin, atom_indices=ca)  # all atoms, aligned on CA (mdtraj)
    xyz = manual.xyz * 10
    expected_all = np.sqrt(((xyz - xyz.mean(0)) ** 2).sum(-1).mean(0))
    assert np.allclose(rmsf(aligned), expected_all, atol=2e-3)


def test_static_trajectory_has_zero_rmsf(villin):
    frames = np.repeat(villin.xyz * 10, 5, axis=0)
    assert np.allclose(rmsf(frames), 0.0)


def test_rmsf_skips_nan_frames():
    frames = np.zeros((3, 2, 3), dtype=np.float32)
    frames[1] = np.nan
    assert np.allclose(rmsf(frames), 0.0)


def test_dihedrals_and_rg_match_mdtraj(villin):
    traj = _noisy(villin, seed=5)
    idx, expected = md.compute_phi(traj)
    assert np.allclose(dihedrals(traj.xyz, idx), expected, atol=1e-5)
    assert np.allclose(radius_of_gyration(traj.xyz * 10), md.compute_rg(traj) * 10, atol=1e-4)


def test_pca_components_match_numpy_svd():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(50, 4, 3)) * np.array([3.0, 1.0, 0.2])
    pca = fit_pca(frames, 2)
    flat = frames.reshape(50, -1)
    _, s, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    assert np.allclose(np.abs(pca.components @ vt[:2].T), np.eye(2), atol=1e-8)
    assert np.allclose(pca.variances, s[:2] ** 2 / 49)
