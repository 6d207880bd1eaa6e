"""Rollout refinement: equivariant, leaves MD frames in place, fixes stretched peptide bonds and
clashes, bounded; a refined rollout stays causal, and its sidecar reports raw next to refined."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import mdtraj
import pytest
import torch

from starmd.data.prepare import positions_to_frames_torsions
from starmd.diffusion.so3 import exp_map, random_rotations
from starmd.evaluate import validity
from starmd.modelfile import load_model
from starmd.sample.generate import GenerationSettings, generate
from starmd.sample.refine import (
    Refined,
    RefinementLedger,
    RefineSettings,
    _Energy,
    _energy_and_grad,
    _junction_restraints,
    _phi_psi,
    max_displacement_a,
    refine,
    refine_topology,
)
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure import geometry
from starmd.structure.io import iter_trajectory, load_structure
from starmd.structure.local_geometry import (
    C_N_CA_DEG,
    CA_C_N_DEG,
    CLASH_OVERLAP_A,
    POLAR_ALLOWANCE_A,
    PROLINE_C_CD_A,
    PROLINE_CD_SLOT,
    atom_contacts,
)
from starmd.structure.ramachandran import ramachandran_allowed, ramachandran_distance_deg
from starmd.structure.rigid import Rigid
from tests.conftest import STRUCTURES

MD = Path(__file__).resolve().parents[2] / "corpus" / "md" / "2wqg"
VILLIN = STRUCTURES / "1vii.pdb"


def _md_frames(folder: Path, frames: int) -> dict:
    """The first frames of a corpus protein's MD replica 1 as frames + torsions (float64) and
    the protein's refinement tables."""
    name = folder.name
    protein, positions, _ = next(
        iter_trajectory(folder / f"{name}.pdb", folder / f"{name}_prod_R1_fit.xtc", chunk=frames)
    )
    frames, torsions = positions_to_frames_torsions(positions, protein)
    topology = refine_topology(
        torch.from_numpy(protein.aatype).long(),
        torch.from_numpy(protein.segment_index).long(),
        torch.from_numpy(protein.chain_index).long(),
        torch.from_numpy(protein.oxt_mask),
        torch.float64,
    )
    return {
        "frames": Rigid.from_tensor_7(torch.from_numpy(frames).double()),
        "torsions": torch.from_numpy(torsions).double(),
        "topology": topology,
    }


@pytest.fixture(scope="module")
def md():
    """Ten frames of 2WQG's corpus MD (:func:`_md_frames`)."""
    return _md_frames(MD, 10)


def _atoms(frames: Rigid, torsions: torch.Tensor, topology) -> torch.Tensor:
    return geometry.frames_to_atoms(frames, torsions, topology.aatype, topology.oxt_mask)


