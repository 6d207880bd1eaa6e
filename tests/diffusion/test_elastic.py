"""The elastic-network translation prior of the posterior base (starmd.diffusion.elastic)."""

import mdtraj
import numpy as np
import pytest
import torch

from starmd.diffusion import SE3TorusDiffuser, random_rotations
from starmd.diffusion.elastic import bonded_pairs, elastic_prior
from starmd.structure.rigid import Rigid
from tests.conftest import STRUCTURES


def _ca(name: str = "1vii.pdb") -> torch.Tensor:
    traj = mdtraj.load(str(STRUCTURES / name))
    return torch.from_numpy(traj.xyz[0, traj.topology.select("name CA")] * 10.0).double()


def _bonded(length: int) -> torch.Tensor:
    index = torch.arange(length)
    return bonded_pairs(index, torch.zeros_like(index))


def _dense_precision(ca, bonded, spread, k_bond, k_contact, cutoff):
    """The ANM precision written out pair by pair (a reference for the vectorized build)."""
    length = len(ca)
    precision = torch.eye(3 * length, dtype=torch.float64) / spread**2
    for i in range(length):
        for j in range(i + 1, length):
            r = ca[j] - ca[i]
            k = k_bond if bonded[i, j] else (k_contact if r.norm() < cutoff else 0.0)
            block = k * torch.outer(r, r) / (r @ r)
            for a, b, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                precision[3 * a : 3 * a + 3, 3 * b : 3 * b + 3] += sign * block
    return precision


def test_precision_is_the_anisotropic_network_model():
    ca = _ca()[:12]
    bonded = _bonded(12)
    prior = elastic_prior(ca, ca, torch.ones(12, dtype=torch.bool), bonded, 1.5, 100.0, 2.0, 10.0)
    rebuilt = prior.precision
    expected = _dense_precision(ca, bonded, 1.5, 100.0, 2.0, 10.0)
    torch.testing.assert_close(rebuilt, expected, atol=1e-8, rtol=1e-10)
    # springs do not resist rigid motions: translations and infinitesimal rotations of the whole
    # structure only feel the tether 1 / s^2
    translation = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64).repeat(12)
    torch.testing.assert_close(expected @ translation, translation / 1.5**2)
    omega = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)
    rotation = torch.linalg.cross(omega.expand(12, 3), ca).flatten()
    torch.testing.assert_close(expected @ rotation, rotation / 1.5**2)
    # a relaxed structure (rest = current) has no mean shift
    assert prior.mean_shift.abs().max() < 1e-10


@pytest.mark.parametrize("deadband", [0.0, 0.4])
def test_compiled_system_equals_the_tensor_build(deadband):
    """The compiled precision and strain gradient (CPU frames without gradient) equal the
    tensor version (the reference, used on GPUs and with gradients) to rounding: batched
    frames, strained springs with rest lengths from another structure, padding and a chain
    break."""
    from starmd.diffusion.elastic import _dense_system, _dense_system_compiled

    ca = _ca()
    length = len(ca)
    generator = torch.Generator().manual_seed(3)
    frames = ca + 0.8 * torch.randn((2, 3, length, 3), generator=generator, dtype=torch.float64)
    rest = ca + 0.3 * torch.randn((length, 3), generator=generator, dtype=torch.float64)
    mask = torch.ones(2, 1, length, dtype=torch.bool)
    mask[1, 0, -4:] = False  # padding in the second batch entry
    index = torch.arange(length)
    bonded = bonded_pairs(index, (index >= 20).long())  # two chains
    args = (frames, rest, mask, bonded, 1.2, 50.0, 2.0, 10.0, 0.25, deadband)
    precision, gradient = _dense_system_compiled(*args)
    expected_precision, expected_gradient = _dense_system(*args)
    assert precision.shape == expected_precision.shape == (2, 3, 3 * length, 3 * length)
    torch.testing.assert_close(precision, expected_precision, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-12, atol=1e-12)
    assert expected_gradient.abs().max() > 1.0  # strained springs: a gradient worth comparing
    # a prior built from frames with gradients takes the tensor path and matches the compiled
    prior = elastic_prior(frames.requires_grad_(True), rest, mask, bonded, 1.2, 50.0, 2.0, 10.0)
    assert prior.precision.requires_grad
    compiled = elastic_prior(frames.detach(), rest, mask, bonded, 1.2, 50.0, 2.0, 10.0)
    torch.testing.assert_close(compiled.mean_shift, prior.mean_shift.detach(), rtol=0, atol=1e-10)


