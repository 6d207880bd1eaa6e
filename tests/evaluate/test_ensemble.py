import numpy as np
from scipy.linalg import sqrtm
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation
from sklearn.metrics import mutual_info_score

from starmd.evaluate.ensemble import (
    contact_frequencies,
    contact_sets,
    exposure_mutual_information,
    jaccard,
    mean_pairwise_rmsd,
    pc_cosine,
    pca_w2,
    rmwd,
    sidechain_sasa,
)


def _frames(seed=0, n=30, atoms=6, scale=1.0):
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=5.0, size=(atoms, 3))
    return base + scale * rng.normal(size=(n, atoms, 3)) * rng.uniform(0.2, 1.0, size=(atoms, 3))


def test_mean_pairwise_rmsd_matches_brute_force():
    frames = _frames()
    expected = np.mean(
        [
            np.sqrt(((frames[i] - frames[j]) ** 2).sum(-1).mean())
            for i in range(len(frames))
            for j in range(i + 1, len(frames))
        ]
    )
    assert np.isclose(mean_pairwise_rmsd(frames), expected)


def test_rmwd_matches_per_atom_gaussian_w2_and_splits_into_parts():
    a, b = _frames(1), _frames(2, scale=1.5)
    per_atom_t, per_atom_v = [], []
    for k in range(a.shape[1]):
        mu1, mu2 = a[:, k].mean(0), b[:, k].mean(0)
        s1, s2 = np.cov(a[:, k].T, bias=True), np.cov(b[:, k].T, bias=True)
        root = sqrtm(s1)
        per_atom_t.append(((mu1 - mu2) ** 2).sum())
        per_atom_v.append(np.trace(s1 + s2 - 2 * np.real(sqrtm(root @ s2 @ root))))
    scores = rmwd(a, b)
    assert np.isclose(scores["rmwd"], np.sqrt(np.mean(per_atom_t) + np.mean(per_atom_v)))
    assert np.isclose(scores["rmwd_translation"], np.sqrt(np.mean(per_atom_t)))
    assert np.isclose(scores["rmwd_variance"], np.sqrt(np.mean(per_atom_v)), atol=1e-6)
    assert rmwd(a, a)["rmwd"] < 1e-6


def test_md_pca_w2_matches_svd_and_linear_sum_assignment():
    a, b = _frames(3, n=40), _frames(3, n=40, scale=2.0)
    flat_a, flat_b = a.reshape(40, -1), b.reshape(40, -1)
    centred = flat_a - flat_a.mean(0)
    pcs = np.linalg.svd(centred, full_matrices=False)[2][:2]
    pa, pb = centred @ pcs.T, (flat_b - flat_a.mean(0)) @ pcs.T
    cost = ((pa[:, None] - pb[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    expected = np.sqrt(cost[rows, cols].mean()) / np.sqrt(a.shape[1])
    assert np.isclose(pca_w2(a, b, joint=False, frames=250, seed=0), expected)
    assert pca_w2(a, a, joint=True, frames=250, seed=0) < 1e-9


def test_pc_cosine_of_identical_ensembles_is_one():
    a = _frames(4)
    assert np.isclose(pc_cosine(a, a.copy()), 1.0)


def test_contact_frequencies_match_brute_force_distances():
    frames = _frames(5, n=10, atoms=12, scale=2.0) * 0.8
    freq = contact_frequencies(frames, cutoff=8.0)
    d = np.linalg.norm(frames[:, :, None] - frames[:, None, :], axis=-1)
    expected = np.triu((d < 8.0).mean(0), k=1)
    assert np.allclose(freq, expected)
    # a pair exactly at the cutoff is not a contact (the definition is "< 8 A")
    edge = np.array([[[0.0, 0, 0], [8.0, 0, 0], [0.0, 7.5, 0]]])
    assert contact_frequencies(edge, cutoff=8.0)[0, 1] == 0.0
    assert contact_frequencies(edge, cutoff=8.0)[0, 2] == 1.0


def test_weak_and_transient_contact_sets():
    initial = np.array([[0.0, 0, 0], [5.0, 0, 0], [20.0, 0, 0]])
    freq = np.zeros((3, 3))
    freq[0, 1] = 0.5  # initial contact, kept half the time: weak
    freq[0, 2] = 0.2  # initial non-contact formed 20% of the time: transient
    weak, transient = contact_sets(initial, freq)
    assert weak == {(0, 1)} and transient == {(0, 2)}
    assert jaccard(weak, weak) == 1.0 and jaccard(weak, transient) == 0.0


def test_exposure_mutual_information_matches_sklearn():
    exposed = np.random.default_rng(6).random((200, 4)) < [0.2, 0.5, 0.7, 0.5]
    exposed[:, 3] = exposed[:, 1] ^ (np.random.default_rng(7).random(200) < 0.1)
    mi = exposure_mutual_information(exposed)
    for i in range(4):
        for j in range(4):
            assert np.isclose(mi[i, j], mutual_info_score(exposed[:, i], exposed[:, j]), atol=1e-9)


def test_sidechain_sasa_is_stable_under_rigid_rotation(villin):
    """One sphere point must stay well below the 0.02 nm^2 buried threshold: a rigid rotation
    may not move any residue's side-chain SASA by more than 0.05 nm^2 (240 points: 0.13)."""
    x = villin.xyz[0] * 10.0
    x = x - x.mean(axis=0)
    rotated = np.stack([x @ Rotation.random(random_state=k).as_matrix().T for k in range(8)])
    sasa = sidechain_sasa(rotated, villin.topology)
    assert np.ptp(sasa, axis=0).max() < 0.05
