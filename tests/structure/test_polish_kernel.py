"""The compiled polish (energy, L-BFGS, watched pairs) equals its torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from starmd.structure import polish as polishing
from starmd.structure.polish import PolishSettings, _Energy, plan_polish, polish
from tests.structure.test_polish import md_frames  # noqa: F401  (fixture)


@pytest.mark.parametrize("settings", [PolishSettings(), PolishSettings(rotamer_weight=0.0)])
def test_compiled_energy_equals_torch_energy(md_frames, settings):  # noqa: F811
    topology, frames = md_frames["topology"], md_frames["rebuilt"][:4]
    start = torch.from_numpy(frames)
    energy = _Energy(start, plan_polish(topology), settings)
    generator = torch.Generator().manual_seed(3)
    for scale in (0.0, 0.1, 0.3):
        x = start + scale * torch.randn(start.shape, generator=generator, dtype=torch.float64)
        energy.watch(x)
        value, strain, gradient = energy.value_and_grad(x)
        expected = energy.value_and_grad_torch(x)
        assert expected[0].min() > 1.0  # rebuilt MD frames overlap: terms active even at 0
        torch.testing.assert_close(value, expected[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(strain, expected[1], rtol=1e-12, atol=0)
        largest = expected[2].abs().max()
        torch.testing.assert_close(gradient / largest, expected[2] / largest, rtol=0, atol=1e-12)
        without, strain_only, none = energy.value_and_grad(x, gradient=False)
        assert none is None
        torch.testing.assert_close(without, value, rtol=0, atol=0)
        torch.testing.assert_close(strain_only, strain, rtol=0, atol=0)


def test_compiled_polish_equals_the_torch_polish(md_frames, monkeypatch):  # noqa: F811
    topology, frames = md_frames["topology"], md_frames["rebuilt"][:4]
    plan = plan_polish(topology)
    compiled = polish(frames, plan)
    monkeypatch.setattr(polishing._Energy, "value_and_grad", polishing._Energy.value_and_grad_torch)
    monkeypatch.setattr(polishing, "_lbfgs", polishing._lbfgs_torch)
    reference = polish(frames, plan)
    assert np.abs(reference.xyz - frames).max() > 0.1  # the polish moved atoms
    np.testing.assert_allclose(compiled.xyz, reference.xyz, rtol=0, atol=1e-6)
    np.testing.assert_allclose(compiled.overlap_after_a, reference.overlap_after_a, atol=1e-6)


def test_watched_pairs_equal_a_brute_force_search(md_frames):  # noqa: F811
    # every atom pair of every frame, filtered by the rules of the watched list written out
    # again here: residues apart (or consecutive and more than three bonds apart), not two SG,
    # closer than the radii less the N/O allowance less the allowed overlap, plus the margin
    topology, frames = md_frames["topology"], md_frames["rebuilt"][:3].copy()
    frames[1] += np.random.default_rng(0).normal(0, 0.4, frames[1].shape)  # more contacts
    plan = plan_polish(topology)
    settings = PolishSettings()
    watched = polishing._Watched(
        torch.from_numpy(frames),
        polishing._tables(plan),
        settings.target_overlap_a,
        settings.neighbour_overlap_a,
    )
    n = topology.n_atoms
    within_three = set(plan.bonded_neighbours.tolist())
    expected = {}
    for t, x in enumerate(frames):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        for i, j in zip(*np.triu_indices(n, 1), strict=True):
            gap = abs(plan.residue_number[i] - plan.residue_number[j])
            far = gap >= 2 or plan.chain[i] != plan.chain[j]
            if not far and (gap != 1 or i * n + j in within_three):
                continue
            if plan.sulfur_gamma[i] and plan.sulfur_gamma[j]:
                continue
            contact = plan.radius[i] + plan.radius[j]
            contact -= polishing.POLAR_ALLOWANCE_A * (plan.polar[i] and plan.polar[j])
            limit = contact - (settings.target_overlap_a if far else settings.neighbour_overlap_a)
            if d[i, j] < limit + polishing.CLASH_WATCH_MARGIN_A:
                expected[(t, i, j)] = (limit, contact, far)
    found = {
        (int(t), int(i), int(j)): (float(lim), float(c), bool(f))
        for t, i, j, lim, c, f in zip(
            watched.frame, watched.first, watched.second,
            watched.limit, watched.contact, watched.judged, strict=True,
        )
    }  # fmt: skip
    assert len(expected) > 100 and {t for t, _, _ in expected} == {0, 1, 2}
    assert found.keys() == expected.keys()
    for key, (limit, contact, far) in expected.items():
        assert found[key][2] == far
        assert abs(found[key][0] - limit) < 1e-12 and abs(found[key][1] - contact) < 1e-12
    assert (watched.frame[1:] >= watched.frame[:-1]).all()  # ordered by frame