def _c_n(atoms: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(
        atoms[:, :-1, geometry.C_SLOT] - atoms[:, 1:, geometry.N_SLOT], dim=-1
    )


def _shifted(frames: Rigid, residues: slice, shift: torch.Tensor) -> Rigid:
    trans = frames.trans.clone()
    trans[:, residues] += shift
    return Rigid(frames.rots, trans)


def _stretched(md, frame: int = 0, junction: int = 20, by_a: float = 0.6):
    """One MD frame whose residues after ``junction`` are moved ``by_a`` along C->N: the peptide
    bond C(junction)-N(junction+1) is stretched by about that much."""
    frames, torsions = md["frames"][frame : frame + 1], md["torsions"][frame : frame + 1]
    atoms = _atoms(frames, torsions, md["topology"])
    direction = atoms[0, junction + 1, geometry.N_SLOT] - atoms[0, junction, geometry.C_SLOT]
    shift = by_a * direction / direction.norm()
    return _shifted(frames, slice(junction + 1, None), shift), torsions


def test_refinement_barely_moves_md_frames(md):
    # MD frames rebuilt with idealised residue geometry are not violation-free: side-chain tips
    # land up to 2.8 A from the MD's atoms, and salt bridges then overlap (docs/validity.md);
    # the refinement relieves those (and the MD's few Ramachandran outliers) with small moves
    # and leaves the backbone where it was.
    refined = refine(md["frames"], md["torsions"], md["topology"])
    moved = torch.linalg.vector_norm(refined.frames.trans - md["frames"].trans, dim=-1)
    assert moved.pow(2).mean(-1).sqrt().max() < 0.2  # CA RMS per frame, Angstrom
    assert moved.max() < 0.6  # one residue, where a salt bridge of the rebuild overlaps


def test_backbone_torsions_are_measured_on_the_refined_backbone(md):
    unmoved = refine(md["frames"], md["torsions"], md["topology"], RefineSettings(iterations=0))
    torch.testing.assert_close(unmoved.frames.trans, md["frames"].trans)
    # without moves, omega, phi and psi are the MD's own up to the idealised N, CA, C placement
    change = geometry.wrap_angle(unmoved.torsions[..., :3] - md["torsions"][..., :3]).abs()
    assert torch.rad2deg(change).median() < 5.0
    torch.testing.assert_close(unmoved.torsions[..., 3:], md["torsions"][..., 3:])
    refined = refine(md["frames"], md["torsions"], md["topology"])
    atoms = _atoms(refined.frames, refined.torsions, md["topology"])
    n, ca, c = (atoms[:, :, s] for s in (geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT))
    psi = geometry.dihedral(n[:, :-1], ca[:, :-1], c[:, :-1], n[:, 1:])
    torch.testing.assert_close(refined.torsions[:, :-1, 2], psi)


def test_junction_restraints_from_the_residue_tables_equal_those_measured_on_a_frame(md):
    """The junction restraints are made once per protein from the literature backbone (N, CA,
    C sit in the backbone group of every rebuilt frame): the same bounds as measuring the CA-C
    and N-CA lengths on each frame's rebuilt atoms, as the refinement did per frame before."""
    top, settings = md["topology"], RefineSettings()
    cpu = torch.device("cpu")
    restraints = _junction_restraints(top, settings, 10, cpu, torch.float64)
    assert _junction_restraints(top, settings, 10, cpu, torch.float64) is restraints
    atoms = _atoms(md["frames"], md["torsions"], top)
    local = md["frames"].unsqueeze(-1).invert_apply(atoms)  # (B, L, 15, 3) in residue frames
    replica, i, _, _, _ = top.junction_index(10, cpu)
    ca_c = local[replica, i, geometry.C_SLOT].norm(dim=-1)
    n_ca = local[replica, i + 1, geometry.N_SLOT].norm(dim=-1)
    rows = len(replica)
    for block, (side, angle) in enumerate(((ca_c, CA_C_N_DEG), (n_ca, C_N_CA_DEG)), start=1):
        bond = top.bond_mean[i]
        ideal = torch.sqrt(side**2 + bond**2 - 2 * side * bond * math.cos(math.radians(angle[0])))
        got = restraints.low[block * rows : (block + 1) * rows]
        spread = (restraints.high - restraints.low)[block * rows : (block + 1) * rows] / 2
        torch.testing.assert_close(got + spread, ideal, rtol=0, atol=1e-9)
    # other batch sizes and tolerances are their own entries
    wider = replace(settings, bond_tolerance_sd=8.0)
    assert _junction_restraints(top, wider, 10, cpu, torch.float64) is not restraints


def test_a_frame_without_violations_is_not_moved(md):
    lenient = RefineSettings(
        bond_tolerance_sd=1e3, angle_tolerance_sd=1e3, omega_tolerance_deg=180, clash_overlap_a=5
    )
    refined = refine(md["frames"][:2], md["torsions"][:2], md["topology"], lenient)
    assert (refined.violation_before == 0).all()
    assert torch.equal(refined.frames.trans, md["frames"][:2].trans)
    assert torch.equal(refined.frames.rots, md["frames"][:2].rots)


def test_refinement_fixes_a_stretched_peptide_bond(md):
    frames, torsions = _stretched(md, by_a=0.8)
    before = _c_n(_atoms(frames, torsions, md["topology"]))[0, 20]
    assert before > 2.0
    refined = refine(frames, torsions, md["topology"])
    after = _c_n(_atoms(refined.frames, refined.torsions, md["topology"]))[0]
    assert ((after > 1.2) & (after < 1.5)).all()
    assert refined.violation_after[0] < 0.05 * refined.violation_before[0]
    assert refined.raw_checks["aa_break"].item() and not refined.checks["aa_break"].item()
    assert refined.checks["peptide_outside"].item() == 0


def test_refinement_keeps_the_predicted_backbone_dihedrals(md):
    # a distorted prediction (every residue shifted by 0.15 A and turned by 0.03 rad sd: about
    # a quarter of the peptide bonds outside 1.2-1.5 A, as in a student's raw frame): with the
    # dihedral restraint the descent fixes every junction as it does without it, but turns
    # psi and phi less than half as much; at rest the restraint is zero
    generator = torch.Generator().manual_seed(0)
    source = md["frames"][:4]
    turn = 0.03 * torch.randn((*source.shape, 3), generator=generator, dtype=torch.float64)
    shift = 0.15 * torch.randn(source.trans.shape, generator=generator, dtype=torch.float64)
    frames = Rigid(source.rots @ exp_map(turn), source.trans + shift)
    torsions = md["torsions"][:4]
    energy = _Energy(frames, torsions, md["topology"], RefineSettings())
    assert energy.dihedral_restraint(energy.raw_atoms).abs().max() < 1e-9
    phi0, psi0 = energy.reference_dihedrals
    bonded = md["topology"].bonded

    def refined_with(weight):
        refined = refine(frames, torsions, md["topology"], RefineSettings(dihedral_weight=weight))
        phi = geometry.wrap_angle(refined.torsions[:, 1:, 1] - phi0[:, 1:])[:, bonded]
        psi = geometry.wrap_angle(refined.torsions[:, :-1, 2] - psi0[:, :-1])[:, bonded]
        return torch.rad2deg(torch.cat([phi, psi], -1)).pow(2).mean().sqrt(), refined

    kept, with_term = refined_with(1.0)
    free, without = refined_with(0.0)
    assert (with_term.raw_checks["peptide_outside"] >= 15).all()
    for refined in (with_term, without):
        assert (refined.checks["peptide_outside"] == 0).all()
        assert (refined.violation_after < 0.01 * refined.violation_before).all()
    assert kept < 0.5 * free


def test_refinement_keeps_the_previous_carbonyl_off_a_proline_ring():
    """Before a proline, C(i) and the ring's CD come from two residues: turning residues up to i
    about the proline's N-CA axis keeps the peptide bond and the C-N-CA angle but brings C(i)
    onto CD (what rollouts did); the refinement's C(i)-CD(i+1) term moves it back out."""
    pro = _md_frames(MD.parent / "2k1b", 2)
    frames, torsions, topology = pro["frames"], pro["torsions"], pro["topology"]
    i = int(torch.nonzero(topology.pre_proline & topology.bonded)[0, 0])  # X(i)-Pro(i+1)
    atoms = _atoms(frames, torsions, topology)

    def c_cd(atoms):
        return torch.linalg.vector_norm(
            atoms[:, i, geometry.C_SLOT] - atoms[:, i + 1, PROLINE_CD_SLOT], dim=-1
        )

    length, spread = PROLINE_C_CD_A
    assert ((c_cd(atoms) - length).abs() < 3 * spread).all()  # MD: inside the band
    pivot = atoms[:, i + 1, geometry.N_SLOT]
    axis = atoms[:, i + 1, geometry.CA_SLOT] - pivot
    axis = axis / torch.linalg.vector_norm(axis, dim=-1, keepdim=True)
    best = None
    for degrees in range(0, 360, 5):
        turn = exp_map(axis * math.radians(degrees))  # (B, 3, 3)
        rots, trans = frames.rots.clone(), frames.trans.clone()
        rots[:, : i + 1] = turn[:, None] @ frames.rots[:, : i + 1]
        moved = (frames.trans[:, : i + 1] - pivot[:, None]) @ turn.transpose(-1, -2)
        trans[:, : i + 1] = moved + pivot[:, None]
        candidate = Rigid(rots, trans)
        gap = c_cd(_atoms(candidate, torsions, topology))
        if best is None or (gap - 1.2).abs().max() < best[0]:
            best = ((gap - 1.2).abs().max(), candidate)
    turned = best[1]
    bad = _atoms(turned, torsions, topology)
    assert (c_cd(bad) < 1.6).all()
    assert ((_c_n(bad)[:, i] - _c_n(atoms)[:, i]).abs() < 1e-6).all()  # peptide bond intact
    refined = refine(turned, torsions, topology)
    after = c_cd(_atoms(refined.frames, refined.torsions, topology))
    # bounded moves: well out of the overlap (without the term the Ramachandran pull took it
    # to 0.4-0.6 A), the rest is the atom polish's (tests/structure/test_polish.py)
    assert (after > 1.7).all(), after


def _contacts(atoms: torch.Tensor, topology) -> dict[str, torch.Tensor]:
    """The evaluation's atom contacts (all atom pairs) of frames ``(T, L, 15, 3)``."""
    slots = atoms.shape[2]
    index = torch.arange(atoms.shape[1] * slots).reshape(-1, slots)
    return atom_contacts(
        atoms.reshape(len(atoms), -1, 3),
        torch.where(topology.atom_mask, index, -1),
        topology.chain_index,
        topology.residue_index,
        topology.radius.reshape(-1),
        topology.polar.reshape(-1),
        topology.sulfur_gamma.reshape(-1),
    )


def _overlap(atoms: torch.Tensor, topology, i: int, j: int) -> float:
    """Largest van der Waals overlap (Angstrom) between residues ``i`` and ``j`` of one frame,
    less the evaluation's allowance for N/O pairs."""
    mask_i, mask_j = topology.atom_mask[i], topology.atom_mask[j]
    d = torch.cdist(atoms[0, i][mask_i], atoms[0, j][mask_j])
    limit = topology.radius[i][mask_i][:, None] + topology.radius[j][mask_j][None]
    polar = topology.polar[i][mask_i][:, None] & topology.polar[j][mask_j][None]
    return float((limit - POLAR_ALLOWANCE_A * polar - d).max())


def test_refinement_relieves_a_clash(md):
    frames, torsions = md["frames"][:1], md["torsions"][:1]
    topology = md["topology"]
    atoms = _atoms(frames, torsions, topology)
    # the closest pair of CA atoms at least 4 residues apart: push residue j 1 A into residue i
    ca = atoms[0, :, geometry.CA_SLOT]
    index = torch.arange(len(ca))
    apart = (index[:, None] - index[None, :]).abs() >= 4
    i, j = divmod(int(torch.where(apart, torch.cdist(ca, ca), torch.inf).argmin()), len(ca))
    push = 1.0 - _overlap(atoms, topology, i, j)
    clashed = _shifted(frames, slice(j, j + 1), push * (ca[i] - ca[j]) / (ca[i] - ca[j]).norm())
    clashed_atoms = _atoms(clashed, torsions, topology)
    assert _overlap(clashed_atoms, topology, i, j) > 0.8
    refined = refine(clashed, torsions, topology)
    final = _atoms(refined.frames, refined.torsions, topology)
    assert _overlap(final, topology, i, j) < CLASH_OVERLAP_A
    # the evaluation's own count over all atom pairs: clashes go, none is made
    before, after = _contacts(clashed_atoms, topology), _contacts(final, topology)
    assert after["clash_pairs"].item() < before["clash_pairs"].item()
    assert after["clash_pairs"].item() <= _contacts(atoms, topology)["clash_pairs"].item()
    assert refined.checks["peptide_outside"].item() == 0


def _rama_outliers(frames: Rigid, torsions: torch.Tensor, topology) -> torch.Tensor:
    """``(B, L)`` residues outside the evaluation's 99% Ramachandran region."""
    phi, psi = _phi_psi(_atoms(frames, torsions, topology))
    allowed = torch.from_numpy(ramachandran_allowed(phi.numpy(), psi.numpy()))
    return ~allowed & topology.rama


def _phi_turned(md, residue: int, by_deg: float) -> Rigid:
    """Frame 0 with residues ``residue..`` turned about the N-CA bond of ``residue``: phi of that
    residue changes by ``by_deg`` and nothing else of the geometry does."""
    frames = md["frames"][:1]
    atoms = _atoms(frames, md["torsions"][:1], md["topology"])
    n, ca = atoms[0, residue, geometry.N_SLOT], atoms[0, residue, geometry.CA_SLOT]
    axis = (ca - n) / (ca - n).norm()
    turn = exp_map(math.radians(by_deg) * axis)
    rots, trans = frames.rots.clone(), frames.trans.clone()
    rots[:, residue:] = turn @ rots[:, residue:]
    trans[:, residue:] = (trans[:, residue:] - n) @ turn.T + n
    return Rigid(rots, trans)


def test_ramachandran_term_is_zero_inside_the_allowed_region(md):
    topology = md["topology"]
    energy = _Energy(md["frames"][:1], md["torsions"][:1], topology, RefineSettings())
    atoms = _atoms(md["frames"][:1], md["torsions"][:1], topology)
    phi, psi = _phi_psi(atoms)
    inside = ramachandran_distance_deg(phi, psi) < -RefineSettings().rama_margin_deg
    assert inside[0, topology.rama].float().mean() > 0.9  # an MD frame: nearly all inside
    only_inside = replace(topology, rama=topology.rama & inside[0])
    quiet = _Energy(md["frames"][:1], md["torsions"][:1], only_inside, RefineSettings())
    assert quiet.ramachandran(atoms).item() == 0.0
    assert energy.ramachandran(atoms).item() >= 0.0


def test_refinement_moves_a_ramachandran_outlier_into_the_allowed_region(md):
    topology = md["topology"]
    residue = topology.rama.nonzero()[-3].item()  # near the C-terminus: a short lever
    turned = _phi_turned(md, residue, by_deg=70.0)
    torsions = md["torsions"][:1]
    assert _rama_outliers(turned, torsions, topology)[0, residue]
    energy = _Energy(turned, torsions, topology, RefineSettings())
    motion = turned.trans.new_zeros((1, len(topology.aatype), 6), requires_grad=True)
    term = energy.ramachandran(energy.place(motion)[1])
    (grad,) = torch.autograd.grad(term.sum(), motion)
    assert term.item() > 0 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    refined = refine(turned, torsions, topology)
    assert not _rama_outliers(refined.frames, refined.torsions, topology)[0, residue]
    assert refined.checks["peptide_outside"].item() == 0


def test_refinement_is_equivariant(md):
    frames, torsions = _stretched(md, frame=3, by_a=0.5)
    generator = torch.Generator().manual_seed(0)
    rotation = random_rotations((1,), generator, dtype=torch.float64)[0]
    translation = torch.tensor([12.0, -7.0, 3.0], dtype=torch.float64)
    moved = Rigid(rotation @ frames.rots, frames.trans @ rotation.T + translation)
    refined = refine(frames, torsions, md["topology"])
    refined_moved = refine(moved, torsions, md["topology"])
    assert refined.violation_before[0] > 0  # something to refine
    # to float rounding, amplified where the clamped steps' sign normalisation meets a gradient
    # near zero: well below the 0.01 A precision of a written XTC frame
    close = {"atol": 5e-3, "rtol": 0.0}
    torch.testing.assert_close(
        refined_moved.frames.trans, refined.frames.trans @ rotation.T + translation, **close
    )
    torch.testing.assert_close(refined_moved.frames.rots, rotation @ refined.frames.rots, **close)
    torch.testing.assert_close(refined_moved.torsions, refined.torsions, **close)
    moved = torch.linalg.vector_norm(refined.frames.trans - frames.trans, dim=-1).max()
    assert moved > 0.1  # the tolerance is far below what the refinement moved


def test_refinement_is_bounded(md):
    generator = torch.Generator().manual_seed(1)
    frames, torsions = md["frames"][:2], md["torsions"][:2]
    noise = 2.0 * torch.randn(frames.trans.shape, generator=generator, dtype=torch.float64)
    wrecked = Rigid(frames.rots, frames.trans + noise)
    settings = RefineSettings(iterations=7)
    refined = refine(wrecked, torsions, md["topology"], settings)
    before = _atoms(wrecked, torsions, md["topology"])
    after = _atoms(refined.frames, torsions, md["topology"])
    shift = torch.linalg.vector_norm(after - before, dim=-1)[..., :3]  # N, CA, C: rigid parts
    assert shift.max() <= max_displacement_a(settings)
    assert refined.violation_after.sum() < refined.violation_before.sum()
    off = refine(wrecked, torsions, md["topology"], replace(settings, iterations=0))
    torch.testing.assert_close(off.frames.trans, wrecked.trans)


def test_refined_rollout_is_causal(tiny_model_path):
    loaded = load_model(tiny_model_path)
    protein, positions = load_structure(VILLIN)
    inputs = protein_input(protein, positions, 100.0, replicas=2)
    settings = RolloutSettings(steps=2, context=3, refine=RefineSettings(iterations=5))

    def run(n_frames: int) -> list[torch.Tensor]:
        rollout = Rollout(loaded, inputs, settings, seed=3)
        return [frames.trans.clone() for _, frames, _ in rollout.states(n_frames)]

    short, long = run(3), run(5)
    for a, b in zip(short, long[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    unrefined = Rollout(loaded, inputs, replace(settings, refine=None), seed=3)
    raw = [frames.trans for _, frames, _ in unrefined.states(3)]
    assert not torch.equal(raw[2], short[2])  # the refinement changed what was generated


def test_preparing_the_refinement_changes_no_frame_and_counts_nothing(tiny_model_path):
    """The set-up pass that loads the compiled loops before a generation's timed loop."""
    loaded = load_model(tiny_model_path)
    protein, positions = load_structure(VILLIN)
    inputs = protein_input(protein, positions, 100.0, replicas=2)
    settings = RolloutSettings(steps=2, context=3, refine=RefineSettings(iterations=5))
    plain = Rollout(loaded, inputs, settings, seed=3)
    prepared = Rollout(loaded, inputs, settings, seed=3)
    prepared.prepare_refinement()
    assert prepared.refine_s == 0.0 and prepared.refined is None
    for (_, a, _), (_, b, _) in zip(plain.states(4), prepared.states(4), strict=True):
        torch.testing.assert_close(a.trans, b.trans, rtol=0, atol=0)
    state: dict = {}
    ledger = RefinementLedger(state, replicas=2, peptide_bonds_per_frame=35)
    before = json.dumps(state, sort_keys=True)
    written = mdtraj.load(str(VILLIN))
    ledger.prepare_written(written.xyz * 10.0, written.topology)
    assert json.dumps(state, sort_keys=True) == before


def test_every_written_frame_is_polished_once(tiny_model_path, tmp_path, monkeypatch):
    """Frame 0 (set-up checks and the topology file) and each generated frame: one polish."""
    from starmd.sample import writer as writer_module

    polished = []

    def counting(xyz, plan, settings, **options):
        polished.append(len(xyz))
        return real(xyz, plan, settings, **options)

    real = writer_module.polish
    monkeypatch.setattr(writer_module, "polish", counting)
    settings = GenerationSettings(
        frames=5, dt_ps=100.0, replicas=2, steps=2, context=3, refine=True
    )
    generate(VILLIN, tmp_path, settings, model=tiny_model_path, device="cpu")
    assert sum(polished) == 1 + 2 * 4


def test_sidecar_reports_raw_and_refined_checks(tiny_model_path, tmp_path):
    settings = GenerationSettings(
        frames=5, dt_ps=100.0, replicas=2, steps=2, context=3, refine=True
    )
    sidecar = generate(VILLIN, tmp_path / "on", settings, model=tiny_model_path, device="cpu")
    report = sidecar["refinement"]
    assert report["ms_per_frame"] > 0 and len(report["replicas"]) == 2
    for replica in report["replicas"]:
        assert replica["frames"] == 4  # frame 0 is the input, not refined
        for tag in ("raw", "refined"):
            assert set(replica[tag]) == {
                "ca_valid_pct",
                "aa_clash_pct",
                "aa_break_pct",
                "ca_valid_no_clash_no_break_pct",
                "peptide_outside_pct",
                "rama_outlier_pct",
            }
        raw, refined = replica["raw"], replica["refined"]
        # the tiny model's frames are near random (every peptide bond out of range); what the
        # refinement buys on a trained model is measured in the model card
        assert refined["aa_break_pct"] <= raw["aa_break_pct"]
    on_disk = json.loads((tmp_path / "on" / "1vii.json").read_text())
    assert on_disk["refinement"] == report
    # the written (polished) frames are judged by the evaluation's own check, all atom pairs
    assert report["polish_ms_per_frame"] > 0
    written = mdtraj.load(
        str(tmp_path / "on" / "1vii_R1.xtc"), top=str(tmp_path / "on" / "1vii.pdb")
    )
    checks = validity.check_validity(
        written.xyz[1:] * 10.0, validity.plan_validity(written.topology)
    )
    first = report["replicas"][0]["written"]
    assert first["aa_clash_pct"] == pytest.approx(100.0 * checks["aa_clash"].mean(), abs=25.0)
    assert first["valid_pct"] == pytest.approx(100.0 * checks["valid"].mean(), abs=25.0)
    unpolished = generate(
        VILLIN, tmp_path / "unpolished", replace(settings, polish=False), model=tiny_model_path
    )
    assert all("written" not in r for r in unpolished["refinement"]["replicas"])
    assert unpolished["refinement"]["polish_ms_per_frame"] is None
    off = generate(VILLIN, tmp_path / "off", replace(settings, refine=False), model=tiny_model_path)
    assert (tmp_path / "on" / "1vii_R1.xtc").read_bytes() != (
        tmp_path / "off" / "1vii_R1.xtc"
    ).read_bytes()
    assert off["refinement"] is None and off["settings"]["refine"] is False


def test_ledger_percentages_by_hand():
    state: dict = {}
    ledger = RefinementLedger(
        state, replicas=2, peptide_bonds_per_frame=10, rama_residues_per_frame=8
    )

    def checks(ca_valid, clash, broken, outside, rama=(0, 0)):
        return {
            "ca_valid": torch.tensor(ca_valid),
            "aa_clash": torch.tensor(clash),
            "aa_break": torch.tensor(broken),
            "peptide_outside": torch.tensor(outside),
            "rama_outliers": torch.tensor(rama),
        }

    def frame(raw, refined, shift):
        return Refined(None, None, None, None, torch.tensor(shift), raw, refined)

    ledger.add(
        frame(
            checks([1, 0], [1, 1], [1, 0], [4, 0], [3, 2]),
            checks([1, 1], [0, 1], [0, 0], [0, 0], [1, 0]),
            [0.5, 0.2],
        ),
        [0, 1],
        0.02,
    )
    ledger.add(
        frame(
            checks([1, 1], [0, 1], [0, 0], [2, 1]),
            checks([1, 1], [0, 1], [0, 0], [1, 0]),
            [0.1, 0.9],
        ),
        [0],  # replica 2 was stopped: not counted
        0.04,
    )
    summary = ledger.summary()
    assert summary["ms_per_step"] == 30.0  # 60 ms over two steps
    assert summary["ms_per_frame"] == 20.0  # over three replica-frames
    first, second = summary["replicas"]
    assert first["frames"] == 2 and first["max_shift_a"] == 0.5
    assert first["raw"] == {
        "ca_valid_pct": 100.0,
        "aa_clash_pct": 50.0,
        "aa_break_pct": 50.0,
        "ca_valid_no_clash_no_break_pct": 50.0,
        "peptide_outside_pct": 30.0,  # 6 of 20 bonds
        "rama_outlier_pct": 18.75,  # 3 of 16 residues
    }
    assert first["refined"]["ca_valid_no_clash_no_break_pct"] == 100.0
    assert first["refined"]["peptide_outside_pct"] == 5.0
    assert first["refined"]["rama_outlier_pct"] == 6.25  # 1 of 16
    assert second["raw"]["rama_outlier_pct"] == 25.0  # 2 of 8
    assert second["frames"] == 1 and second["raw"]["ca_valid_pct"] == 0.0
    assert second["refined"]["aa_clash_pct"] == 100.0
    assert state["refinement"]["replicas"][0]["raw"]["peptide_outside"] == 6  # resumable record


def test_closed_form_gradient_equals_autograd(md):
    # a stretched peptide bond, a Ramachandran outlier and a clash or two (the rebuilt MD's
    # salt bridges), at motions from zero to large rotations, all terms active
    frames, torsions = _stretched(md, frame=0)
    frames = Rigid.cat([frames, _phi_turned(md, residue=12, by_deg=150.0)[:1]], dim=0)
    torsions = torch.cat([torsions, md["torsions"][:1]])
    energy = _Energy(frames, torsions, md["topology"], RefineSettings())
    generator = torch.Generator().manual_seed(11)
    for scale in (0.0, 0.05, 0.5):
        motion = scale * torch.randn((*frames.shape, 6), generator=generator, dtype=torch.float64)
        leaf = motion.clone().requires_grad_(True)
        _, atoms = energy.place(leaf)
        total = energy.violation(atoms) + energy.restraint(leaf) + energy.dihedral_restraint(atoms)
        (expected,) = torch.autograd.grad(total.sum(), leaf)
        value, gradient = _energy_and_grad(energy, motion)
        torch.testing.assert_close(value, total.detach())
        assert expected.abs().max() > 1.0  # violations present: a gradient worth comparing
        scaled = expected.abs().max()
        torch.testing.assert_close(gradient / scaled, expected / scaled, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "field, value",
    [("dihedral_sd_deg", 0.0), ("rama_sd_deg", -1.0), ("step_a", 0.0), ("iterations", -1)],
)
def test_settings_that_would_divide_by_zero_or_reward_violations_are_refused(field, value):
    """A zero spread would make the energy infinite; a negative one or a negative count makes
    no sense: one error naming the field. The defaults and a switched-off term are accepted."""
    with pytest.raises(ValueError, match=field):
        RefineSettings(**{field: value})
    RefineSettings()
    RefineSettings(iterations=0, rama_weight=0.0, dihedral_weight=0.0)
