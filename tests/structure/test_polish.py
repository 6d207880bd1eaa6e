"""Atom-level polish: removes the clashes that frames + torsions put into real MD frames, keeps
the covalent geometry and chirality, barely moves MD itself, is equivariant, and polishes every
frame on its own."""

from __future__ import annotations

from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from starmd.data.prepare import positions_to_frames_torsions
from starmd.diffusion.so3 import random_rotations
from starmd.evaluate import validity
from starmd.structure import geometry
from starmd.structure.io import build_topology, iter_trajectory
from starmd.structure.local_geometry import PROLINE_C_CD_A
from starmd.structure.polish import (
    PolishSettings,
    _Energy,
    _length,
    _volume,
    plan_polish,
    polish,
)
from starmd.structure.rigid import Rigid

MD = Path(__file__).resolve().parents[2] / "corpus" / "md" / "2wqg"


@pytest.fixture(scope="module")
def md_frames():
    """Eight frames of 2WQG's corpus MD: heavy atoms as written (Angstrom) and the same frames
    taken through residue frames + torsions and rebuilt (what every generated frame is)."""
    protein, positions, _ = next(
        iter_trajectory(MD / "2wqg.pdb", MD / "2wqg_prod_R1_fit.xtc", chunk=8)
    )
    atom_mask = geometry.rebuilt_atom_mask(
        torch.from_numpy(protein.aatype), torch.from_numpy(protein.oxt_mask)
    ).numpy()
    topology, slots = build_topology(protein, atom_mask)
    frames, torsions = positions_to_frames_torsions(positions, protein)
    rebuilt = geometry.frames_to_atoms(
        Rigid.from_tensor_7(torch.from_numpy(frames).double()),
        torch.from_numpy(torsions).double(),
        torch.from_numpy(protein.aatype).long(),
        torch.from_numpy(protein.oxt_mask),
    ).numpy()
    return {
        "topology": topology,
        "md": np.asarray(positions, dtype=np.float64)[:, slots[:, 0], slots[:, 1]],
        "rebuilt": rebuilt[:, slots[:, 0], slots[:, 1]],
    }


def _checks(xyz: np.ndarray, topology: md.Topology) -> dict[str, np.ndarray]:
    return validity.check_validity(xyz, validity.plan_validity(topology))


def test_plan_covers_the_covalent_geometry(md_frames):
    plan = plan_polish(md_frames["topology"])
    top = md_frames["topology"]
    assert len(plan.bonds) == top.n_bonds  # heavy-atom bonds, peptide bonds included
    centres = {top.atom(int(k)).name for k in plan.branches[:, 0]}
    assert {"CA", "C"} <= centres  # CA chirality and the carbonyl's planarity are held
    assert len(plan.phi_psi) == sum(
        1 for r in list(top.residues)[1:-1] if r.name != "GLY"
    )  # one chain, no gaps: every inner non-glycine residue is judged


def test_polish_removes_the_clashes_of_rebuilt_md_frames(md_frames):
    topology, rebuilt = md_frames["topology"], md_frames["rebuilt"]
    before = _checks(rebuilt, topology)
    assert before["aa_clash"].sum() >= 4  # the representation's idealised geometry clashes
    plan = plan_polish(topology)
    out = polish(rebuilt, plan)
    after = _checks(out.xyz, topology)
    assert not after["aa_clash"].any()
    assert (after["rama_outlier_fraction"] <= before["rama_outlier_fraction"] + 1e-12).all()
    assert after["valid"].sum() >= before["valid"].sum()
    x0, x1 = torch.from_numpy(rebuilt), torch.from_numpy(out.xyz)
    for name, tolerance in (("bonds", 0.03), ("angles", 0.25), ("rigid", 0.25)):
        pairs = torch.from_numpy(getattr(plan, name))
        assert (_length(x1, pairs) - _length(x0, pairs)).abs().max() < tolerance, name
    branches = torch.from_numpy(plan.branches)
    v0, v1 = _volume(x0, branches), _volume(x1, branches)
    chiral = v0.abs() > 1.0
    assert chiral.any() and bool((torch.sign(v0) == torch.sign(v1))[chiral].all())
    assert out.max_shift_a.max() < 2.0
    assert (out.overlap_after_a <= out.overlap_before_a).all()


