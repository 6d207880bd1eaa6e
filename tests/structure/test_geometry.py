"""Atoms -> frames + torsions -> atoms on real structures, and torsions against mdtraj."""

import math
import warnings

import mdtraj
import numpy as np
import pytest
import torch

from starmd.structure import geometry
from starmd.structure.io import load_structure
from starmd.structure.rigid import Rigid
from tests.conftest import STRUCTURES

ROUND_TRIP_FILES = ["1ubi.pdb", "2beg.pdb", "3u7t.cif", "1a8o.pdb", "1vii.pdb"]


def _round_trip(path):
    protein, positions = load_structure(path)
    pos = torch.from_numpy(positions)
    aatype = torch.from_numpy(protein.aatype)
    atom_mask = torch.from_numpy(protein.atom_mask)
    oxt = torch.from_numpy(protein.oxt_mask)
    frames = geometry.atoms_to_frames(pos)
    torsions, _ = geometry.atoms_to_torsions(
        pos, aatype, atom_mask, torch.from_numpy(protein.linked_prev)
    )
    rebuilt = geometry.frames_to_atoms(frames, torsions, aatype, oxt)
    mask = geometry.rebuilt_atom_mask(aatype, oxt) & atom_mask
    sq = ((rebuilt - pos) ** 2).sum(-1)
    backbone = sq[:, :4][mask[:, :4]].mean().sqrt().item()
    heavy = sq[mask].mean().sqrt().item()
    return protein, backbone, heavy, mask


@pytest.mark.parametrize("name", ROUND_TRIP_FILES)
def test_round_trip_on_real_structures_within_idealization_error(name):
    protein, backbone, heavy, mask = _round_trip(STRUCTURES / name)
    assert backbone < 0.05, f"backbone RMSD {backbone:.3f} A"
    assert heavy < 0.2, f"heavy-atom RMSD {heavy:.3f} A"
    # every atom the source has is rebuilt, OXT included
    assert mask.sum().item() == protein.atom_mask.sum()


def test_bundled_structures_cover_all_20_amino_acids_and_a_multichain_protein():
    seen, chains = set(), {}
    for name in ROUND_TRIP_FILES:
        protein, _ = load_structure(STRUCTURES / name)
        seen |= set(protein.aatype.tolist())
        chains[name] = len(set(protein.chain_ids))
    assert seen == set(range(20))
    assert max(chains.values()) > 1


def test_frames_are_orthonormal_right_handed():
    _, positions = load_structure(STRUCTURES / "1ubi.pdb")
    frames = geometry.atoms_to_frames(torch.from_numpy(positions))
    eye = torch.eye(3, dtype=torch.float64).expand_as(frames.rots)
    torch.testing.assert_close(frames.rots @ frames.rots.transpose(-1, -2), eye)
    det = torch.linalg.det(frames.rots)
    torch.testing.assert_close(det, torch.ones_like(det))


