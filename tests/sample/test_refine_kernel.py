"""The compiled refinement descent takes the same steps as the torch one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from starmd.diffusion.so3 import exp_map
from starmd.sample import refine as refinement
from starmd.sample.refine import RefineSettings, _Energy, refine
from starmd.structure import geometry
from starmd.structure.rigid import Rigid
from tests.sample.test_refine import MD, _md_frames, _phi_turned, _stretched


@pytest.fixture(scope="module")
def md():
    return _md_frames(MD, 6)


def _distorted(md, seed: int = 0) -> Rigid:
    """The MD frames with every residue shifted (0.4 A sd) and turned (0.08 rad sd): stretched
    and compressed peptide junctions, omega and Ramachandran outliers, overlaps."""
    generator = torch.Generator().manual_seed(seed)
    frames = md["frames"]
    turn = 0.08 * torch.randn((*frames.shape, 3), generator=generator, dtype=torch.float64)
    shift = 0.4 * torch.randn(frames.trans.shape, generator=generator, dtype=torch.float64)
    return Rigid(frames.rots @ exp_map(turn), frames.trans + shift)


@pytest.mark.parametrize(("rama_weight", "dihedral_weight"), [(1.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_compiled_descent_equals_torch_descent(md, rama_weight, dihedral_weight):
    # every term active: a stretched bond, a Ramachandran outlier, random distortions (clashes)
    stretched, torsions = _stretched(md, frame=0)
    frames = Rigid.cat(
        [stretched, _phi_turned(md, residue=12, by_deg=150.0)[:1], _distorted(md)], dim=0
    )
    torsions = torch.cat([torsions, md["torsions"][:1], md["torsions"]])
    settings = RefineSettings(rama_weight=rama_weight, dihedral_weight=dihedral_weight)
    energy = _Energy(frames, torsions, md["topology"], settings)
    assert bool((energy.violation(energy.raw_atoms) > 100.0).all())
    compiled = frames.trans.new_zeros((*frames.shape, 6))
    reference = compiled.clone()
    refinement._descend(energy, compiled, settings)  # frames on the CPU: the compiled loop
    refinement._descend_torch(energy, reference, settings)
    assert reference.abs().amax() > 0.1  # the descent moved residues: a comparison worth making
    torch.testing.assert_close(compiled, reference, rtol=0, atol=1e-9)


def test_compiled_refinement_from_float32_frames(md):
    # float32 frames (the rollout's): the compiled loop runs in float64, so it takes the path
    # the float64 torch descent takes, to about what float32 rounding of the input changes
    top64 = md["topology"]
    top32 = dataclasses.replace(
        top64,
        **{k: getattr(top64, k).float() for k in ("bond_mean", "bond_sd", "radius")},
    )
    frames = _distorted(md, seed=1)
    settings = RefineSettings()
    compiled = refine(
        Rigid(frames.rots.float(), frames.trans.float()), md["torsions"].float(), top32, settings
    )
    reference = refine(frames, md["torsions"], top64, settings)
    assert compiled.frames.trans.dtype == torch.float32
    assert bool((compiled.violation_after < 0.05 * compiled.violation_before).all())

    def atoms(refined, topology):
        return geometry.frames_to_atoms(
            refined.frames, refined.torsions, topology.aatype, topology.oxt_mask
        ).double()

    gap = (atoms(compiled, top32) - atoms(reference, top64)).norm(dim=-1)
    assert gap.median() < 1e-3
    assert gap.amax() < 1.0


def test_clash_pairs_equal_a_brute_force_search(md):
    # every pair of rebuilt atoms of two distorted replicas, filtered by the rule written out
    # again: residues two or more apart, not two SG, closer than the radii less the allowed
    # overlap (less the N/O allowance) plus the search margin
    frames = _distorted(md, seed=2)[:2]
    topology, settings = md["topology"], RefineSettings()
    atoms = geometry.frames_to_atoms(frames, md["torsions"][:2], topology.aatype, topology.oxt_mask)
    found = refinement._clash_pairs(
        atoms, topology, settings.clash_overlap_a, refinement.CLASH_SEARCH_MARGIN_A
    )
    b, n_res, slots = atoms.shape[:3]
    mask = topology.atom_mask.reshape(-1).numpy()
    residue = np.repeat(np.arange(n_res), slots)
    segment = topology.residue_index.numpy()[residue]
    chain = topology.chain_index.numpy()[residue]
    sulfur = topology.sulfur_gamma.reshape(-1).numpy()
    polar = topology.polar.reshape(-1).numpy()
    radius = topology.radius.reshape(-1).numpy()
    i, j = np.triu_indices(n_res * slots, 1)
    rule = mask[i] & mask[j] & ~(sulfur[i] & sulfur[j])
    rule &= (np.abs(segment[i] - segment[j]) >= 2) | (chain[i] != chain[j])
    limit = radius[i] + radius[j] - settings.clash_overlap_a
    limit -= refinement.POLAR_ALLOWANCE_A * (polar[i] & polar[j])
    expected = {}
    for replica in range(b):
        xyz = atoms[replica].reshape(-1, 3).numpy()
        d = np.linalg.norm(xyz[i] - xyz[j], axis=-1)
        base = replica * n_res * slots
        for k in np.flatnonzero(rule & (d < limit + refinement.CLASH_SEARCH_MARGIN_A)):
            expected[(base + int(i[k]), base + int(j[k]))] = float(limit[k])
    pairs = {
        (int(f), int(s)): float(low)
        for f, s, low in zip(found.first, found.second, found.low, strict=True)
    }
    assert len(expected) > 50
    assert pairs.keys() == expected.keys()
    assert max(abs(pairs[k] - v) for k, v in expected.items()) < 1e-9
    assert torch.equal(found.replica, found.first // (n_res * slots))


def test_rigidly_moved_atoms_with_a_new_psi_equal_a_rebuild(md):
    # what refine does instead of a second full rebuild: moved atoms, then O (and OXT) from psi
    frames, torsions, topology = md["frames"][:2], md["torsions"][:2], md["topology"]
    energy = _Energy(frames, torsions, topology, RefineSettings())
    generator = torch.Generator().manual_seed(5)
    motion = 0.2 * torch.randn((*frames.shape, 6), generator=generator, dtype=torch.float64)
    moved, atoms = energy.place(motion)
    turned = torsions.clone()
    turned[..., 2] += torch.randn(turned.shape[:-1], generator=generator, dtype=torch.float64)
    oxt = torch.zeros_like(topology.oxt_mask)
    oxt[-1] = True
    expected = geometry.frames_to_atoms(moved, turned, topology.aatype, oxt)
    placed = geometry.place_psi_atoms(
        geometry.frames_to_atoms(moved, torsions, topology.aatype, oxt), turned[..., 2],
        topology.aatype, oxt,
    )  # fmt: skip
    torch.testing.assert_close(placed, expected, rtol=0, atol=1e-9)
    mask = topology.atom_mask
    shifted = geometry.place_psi_atoms(atoms, turned[..., 2], topology.aatype, topology.oxt_mask)
    rebuilt = geometry.frames_to_atoms(moved, turned, topology.aatype, topology.oxt_mask)
    assert (shifted - rebuilt)[:, mask].abs().max() < 1e-9


def _checked_batch(md):
    """Frames with every check active: MD frames, a stretched bond, a turned phi, distortions,
    and one frame with a non-finite C-alpha."""
    stretched, torsions = _stretched(md, frame=0)
    frames = Rigid.cat(
        [stretched, _phi_turned(md, residue=12, by_deg=150.0)[:1], _distorted(md), md["frames"]],
        dim=0,
    )
    torsions = torch.cat([torsions, md["torsions"][:1], md["torsions"], md["torsions"]])
    return frames, torsions


@pytest.mark.parametrize("rama_weight", [1.0, 0.0])
def test_compiled_violation_equals_the_torch_violation(md, rama_weight):
    frames, torsions = _checked_batch(md)
    energy = _Energy(frames, torsions, md["topology"], RefineSettings(rama_weight=rama_weight))
    expected = energy.violation(energy.raw_atoms).detach()
    got = refinement._violation(energy, energy.raw_atoms)
    assert bool((expected > 100.0).any())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_compiled_checks_equal_the_torch_checks(md):
    frames, torsions = _checked_batch(md)
    energy = _Energy(frames, torsions, md["topology"], RefineSettings())
    atoms = energy.raw_atoms.detach().clone()
    atoms[-1, 5, geometry.CA_SLOT] = float("nan")  # counted as non-finite, judged elsewhere
    atoms[-2, 7:9] += 6.0  # a chain break and a C-N break
    expected = refinement.frame_checks_torch(atoms, energy)
    got = refinement.frame_checks(atoms, energy)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        assert torch.equal(got[key], expected[key]), (key, got[key], expected[key])
    # each check is exercised (fires on some frame, not on all)
    assert not bool(expected["ca_valid"].all()) and bool(expected["ca_valid"].any())
    assert bool(expected["aa_clash"].any()) and bool(expected["aa_break"].any())
    assert int(expected["peptide_outside"].sum()) > 0 and int(expected["rama_outliers"].sum()) > 0


def test_compiled_placement_equals_the_torch_placement(md):
    """The final frames and atoms after the descent's moves, placed by the compiled loop (CPU),
    equal :meth:`_Energy.place` (the torch version, used on GPUs)."""
    energy = _Energy(_distorted(md, seed=2), md["torsions"], md["topology"], RefineSettings())
    generator = torch.Generator().manual_seed(8)
    motion = 0.3 * torch.randn((*energy.frames.shape, 6), generator=generator, dtype=torch.float64)
    frames, atoms = refinement._place(energy, motion)
    expected_frames, expected_atoms = energy.place(motion)
    torch.testing.assert_close(frames.rots, expected_frames.rots, rtol=0, atol=1e-12)
    torch.testing.assert_close(frames.trans, expected_frames.trans, rtol=0, atol=1e-12)
    torch.testing.assert_close(atoms, expected_atoms, rtol=0, atol=1e-12)
    assert (atoms - energy.raw_atoms).norm(dim=-1).max() > 0.1  # the moves moved atoms


def test_compiled_backbone_torsions_equal_the_torch_ones(md):
    """Omega, phi and psi measured on refined atoms by the compiled loop (CPU) equal the tensor
    version, at every bonded junction, and leave the other torsions as they were."""
    frames = _distorted(md, seed=3)
    top = md["topology"]
    atoms = geometry.frames_to_atoms(frames, md["torsions"], top.aatype, top.oxt_mask)
    torsions = md["torsions"] + 0.5  # measured values differ from these everywhere
    got = refinement._backbone_torsions(atoms, torsions, top)
    expected = refinement._backbone_torsions_torch(atoms, torsions, top)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    assert (got[..., :3] != torsions[..., :3]).any()
    assert torch.equal(got[..., 3:], torsions[..., 3:])