def test_polish_without_measuring_gives_the_same_frames(md_frames):
    """``measure=False`` (what the trajectory writer asks) skips only the overlap report."""
    plan = plan_polish(md_frames["topology"])
    measured = polish(md_frames["rebuilt"], plan)
    quiet = polish(md_frames["rebuilt"], plan, measure=False)
    assert np.array_equal(quiet.xyz, measured.xyz)
    assert np.array_equal(quiet.max_shift_a, measured.max_shift_a)
    assert quiet.overlap_before_a is None and quiet.overlap_after_a is None
    assert measured.overlap_before_a.max() > 0.4  # the frames had clashes to measure


def test_polish_barely_moves_md_and_leaves_a_clean_frame_alone(md_frames):
    topology, frames = md_frames["topology"], md_frames["md"]
    out = polish(frames, plan_polish(topology))
    assert out.max_shift_a.max() < 0.3
    assert _checks(out.xyz, topology)["valid"].sum() >= _checks(frames, topology)["valid"].sum()
    # nothing to fix (no overlap counted, no Ramachandran or omega term): not moved at all
    calm = PolishSettings(
        target_overlap_a=5.0, neighbour_overlap_a=5.0, rama_weight=0.0, omega_tolerance_deg=180.0
    )
    still = polish(frames[:2], plan_polish(topology), calm)
    np.testing.assert_array_equal(still.xyz, frames[:2])


def test_polish_fixes_a_side_chain_pushed_into_its_neighbour(md_frames):
    topology, frame = md_frames["topology"], md_frames["md"][:1].copy()
    plan = plan_polish(topology)
    # move one side chain's tip 1 A into the nearest atom of a residue two or more away
    tip = next(a for a in topology.atoms if a.residue.name == "LYS" and a.name == "NZ")
    others = [
        a.index
        for a in topology.atoms
        if abs(a.residue.index - tip.residue.index) >= 2 and a.element.symbol == "C"
    ]
    d = np.linalg.norm(frame[0, others] - frame[0, tip.index], axis=-1)
    target = others[int(np.argmin(d))]
    direction = frame[0, target] - frame[0, tip.index]
    direction /= np.linalg.norm(direction)
    frame[0, tip.index] += direction * (d.min() - 2.0)  # NZ 2.0 A from a carbon: 1.25 A overlap
    assert _checks(frame, topology)["aa_clash"][0]
    out = polish(frame, plan)
    assert not _checks(out.xyz, topology)["aa_clash"][0]


def test_polish_separates_consecutive_residues_pushed_onto_each_other(md_frames):
    """The evaluation's clash rule skips neighbours in sequence; the polish does not: atoms of
    residues i and i + 1 more than three bonds apart keep MD's spacing (BioEmu's 1.0 A filter
    is what rollouts failed)."""
    topology, frame = md_frames["topology"], md_frames["md"][:1].copy()
    plan = plan_polish(topology)
    n = topology.n_atoms
    residues = list(topology.residues)
    first, second = residues[10], residues[11]

    def atom(residue, name):
        return next(a.index for a in residue.atoms if a.name == name)

    def key(a, b):
        return min(a, b) * n + max(a, b)

    near = set(plan.bonded_neighbours.tolist())
    assert key(atom(first, "C"), atom(second, "N")) in near  # the peptide bond
    assert key(atom(first, "O"), atom(second, "CA")) in near  # 1-4 across it
    assert key(atom(first, "O"), atom(second, "C")) not in near  # 1-5: judged
    # put CB of residue i + 1 0.8 A from the carbonyl O of residue i
    o, cb = atom(first, "O"), atom(second, "CB")
    direction = frame[0, o] - frame[0, cb]
    gap = np.linalg.norm(direction)
    frame[0, cb] += direction / gap * (gap - 0.8)
    out = polish(frame, plan)
    distance = np.linalg.norm(out.xyz[0, o] - out.xyz[0, cb])
    settings = PolishSettings()
    limit = 1.70 + 1.52 - settings.neighbour_overlap_a - settings.settle_overlap_a
    assert distance > limit - 0.02  # at most the allowed overlap plus its settle slack left
    assert distance > 2.0