def _mdtraj_angles(path, fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = mdtraj.load(str(path))
    traj = traj.atom_slice(traj.topology.select("protein"))
    indices, angles = fn(traj)
    residues = [
        traj.topology.atom(int(q[1 if fn is not mdtraj.compute_omega else 2])).residue
        for q in indices
    ]
    return residues, angles[0]


@pytest.mark.parametrize(
    ("column", "fn"),
    [
        (0, mdtraj.compute_omega),
        (1, mdtraj.compute_phi),
        (2, mdtraj.compute_psi),
        (3, mdtraj.compute_chi1),
        (4, mdtraj.compute_chi2),
        (5, mdtraj.compute_chi3),
        (6, mdtraj.compute_chi4),
    ],
)
@pytest.mark.parametrize("name", ["1ubi.pdb", "1vii.pdb", "2beg.pdb"])
def test_torsions_agree_with_mdtraj(name, column, fn):
    protein, positions = load_structure(STRUCTURES / name)
    torsions, mask = geometry.atoms_to_torsions(
        torch.from_numpy(positions),
        torch.from_numpy(protein.aatype),
        torch.from_numpy(protein.atom_mask),
        torch.from_numpy(protein.linked_prev),
    )
    lookup = {
        (c, n): i
        for i, (c, n) in enumerate(zip(protein.chain_ids, protein.residue_numbers, strict=True))
    }
    residues, reference = _mdtraj_angles(STRUCTURES / name, fn)
    assert len(residues) > 0
    compared = 0
    for residue, ref in zip(residues, reference, strict=True):
        i = lookup[(residue.chain.chain_id, residue.resSeq)]
        assert mask[i, column], f"torsion {column} of {protein.label(i)} should be defined"
        diff = math.remainder(torsions[i, column].item() - float(ref), 2 * math.pi)
        assert abs(diff) < 1e-3, f"{protein.label(i)} torsion {column}: {diff}"
        compared += 1
    # mdtraj finds every torsion we define for omega/phi/chi (psi: we also define chain ends)
    if column != 2:
        assert compared == int(mask[:, column].sum())


def test_torsion_frame_convention_gives_the_requested_dihedral():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(100, 3, generator=g, dtype=torch.float64) for _ in range(3))
    angle = (torch.rand(100, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    point = geometry.torsion_frame(a, b, c, angle).apply(
        torch.tensor([0.5, 1.3, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(geometry.dihedral(a, b, c, point), angle)


def test_alternative_torsions_rename_symmetric_atoms():
    protein, positions = load_structure(STRUCTURES / "1ubi.pdb")
    aatype = torch.from_numpy(protein.aatype)
    pos = torch.from_numpy(positions)
    torsions, _ = geometry.atoms_to_torsions(
        pos, aatype, torch.from_numpy(protein.atom_mask), torch.from_numpy(protein.linked_prev)
    )
    alt = geometry.alternative_torsions(torsions, aatype)
    frames = geometry.atoms_to_frames(pos)
    a = geometry.frames_to_atoms(frames, torsions, aatype)
    b = geometry.frames_to_atoms(frames, alt, aatype)
    asp = int(np.flatnonzero(protein.aatype == 3)[0])  # first ASP: OD1 and OD2 swap places
    torch.testing.assert_close(a[asp, 6], b[asp, 7], atol=0.02, rtol=0)
    torch.testing.assert_close(a[asp, :6], b[asp, :6])
    non_symmetric = protein.aatype == 11  # LYS: unchanged
    torch.testing.assert_close(a[non_symmetric], b[non_symmetric])


def test_rebuild_is_differentiable_and_batched():
    protein, positions = load_structure(STRUCTURES / "1vii.pdb")
    pos = torch.from_numpy(positions)
    aatype = torch.from_numpy(protein.aatype)
    torsions, _ = geometry.atoms_to_torsions(
        pos, aatype, torch.from_numpy(protein.atom_mask), torch.from_numpy(protein.linked_prev)
    )
    frames = geometry.atoms_to_frames(pos)
    batched = geometry.frames_to_atoms(
        frames.unsqueeze(0), torsions[None].expand(3, -1, -1).clone().requires_grad_(), aatype
    )
    assert batched.shape == (3, protein.n_residues, 15, 3)
    batched.sum().backward()


def test_wrap_angle_maps_onto_the_half_open_interval_from_minus_pi():
    import math

    from starmd.structure.geometry import wrap_angle

    angles = torch.tensor(
        [-math.pi, math.pi, 3 * math.pi, 0.5, -0.5 - 2 * math.pi], dtype=torch.float64
    )
    wrapped = wrap_angle(angles)
    assert ((wrapped >= -math.pi) & (wrapped < math.pi)).all()
    torch.testing.assert_close(
        wrapped, torch.tensor([-math.pi, -math.pi, -math.pi, 0.5, -0.5], dtype=torch.float64)
    )


def test_dihedral_gradient_equals_autograd_and_finite_differences():
    generator = torch.Generator().manual_seed(5)
    points = torch.randn(4, 200, 3, generator=generator, dtype=torch.float64)
    points.requires_grad_(True)
    angle = geometry.dihedral(*points)
    (expected,) = torch.autograd.grad(angle.sum(), points)
    value, gradient = geometry.dihedral_gradient(*points.detach())
    torch.testing.assert_close(value, angle.detach())
    torch.testing.assert_close(torch.stack(gradient), expected, rtol=1e-9, atol=1e-10)
    # one point moved a little along x changes the angle by its gradient's x component
    step = 1e-6
    moved = points.detach().clone()
    moved[2, :, 0] += step
    change = geometry.dihedral(*moved) - value
    wrapped = torch.remainder(change + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(wrapped / step, gradient[2][:, 0], rtol=1e-4, atol=1e-4)


def _proline_rings(atoms, aatype):
    """N-CD and CG-CD lengths (Angstrom) of every proline in ``atoms (..., L, 15, 3)``."""
    pro = aatype == geometry.PROLINE
    slot = {n: i for i, n in enumerate(("N", "CA", "C", "O", "CB", "CG", "CD"))}
    ring = atoms[..., pro, :, :]
    n_cd = (ring[..., slot["N"], :] - ring[..., slot["CD"], :]).norm(dim=-1)
    cg_cd = (ring[..., slot["CG"], :] - ring[..., slot["CD"], :]).norm(dim=-1)
    return n_cd, cg_cd


@pytest.mark.parametrize("name", ["1ubi.pdb", "1a8o.pdb"])
def test_rebuilt_proline_rings_are_closed_and_near_the_input(name):
    protein, positions = load_structure(STRUCTURES / name)
    pos = torch.from_numpy(positions)
    aatype = torch.from_numpy(protein.aatype)
    assert (aatype == geometry.PROLINE).sum() >= 2
    frames = geometry.atoms_to_frames(pos)
    torsions, _ = geometry.atoms_to_torsions(
        pos, aatype, torch.from_numpy(protein.atom_mask), torch.from_numpy(protein.linked_prev)
    )
    rebuilt = geometry.frames_to_atoms(frames, torsions, aatype)
    n_cd, cg_cd = _proline_rings(rebuilt, aatype)
    torch.testing.assert_close(n_cd, torch.full_like(n_cd, geometry.PRO_N_CD_A))
    torch.testing.assert_close(cg_cd, torch.full_like(cg_cd, geometry.PRO_CG_CD_A))
    # the input's own ring bond, for scale: a crystal structure's N-CD is 1.44-1.50 A
    n_cd_input, _ = _proline_rings(pos, aatype)
    assert ((n_cd_input - geometry.PRO_N_CD_A).abs() < 0.05).all()
    cd = rebuilt[aatype == geometry.PROLINE, 6] - pos[aatype == geometry.PROLINE, 6]
    assert cd.norm(dim=-1).max() < 0.5


def test_proline_ring_closes_for_any_chi_and_moves_with_the_frame():
    """Whatever chi2 is, and any chi1 a ring allows (MD and generated frames: within +-50
    degrees), the rebuilt N-CD is the ideal length (a pair off the ring's puckers left it open by
    up to 0.4 A before), and a rigid motion of the frames moves the ring with them."""
    gen = torch.Generator().manual_seed(0)
    aatype = torch.tensor([geometry.PROLINE] * 64)
    frames = Rigid.identity((64,), dtype=torch.float64)
    torsions = (torch.rand(64, 7, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    torsions[:, 3] = torsions[:, 3] * 50 / 180
    atoms = geometry.frames_to_atoms(frames, torsions, aatype)
    n_cd, cg_cd = _proline_rings(atoms, aatype)
    torch.testing.assert_close(n_cd, torch.full_like(n_cd, geometry.PRO_N_CD_A))
    torch.testing.assert_close(cg_cd, torch.full_like(cg_cd, geometry.PRO_CG_CD_A))
    rotation = Rigid.from_3_points(
        torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64),
        torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64),
        torch.tensor([-2.0, 0.4, 1.0], dtype=torch.float64),
    )
    moved = Rigid(rotation.rots @ frames.rots, (rotation.rots @ frames.trans[..., None])[..., 0])
    moved = Rigid(moved.rots, moved.trans + rotation.trans)
    real = geometry.residue_atom_mask(aatype)  # absent slots stay at zero
    torch.testing.assert_close(
        geometry.frames_to_atoms(moved, torsions, aatype)[real], rotation.apply(atoms)[real]
    )


@pytest.mark.parametrize("name", ["1ubi.pdb", "2beg.pdb", "1a8o.pdb"])
def test_junction_dihedrals_of_frames_agree_with_the_atoms_phi_and_psi(name):
    """psi(i) and phi(i+1) from the idealised N, CA, C the frames place: those of the rebuilt
    atoms exactly; the real atoms' (mdtraj's convention, through atoms_to_torsions) within 15
    degrees across every peptide bond and 4 on average (the ideal backbone is not the real one:
    1-3 degrees mean, up to 13 for phi on these files); unchanged by a global rigid motion;
    batched over leading dimensions."""
    protein, positions = load_structure(STRUCTURES / name)
    pos = torch.from_numpy(positions).double()
    aatype = torch.from_numpy(protein.aatype)
    torsions, _ = geometry.atoms_to_torsions(
        pos, aatype, torch.from_numpy(protein.atom_mask), torch.from_numpy(protein.linked_prev)
    )
    frames = geometry.atoms_to_frames(pos)
    got = geometry.junction_dihedrals(frames, aatype)
    n, ca, c = geometry.frames_to_atoms(frames, torsions, aatype)[:, :3].unbind(-2)
    rebuilt_psi = geometry.dihedral(n[:-1], ca[:-1], c[:-1], n[1:])
    rebuilt_phi = geometry.dihedral(c[:-1], n[1:], ca[1:], c[1:])
    torch.testing.assert_close(got, torch.stack([rebuilt_psi, rebuilt_phi], -1))
    linked = torch.from_numpy(protein.linked_prev)[1:]
    assert linked.sum() > 10
    for column, want in ((0, torsions[:-1, 2]), (1, torsions[1:, 1])):
        diff = (torch.remainder(got[:, column] - want + math.pi, 2 * math.pi) - math.pi).abs()
        assert diff[linked].max().item() < math.radians(15.0)
        assert diff[linked].mean().item() < math.radians(4.0)
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    q = q * torch.linalg.det(q)  # a proper rotation
    moved = Rigid(q @ frames.rots, frames.trans @ q.T + 5.0)
    torch.testing.assert_close(geometry.junction_dihedrals(moved, aatype), got)
    stacked = Rigid(frames.rots.expand(2, 3, -1, 3, 3), frames.trans.expand(2, 3, -1, 3))
    batched = geometry.junction_dihedrals(stacked, aatype[None, None])
    assert batched.shape == (2, 3, len(aatype) - 1, 2)
    torch.testing.assert_close(batched[1, 2], got)
