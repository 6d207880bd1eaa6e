"""The compiled refinement descent takes the same steps as the torch one."""

from __future__ import annotations

import dataclasses

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


@pytest.mark.parametrize("rama_weight", [1.0, 0.0])
def test_compiled_descent_equals_torch_descent(md, rama_weight):
    # every term active: a stretched bond, a Ramachandran outlier, random distortions (clashes)
    stretched, torsions = _stretched(md, frame=0)
    frames = Rigid.cat(
        [stretched, _phi_turned(md, residue=12, by_deg=150.0)[:1], _distorted(md)], dim=0
    )
    torsions = torch.cat([torsions, md["torsions"][:1], md["torsions"]])
    settings = RefineSettings(rama_weight=rama_weight)
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