def test_polish_puts_a_pyramidal_proline_nitrogen_back_in_plane():
    """Rollouts pyramidalise a proline's N until C(i) lies on CD(i+1) (BioEmu's 1.0 A rule):
    the polish holds that N planar and C(i)-CD(i+1) at its ideal length, whatever the input."""
    folder = MD.parent / "2k1b"
    trajectory = md.load(folder / "2k1b_prod_R1_fit.xtc", top=folder / "2k1b.pdb")[:1]
    trajectory = trajectory.atom_slice(trajectory.topology.select("not element H"))
    topology, frame = trajectory.topology, trajectory.xyz.astype(np.float64) * 10
    plan = plan_polish(topology)
    prolines = [r for r in topology.residues if r.name == "PRO" and r.index > 0]
    assert len(plan.ideal) == len(prolines) == int(plan.planar.sum())
    # MD: already at the ideal length and planar
    first, second = plan.ideal[:, 0].astype(int), plan.ideal[:, 1].astype(int)
    md_length = np.linalg.norm(frame[0, first] - frame[0, second], axis=-1)
    assert np.abs(md_length - PROLINE_C_CD_A[0]).max() < 0.15
    # fold the ring of the first proline about its N-CA axis so that CD comes 1.0 A from C(i)
    proline = prolines[0]
    c_prev = next(a.index for a in topology.residue(proline.index - 1).atoms if a.name == "C")
    atom = {a.name: a.index for a in proline.atoms}
    n, ca = frame[0, atom["N"]], frame[0, atom["CA"]]
    axis = (ca - n) / np.linalg.norm(ca - n)
    ring = [atom[name] for name in ("CB", "CG", "CD")]

    def turned(angle):
        rotation = Rotation.from_rotvec(angle * axis).as_matrix()
        out = frame.copy()
        out[0, ring] = (frame[0, ring] - n) @ rotation.T + n
        return out

    angles = np.radians(np.arange(0, 360, 2))
    gaps = [np.linalg.norm(turned(a)[0, atom["CD"]] - frame[0, c_prev]) for a in angles]
    bad = turned(angles[int(np.argmin(np.abs(np.array(gaps) - 1.0)))])
    assert np.linalg.norm(bad[0, atom["CD"]] - bad[0, c_prev]) < 1.3
    out = polish(bad, plan)
    gap = np.linalg.norm(out.xyz[0, atom["CD"]] - out.xyz[0, c_prev])
    assert abs(gap - PROLINE_C_CD_A[0]) < 0.1


def test_polish_is_equivariant(md_frames):
    topology, frames = md_frames["topology"], md_frames["rebuilt"][:2]
    plan = plan_polish(topology)
    generator = torch.Generator().manual_seed(3)
    rotation = random_rotations((1,), generator, dtype=torch.float64)[0].numpy()
    shift = np.array([12.0, -7.0, 3.5])
    moved = polish(frames @ rotation.T + shift, plan).xyz
    np.testing.assert_allclose(moved, polish(frames, plan).xyz @ rotation.T + shift, atol=1e-5)


def test_each_frame_is_polished_on_its_own(md_frames):
    topology, frames = md_frames["topology"], md_frames["rebuilt"][:3]
    plan = plan_polish(topology)
    together = polish(frames, plan).xyz
    alone = polish(frames[1:2], plan).xyz
    np.testing.assert_allclose(together[1:2], alone, atol=1e-9)