def test_posterior_mean_is_gaussian_conditioning():
    """Against the dense formula (P + a^2/s^2 I)^-1 (P m + a/s^2 x) with m = prev + shift."""
    g = torch.Generator().manual_seed(0)
    ca = _ca()[:10]
    rest = ca + 0.3 * torch.randn(ca.shape, generator=g, dtype=torch.float64)
    bonded = _bonded(10)
    prior = elastic_prior(ca, rest, torch.ones(10, dtype=torch.bool), bonded, 1.2, 50.0, 3.0, 9.0)
    precision = _dense_precision(ca, bonded, 1.2, 50.0, 3.0, 9.0)
    noisy = ca + torch.randn(ca.shape, generator=g, dtype=torch.float64)
    alpha, sigma = torch.tensor(0.9, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    mean = (ca + prior.mean_shift).flatten()
    system = precision + alpha**2 / sigma**2 * torch.eye(30, dtype=torch.float64)
    expected = torch.linalg.solve(system, precision @ mean + alpha / sigma**2 * noisy.flatten())
    got = prior.posterior_mean(noisy, ca, alpha, sigma)
    torch.testing.assert_close(got.flatten(), expected)


@pytest.mark.parametrize("deadband", [0.0, 0.15])
def test_sparse_prior_of_large_proteins_matches_the_dense_one(monkeypatch, deadband):
    """Above SPARSE_ABOVE residues the prior is a sparse precision with direct solves; its
    posterior means (batched, per-frame alpha/sigma, padding) and mean shift equal the dense
    eigendecomposition's to rounding (with and without a flat bottom on the restoring
    contacts)."""
    from starmd.diffusion import elastic

    g = torch.Generator().manual_seed(1)
    ca = _ca("1ubi.pdb")
    length = len(ca)
    rest = ca + 0.2 * torch.randn(ca.shape, generator=g, dtype=torch.float64)
    frames = torch.stack([ca, ca + 0.5 * torch.randn(ca.shape, generator=g, dtype=torch.float64)])
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, -5:] = False
    args = (frames, rest.expand(2, -1, -1), mask, _bonded(length).expand(2, -1, -1))
    args = (*args, 1.5, 100.0, 2.0, 10.0, 0.5, deadband)
    priors = {}
    for label, threshold in (("dense", length), ("sparse", length - 1)):
        monkeypatch.setattr(elastic, "SPARSE_ABOVE", threshold)
        priors[label] = elastic_prior(*args)
    dense, sparse = priors["dense"], priors["sparse"]
    assert isinstance(sparse, elastic.SparseElasticPrior)
    assert isinstance(dense, elastic.ElasticPrior)
    torch.testing.assert_close(sparse.mean_shift, dense.mean_shift, atol=1e-9, rtol=0)
    assert dense.mean_shift.abs().max() > 0.01  # the rest lengths differ: a real shift
    noisy = frames + torch.randn(frames.shape, generator=g, dtype=torch.float64)
    alpha = torch.tensor([0.8, 0.3], dtype=torch.float64)
    sigma = torch.tensor([1.5, 9.0], dtype=torch.float64)
    torch.testing.assert_close(
        sparse.posterior_mean(noisy, frames, alpha, sigma),
        dense.posterior_mean(noisy, frames, alpha, sigma),
        atol=1e-9,
        rtol=0,
    )
    precision = dense.precision[0]
    torch.testing.assert_close(
        torch.from_numpy(sparse.precisions[0].toarray()), precision, atol=1e-9, rtol=0
    )


