"""The compiled heavy-atom rebuild equals :func:`geometry.frames_to_atoms`."""

from __future__ import annotations

import pytest
import torch

from starmd.structure import geometry
from starmd.structure.atoms_kernel import heavy_atoms, psi_atoms, rebuild_atoms
from starmd.structure.io import load_structure
from starmd.structure.rigid import Rigid
from tests.conftest import STRUCTURES
from tests.structure.test_geometry import ROUND_TRIP_FILES


def _inputs(name: str):
    protein, positions = load_structure(STRUCTURES / name)
    pos = torch.from_numpy(positions)
    aatype = torch.from_numpy(protein.aatype)
    torsions, _ = geometry.atoms_to_torsions(
        pos,
        aatype,
        torch.from_numpy(protein.atom_mask),
        torch.from_numpy(protein.linked_prev),
    )
    return geometry.atoms_to_frames(pos), torsions, aatype, torch.from_numpy(protein.oxt_mask)


@pytest.mark.parametrize("name", ROUND_TRIP_FILES)  # all 20 residue types, prolines, OXT
def test_compiled_rebuild_equals_torch_on_real_structures(name):
    frames, torsions, aatype, oxt = _inputs(name)
    generator = torch.Generator().manual_seed(0)
    # a batch of 3: the structure, and twice with every torsion moved at random (rings reopened
    # and closed again, chis far from the input's)
    moved = torsions + torch.randn((2, *torsions.shape), generator=generator, dtype=torch.float64)
    batch_torsions = torch.cat([torsions[None], moved])
    batch_frames = Rigid(frames.rots.expand(3, -1, -1, -1), frames.trans.expand(3, -1, -1))
    for oxt_mask in (oxt, None):
        expected = geometry.frames_to_atoms(batch_frames, batch_torsions, aatype, oxt_mask)
        got = rebuild_atoms(batch_frames, batch_torsions, aatype, oxt_mask)
        assert got.dtype == torch.float64 and got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    assert bool((aatype == geometry.PROLINE).any()) or name != "1ubi.pdb"


def test_float32_frames_and_broadcast_torsions():
    frames, torsions, aatype, oxt = _inputs("1ubi.pdb")
    frames32 = Rigid(frames.rots.float()[None], frames.trans.float()[None])  # (1, L)
    torsions32 = torsions.float().expand(2, -1, -1)  # (2, L, 7): frames broadcast
    got = rebuild_atoms(frames32, torsions32, aatype, oxt)
    expected = geometry.frames_to_atoms(frames32, torsions32, aatype, oxt)
    assert got.dtype == torch.float32 and got.shape == (2, len(aatype), 15, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_heavy_atoms_keeps_the_gradient_path_for_training():
    frames, torsions, aatype, oxt = _inputs("1vii.pdb")
    angles = torsions.clone().requires_grad_(True)
    atoms = heavy_atoms(frames, angles, aatype, oxt)
    assert atoms.requires_grad  # the torch version, differentiable
    atoms[..., 4:, :].sum().backward()
    assert angles.grad is not None and float(angles.grad[:, 3].abs().sum()) > 0
    with torch.no_grad():
        compiled = heavy_atoms(frames, angles, aatype, oxt)
    assert not compiled.requires_grad
    torch.testing.assert_close(compiled, atoms.detach(), rtol=0, atol=1e-10)


def test_rebuilt_torsions_read_back():
    """The compiled atoms carry the side-chain torsions they were built from."""
    frames, torsions, aatype, oxt = _inputs("1ubi.pdb")
    atoms = rebuild_atoms(frames, torsions, aatype, oxt)
    measured, mask = geometry.atoms_to_torsions(
        atoms, aatype, geometry.rebuilt_atom_mask(aatype, oxt), torch.ones_like(aatype).bool()
    )
    diff = geometry.wrap_angle(measured - torsions)[:, 3:][mask[:, 3:]]
    proline = (aatype == geometry.PROLINE)[:, None].expand(-1, 4)[mask[:, 3:]]
    # a proline's CD is moved to close its ring, so its chi2 is not the requested one
    assert int(mask[:, 3:].sum()) > 100 and bool(proline.any())
    assert float(diff[~proline].abs().max()) < 1e-7


def test_compiled_psi_placement_equals_torch():
    frames, torsions, aatype, oxt = _inputs("1a8o.pdb")
    atoms = geometry.frames_to_atoms(frames, torsions, aatype, oxt)[None].expand(2, -1, -1, -1)
    psi = torsions[:, 2] + torch.tensor([[0.0], [0.7]], dtype=torch.float64)  # (2, L)
    expected = geometry.place_psi_atoms(atoms, psi, aatype, oxt)
    got = psi_atoms(atoms, psi, aatype, oxt)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    moved = (got[1] - atoms[1]).norm(dim=-1)  # the second batch member's O (and OXT) moved
    assert float(moved[:, geometry.O_SLOT].min()) > 0.1
    assert float(moved[:, : geometry.O_SLOT].max()) == 0.0 and float(moved[:, 4:14].max()) == 0.0


def test_compiled_psi_placement_leaves_its_input_alone():
    frames, torsions, aatype, oxt = _inputs("1vii.pdb")
    atoms = geometry.frames_to_atoms(frames, torsions, aatype, oxt)  # float64
    before = atoms.clone()
    moved = psi_atoms(atoms, torsions[:, 2] + 0.5, aatype, oxt)
    assert torch.equal(atoms, before)
    assert float((moved - atoms)[:, geometry.O_SLOT].norm(dim=-1).min()) > 0.1