def test_closed_form_gradient_equals_autograd(md_frames):
    topology, frames = md_frames["topology"], md_frames["rebuilt"][:3]
    start = torch.from_numpy(frames)
    energy = _Energy(start, plan_polish(topology), PolishSettings())
    generator = torch.Generator().manual_seed(7)
    x = start + 0.1 * torch.randn(start.shape, generator=generator, dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    value, _, _ = energy.value_and_grad_torch(leaf, gradient=False)
    (expected,) = torch.autograd.grad(value.sum(), leaf)
    closed_value, strain, gradient = energy.value_and_grad_torch(x)
    torch.testing.assert_close(closed_value, value.detach())
    assert (strain > 1).all()  # randomly shaken frames: far from settled
    scale = expected.abs().max()
    torch.testing.assert_close(gradient / scale, expected / scale, rtol=0, atol=1e-12)


def _rotate_about(points: np.ndarray, axis_from: np.ndarray, axis_to: np.ndarray, degrees):
    axis = (axis_to - axis_from) / np.linalg.norm(axis_to - axis_from)
    theta = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k
    return (points - axis_from) @ rotation.T + axis_from


def test_polish_brings_a_twisted_peptide_back_to_trans(md_frames):
    topology, frame = md_frames["topology"], md_frames["md"][:1].copy()
    residue = list(topology.residues)[20]
    c = next(a.index for a in topology.atoms if a.residue.index == 19 and a.name == "C")
    n = next(a.index for a in residue.atoms if a.name == "N")
    after = [a.index for a in topology.atoms if a.residue.index >= 20 and a.index != n]
    frame[0, after] = _rotate_about(frame[0, after], frame[0, c], frame[0, n], 40.0)
    trajectory = md.Trajectory(frame / 10.0, topology)
    _, omega = md.compute_omega(trajectory)
    twisted = np.degrees(np.abs(omega[0]))
    assert (twisted < 150).sum() == 1  # that peptide bond alone is now far from planar
    out = polish(frame, plan_polish(topology))
    _, omega = md.compute_omega(md.Trajectory(out.xyz / 10.0, topology))
    assert (np.degrees(np.abs(omega[0])) > 160).all()
    plan = plan_polish(topology)
    x0, x1 = torch.from_numpy(frame), torch.from_numpy(out.xyz)
    bonds = torch.from_numpy(plan.bonds)
    assert (_length(x1, bonds) - _length(x0, bonds)).abs().max() < 0.03


def test_polish_turns_a_side_chain_back_into_its_rotamer(md_frames):
    topology, frame = md_frames["topology"], md_frames["md"][:1].copy()
    residue = next(r for r in topology.residues if r.name in ("SER", "THR", "VAL", "CYS"))
    atoms = {a.name: a.index for a in residue.atoms}
    chi1_atoms = [atoms["N"], atoms["CA"], atoms["CB"]]
    side = [i for name, i in atoms.items() if name not in ("N", "CA", "C", "O", "CB")]
    trajectory = md.Trajectory(frame / 10.0, topology)
    quads, chi1 = md.compute_chi1(trajectory)
    row = next(k for k, q in enumerate(quads) if q[1] == atoms["CA"])
    now = np.degrees(chi1[0, row]) % 360.0
    nearest = min((60.0, 180.0, 300.0), key=lambda c: abs((now - c + 180.0) % 360.0 - 180.0))
    # turn chi1 to 55 degrees from that staggered rotamer: 15 beyond the check's tolerance
    turn = (nearest + 55.0) - now
    ca, cb = frame[0, chi1_atoms[1]], frame[0, chi1_atoms[2]]
    frame[0, side] = _rotate_about(frame[0, side], ca, cb, turn)
    assert _checks(frame, topology)["rotamer_outlier_fraction"][0] > 0
    plan = plan_polish(topology)
    out = polish(frame, plan)
    assert _checks(out.xyz, topology)["rotamer_outlier_fraction"][0] == 0
    calm = polish(frame, plan, PolishSettings(rotamer_weight=0.0))
    assert _checks(calm.xyz, topology)["rotamer_outlier_fraction"][0] > 0  # the term did it