def test_strained_bonds_relax_towards_their_rest_length():
    ca = _ca()
    n = len(ca)
    stretched = ca.clone()
    stretched[n // 2 :] += torch.tensor([0.0, 0.0, 1.2], dtype=torch.float64)  # one long bond
    prior = elastic_prior(
        stretched, ca, torch.ones(n, dtype=torch.bool), _bonded(n), 1.5, 100.0, 2.0, 10.0
    )
    mean = stretched + prior.mean_shift
    before = (stretched[n // 2] - stretched[n // 2 - 1]).norm()
    after = (mean[n // 2] - mean[n // 2 - 1]).norm()
    rest = (ca[n // 2] - ca[n // 2 - 1]).norm()
    assert abs(after - rest) < 0.25 * abs(before - rest)


def test_rigid_motion_moves_the_posterior_mean_with_it():
    g = torch.Generator().manual_seed(1)
    ca = _ca()
    n = len(ca)
    rest = ca + 0.2 * torch.randn(ca.shape, generator=g, dtype=torch.float64)
    noisy = ca + torch.randn(ca.shape, generator=g, dtype=torch.float64)
    rot = random_rotations((), g, torch.float64)
    args = (torch.ones(n, dtype=torch.bool), _bonded(n), 1.5, 100.0, 2.0, 10.0)
    alpha, sigma = torch.tensor(0.7, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    mean = elastic_prior(ca, rest, *args).posterior_mean(noisy, ca, alpha, sigma)
    moved = elastic_prior(ca @ rot.T, rest @ rot.T, *args).posterior_mean(
        noisy @ rot.T, ca @ rot.T, alpha, sigma
    )
    torch.testing.assert_close(moved, mean @ rot.T)


def test_padding_and_chain_ends_get_no_springs():
    ca = _ca()[:8]
    mask = torch.tensor([True] * 6 + [False] * 2)
    padded = torch.cat([ca[:6], ca[5:6].expand(2, 3) + 1.0])  # padding next to real residues
    prior = elastic_prior(padded, padded, mask, _bonded(8), 1.5, 100.0, 2.0, 10.0)
    precision = prior.precision
    torch.testing.assert_close(precision[18:, :], torch.eye(24, dtype=torch.float64)[18:] / 2.25)
    # two chains: residues 3 and 4 are consecutive in numbering but not bonded
    index = torch.arange(8)
    chains = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert not bonded_pairs(index, chains)[3, 4] and bonded_pairs(index, chains)[4, 5]


def test_zero_stiffness_is_the_independent_prior():
    g = torch.Generator().manual_seed(2)
    diffuser = SE3TorusDiffuser()
    shape = (2, 9)
    ca = 10 * torch.randn(*shape, 3, generator=g, dtype=torch.float64)
    previous = Rigid(random_rotations(shape, g, torch.float64), ca)
    noisy = Rigid(random_rotations(shape, g, torch.float64), ca + torch.randn_like(ca))
    mask = torch.ones(shape, dtype=torch.bool)
    prior = elastic_prior(ca, ca, mask, _bonded(9).expand(2, 9, 9), 1.5, 0.0, 0.0, 10.0)
    for tau in (0.05, 0.4, 0.9):
        independent = diffuser.posterior_base(noisy, previous, tau, trans_spread=1.5)
        elastic = diffuser.posterior_base(noisy, previous, tau, trans_prior=prior)
        torch.testing.assert_close(elastic.trans, independent.trans)
        torch.testing.assert_close(elastic.rots, independent.rots)


def test_bad_parameters_raise():
    ca = _ca()[:4]
    with pytest.raises(ValueError, match="spread"):
        elastic_prior(ca, ca, torch.ones(4, dtype=torch.bool), _bonded(4), 0.0, 1.0, 1.0, 10.0)


@pytest.fixture(scope="module")
def tiny_untrained_model(tmp_path_factory):
    """An untrained tiny model: its zero-initialized frame update returns the base."""
    from starmd.modelfile import load_model
    from starmd.modelfile.config import TrainConfig
    from starmd.train.module import StarMDModule
    from starmd.train.run import export_model

    torch.manual_seed(0)
    module = StarMDModule(TrainConfig.from_yaml(None, ["model.preset=tiny"]))
    return load_model(export_model(module, tmp_path_factory.mktemp("m") / "base.safetensors"))


def test_untrained_sampler_keeps_the_chain_only_with_springs(tiny_untrained_model):
    """An untrained model predicts its posterior base, so its rollout samples the prior: with
    independent residues most CA-CA bonds leave 3.0-4.5 A within a few frames; with the elastic
    network they stay, also after many frames (the rest lengths stop a random walk)."""
    import copy
    from dataclasses import replace

    from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
    from starmd.structure.io import load_structure

    protein, positions = load_structure(STRUCTURES / "1vii.pdb")
    bad = {}
    for stiff in (0.0, 1.0):
        config = copy.deepcopy(tiny_untrained_model.config)
        config.diffusion = replace(
            config.diffusion,
            reference_trans_spread=1.5,
            reference_bond_stiffness=100.0 * stiff,
            reference_contact_stiffness=2.0 * stiff,
        )
        model = replace(tiny_untrained_model, config=config)
        inputs = protein_input(protein, positions, 10.0, 2)
        rollout = Rollout(model, inputs, RolloutSettings(steps=4, sampler="ddpm"), seed=0)
        lengths = []
        for t, _, frames, _ in rollout.frames(25):
            if t > 0:
                lengths.append((frames.trans[:, 1:] - frames.trans[:, :-1]).norm(dim=-1))
        lengths = torch.stack(lengths)
        bad[stiff] = float(((lengths > 4.5) | (lengths < 3.0)).double().mean())
        last = lengths[-5:]
        bad[f"{stiff} late"] = float(((last > 4.5) | (last < 3.0)).double().mean())
    assert bad[0.0] > 0.3, bad
    assert bad[1.0] < 0.02 and bad["1.0 late"] < 0.02, bad
    assert np.isfinite(list(bad.values())).all()


def test_restoring_contacts_pull_towards_the_input_structure():
    """A uniformly shrunk structure: relaxed contacts leave its mean where it is (bonds pull a
    little), restoring contacts pull its size back towards the input's."""
    ca = _ca()
    n = len(ca)
    shrunk = 0.95 * (ca - ca.mean(0)) + ca.mean(0)
    args = (torch.ones(n, dtype=torch.bool), _bonded(n), 1.5, 100.0, 2.0, 10.0)

    def gyration(x):
        return (x - x.mean(0)).pow(2).sum(-1).mean().sqrt()

    relaxed = shrunk + elastic_prior(shrunk, ca, *args, contact_restoring=0.0).mean_shift
    restored = shrunk + elastic_prior(shrunk, ca, *args, contact_restoring=1.0).mean_shift
    deficit = gyration(ca) - gyration(shrunk)
    assert gyration(ca) - gyration(restored) < 0.5 * deficit
    assert gyration(ca) - gyration(relaxed) > 0.7 * deficit


def test_restoring_deadband_pulls_only_beyond_the_band():
    """Flat-bottomed restoring contacts: a structure whose contact distances all lie within the
    band of the input's gets exactly the shift of relaxed contacts (bonds still pull); one
    strained beyond it is pulled back, less than by linear springs."""
    ca = _ca()
    n = len(ca)
    args = (torch.ones(n, dtype=torch.bool), _bonded(n), 1.5, 100.0, 2.0, 10.0)

    def shift(x, restoring, band=0.0):
        return elastic_prior(x, ca, *args, contact_restoring=restoring, contact_deadband=band)

    def gyration(x):
        return (x - x.mean(0)).pow(2).sum(-1).mean().sqrt()

    near = 0.99 * (ca - ca.mean(0)) + ca.mean(0)  # contacts (< 10 A) change by < 0.1 A
    assert (torch.cdist(near, near) - torch.cdist(ca, ca)).abs().max() < 0.35
    torch.testing.assert_close(shift(near, 0.5, 0.35).mean_shift, shift(near, 0.0).mean_shift)
    assert (shift(near, 0.5).mean_shift - shift(near, 0.0).mean_shift).abs().max() > 1e-3
    far = 0.9 * (ca - ca.mean(0)) + ca.mean(0)
    size = {
        label: gyration(far + shift(far, *setting).mean_shift)
        for label, setting in (("relaxed", (0.0,)), ("band", (1.0, 0.3)), ("linear", (1.0,)))
    }
    assert size["relaxed"] < size["band"] < size["linear"] <= gyration(ca) + 0.05, size
    with pytest.raises(ValueError, match="deadband >= 0"):
        shift(near, 0.5, -0.1)
