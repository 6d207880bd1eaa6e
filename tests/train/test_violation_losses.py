"""Structural-violation loss terms: zero on MD, positive and differentiable on distorted frames,
masked at chain breaks and padding, invariant to rigid motions, off unless weighted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from starmd.data.prepare import positions_to_frames_torsions
from starmd.diffusion import SE3TorusDiffuser
from starmd.modelfile.config import LossSection, TrainConfig
from starmd.structure import geometry
from starmd.structure import residue_constants as rc
from starmd.structure.io import iter_trajectory
from starmd.structure.rigid import Rigid
from starmd.train.losses import (
    VIOLATION_TERMS,
    denoising_losses,
    peptide_bonds,
    structural_violations,
)

ROOT = Path(__file__).resolve().parents[2]
MD = ROOT / "corpus" / "md" / "2wqg"


@pytest.fixture(scope="module")
def md_frames():
    """The first 20 frames of 2WQG's corpus MD as frames + torsions (float64), as prepared."""
    protein, positions, _ = next(
        iter_trajectory(MD / "2wqg.pdb", MD / "2wqg_prod_R1_fit.xtc", chunk=20)
    )
    frames, torsions = positions_to_frames_torsions(positions, protein)
    return {
        "frames": Rigid.from_tensor_7(torch.from_numpy(frames).double()),
        "torsions": torch.from_numpy(torsions).double(),
        "aatype": torch.from_numpy(protein.aatype).long(),
        "residue_index": torch.from_numpy(protein.segment_index).long(),
        "chain_index": torch.from_numpy(protein.chain_index).long(),
        "positions": torch.from_numpy(positions).double(),
    }


def _violations(md, frames: Rigid, torsions: torch.Tensor, residue_mask=None, residue_index=None):
    """The terms of frames ``(F, L)`` rebuilt to atoms the way the loss rebuilds them."""
    f, l = frames.shape
    aatype = md["aatype"].expand(f, l)
    residue_mask = torch.ones(l, dtype=torch.bool) if residue_mask is None else residue_mask
    index = md["residue_index"] if residue_index is None else residue_index
    atoms = geometry.frames_to_atoms(frames, torsions, aatype)
    mask = geometry.rebuilt_atom_mask(aatype) & residue_mask[:, None]
    bonded = peptide_bonds(index, md["chain_index"], residue_mask).expand(f, l - 1)
    return structural_violations(atoms, mask, aatype, bonded)


def _moved(frames: Rigid, residues: slice | list[int], shift: torch.Tensor) -> Rigid:
    trans = frames.trans.clone()
    trans[:, residues] += shift if isinstance(residues, slice) else shift[:, None]
    return Rigid(frames.rots, trans)


def _rotvec_rotations(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` from rotation vectors ``(..., 3)`` (radians)."""
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*x.shape, 3, 3)
    return torch.linalg.matrix_exp(skew)


def test_violation_terms_are_zero_on_md_atoms_and_near_zero_after_the_rebuild(md_frames):
    """The MD's own atoms violate nothing; rebuilt from frames + torsions (idealized residues,
    the loss's path) they stay near zero: the idealized side chains of one salt bridge
    (Glu28-Arg32) overlap by 0.34 A beyond the tolerance in one frame of 20."""
    aatype = md_frames["aatype"].expand(md_frames["frames"].shape)
    f, l = aatype.shape
    raw = structural_violations(
        md_frames["positions"][..., :15, :],
        geometry.rebuilt_atom_mask(aatype) & (md_frames["positions"][..., :15, :] != 0).any(-1),
        aatype,
        peptide_bonds(
            md_frames["residue_index"], md_frames["chain_index"], torch.ones(l) > 0
        ).expand(f, l - 1),
    )
    for name in VIOLATION_TERMS:
        assert raw[name].abs().max() == 0.0, name
    rebuilt = _violations(md_frames, md_frames["frames"], md_frames["torsions"])
    assert rebuilt["bond_violation"].max() < 2e-3
    assert rebuilt["angle_violation"].max() < 1e-3
    assert rebuilt["clash"].max() < 2e-3 and rebuilt["clash"].mean() < 2e-4


def test_stretched_peptide_bond_is_penalised_with_gradients_to_translations_and_rotations(
    md_frames,
):
    frames = md_frames["frames"][:2]
    torsions = md_frames["torsions"][:2]
    shift = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    rotvec = torch.zeros(2, 41, 3, dtype=torch.float64, requires_grad=True)
    pulled = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) + shift
    moved = _moved(frames, slice(20, None), pulled)
    moved = Rigid(_rotvec_rotations(rotvec) @ moved.rots, moved.trans)
    values = _violations(md_frames, moved, torsions)
    # one stretched bond of 40 per frame: about (|C-N| - 1.497 A) / 40
    assert values["bond_violation"].min() > 0.005
    values["bond_violation"].sum().backward()
    assert torch.isfinite(shift.grad).all() and shift.grad.abs().sum() > 0
    assert torch.isfinite(rotvec.grad).all() and rotvec.grad[:, 19:21].abs().sum() > 0


def test_bent_peptide_junction_is_penalised_with_gradients_to_rotations(md_frames):
    """Residue 20 turned by 90 degrees about its C-alpha: the C(19)-N(20)-CA(20) angle leaves
    the 12-sd flat bottom (about +-28 degrees)."""
    frames, torsions = md_frames["frames"][:2], md_frames["torsions"][:2]
    turn = torch.zeros(2, 41, 3, dtype=torch.float64)
    turn[:, 20] = torch.tensor([0.0, 0.0, torch.pi / 2])
    rotvec = turn.clone().requires_grad_(True)
    bent = Rigid(_rotvec_rotations(rotvec) @ frames.rots, frames.trans)
    values = _violations(md_frames, bent, torsions)
    assert values["angle_violation"].min() > 0.001
    assert _violations(md_frames, frames, torsions)["angle_violation"].max() < 1e-3
    values["angle_violation"].sum().backward()
    assert torch.isfinite(rotvec.grad).all() and rotvec.grad[:, 20].abs().sum() > 0


def test_residues_pushed_into_contact_clash_with_gradients_to_torsions(md_frames):
    """Val31's C-alpha put 0.5 A from the hydroxyl of Tyr4's side chain: a clash whose gradient
    reaches Tyr4's chi1 and chi2 (they place the ring and its OH)."""
    frames = md_frames["frames"][:1]
    torsions = md_frames["torsions"][:1].clone().requires_grad_(True)
    i, j = 3, 30
    tip = geometry.frames_to_atoms(frames, torsions.detach(), md_frames["aatype"])[:, i, 11]
    assert rc.ATOM14_NAMES["TYR"][11] == "OH"
    pushed = _moved(frames, [j], tip - frames.trans[:, j] + torch.tensor([0.5, 0.0, 0.0]).double())
    values = _violations(md_frames, pushed, torsions)
    assert values["clash"].item() > 0.003
    assert _violations(md_frames, frames, torsions)["clash"].item() < 1e-3
    values["clash"].sum().backward()
    assert torch.isfinite(torsions.grad).all()
    assert torsions.grad[0, i, 3:5].abs().min() > 0


def test_chain_breaks_and_padding_mask_the_violations(md_frames):
    frames, torsions = md_frames["frames"][:1], md_frames["torsions"][:1]
    stretched = _moved(frames, slice(20, None), torch.tensor([1.0, 0.0, 0.0]).double())
    broken = md_frames["residue_index"].clone()
    broken[20:] += 100  # a chain break between residues 19 and 20 (segment index convention)
    assert _violations(md_frames, stretched, torsions)["bond_violation"].item() > 0.005
    torch.testing.assert_close(
        _violations(md_frames, stretched, torsions, residue_index=broken)["bond_violation"],
        _violations(md_frames, frames, torsions, residue_index=broken)["bond_violation"],
    )
    i, j = 5, 30
    offset = frames.trans[:, i] - frames.trans[:, j] + torch.tensor([0.5, 0.0, 0.0]).double()
    pushed = _moved(frames, [j], offset)
    padded = torch.ones(41, dtype=torch.bool)
    padded[j] = False
    assert _violations(md_frames, pushed, torsions)["clash"].item() > 0.005
    assert _violations(md_frames, pushed, torsions, residue_mask=padded)["clash"].item() < 1e-3


def test_violations_are_invariant_to_a_global_rigid_motion(md_frames):
    frames, torsions = md_frames["frames"][:3], md_frames["torsions"][:3]
    distorted = _moved(frames, slice(20, None), torch.tensor([0.8, -0.5, 0.3]).double())
    distorted = _moved(distorted, [30], distorted.trans[:, 5] - distorted.trans[:, 30] + 0.5)
    motion = Rigid(
        _rotvec_rotations(torch.tensor([0.4, -1.1, 2.0]).double()),
        torch.tensor([12.0, -3.0, 7.5]).double(),
    )
    moved = Rigid(motion.rots @ distorted.rots, motion.apply(distorted.trans))
    before = _violations(md_frames, distorted, torsions)
    after = _violations(md_frames, moved, torsions)
    assert before["bond_violation"].min() > 0 and before["clash"].min() > 0
    for name in VIOLATION_TERMS:
        torch.testing.assert_close(after[name], before[name])


def _denoising_terms(md, pred: Rigid, weights: LossSection, tau: float, residue_mask=None):
    frames, torsions = md["frames"][None, :2].to(torch.float32), md["torsions"][None, :2].float()
    b, k, l = frames.shape
    mask = torch.ones(b, l, 7, dtype=torch.bool)
    diffuser = SE3TorusDiffuser()
    noisy = diffuser.forward_marginal(frames, torsions, mask[:, None], tau, torch.Generator())
    unit = torch.stack([torsions.sin(), torsions.cos()], dim=-1)
    return denoising_losses(
        diffuser=diffuser,
        noisy=noisy,
        pred_frames=Rigid(pred.rots.float(), pred.trans.float())[None],
        pred_torsions=unit,
        pred_torsions_unnormalized=unit,
        pred_frames_per_block=None,
        true_frames=frames,
        true_torsions=torsions,
        aatype=md["aatype"][None],
        residue_mask=torch.ones(b, l, dtype=torch.bool) if residue_mask is None else residue_mask,
        torsion_mask=mask,
        oxt_mask=None,
        weights=weights,
        residue_index=md["residue_index"][None],
        chain_index=md["chain_index"][None],
    )


def test_violation_terms_enter_the_loss_only_when_weighted_and_at_low_noise(md_frames):
    stretched = _moved(md_frames["frames"][:2], slice(20, None), torch.tensor([1.0, 0, 0]).double())
    default = _denoising_terms(md_frames, stretched, LossSection(), tau=0.05)
    assert not set(VIOLATION_TERMS) & set(default)
    weights = LossSection(bond_violation=2.0, angle_violation=1.0, clash=1.0)
    low = _denoising_terms(md_frames, stretched, weights, tau=0.05)
    assert low["bond_violation"] > 0.005
    others = sum(getattr(weights, n) * v for n, v in default.items() if n != "loss")
    expected = others + sum(getattr(weights, n) * low[n] for n in VIOLATION_TERMS)
    torch.testing.assert_close(low["loss"], expected)
    high = _denoising_terms(md_frames, stretched, weights, tau=0.9)
    assert all(high[name] == 0 for name in VIOLATION_TERMS)


def test_geometry_preset_turns_the_terms_on_over_the_bundled_training_config():
    geometry_config = TrainConfig.from_yaml(ROOT / "configs" / "small_cpu_geometry.yaml")
    small = TrainConfig.from_yaml(ROOT / "configs" / "small_cpu.yaml")
    assert all(getattr(geometry_config.loss, name) > 0 for name in VIOLATION_TERMS)
    assert all(getattr(small.loss, name) == 0 for name in VIOLATION_TERMS)
    for name in ("rot", "trans", "torsion", "distance", "low_noise_tau"):
        assert getattr(geometry_config.loss, name) == getattr(small.loss, name)
    assert geometry_config.model == small.model and geometry_config.data == small.data


def test_padding_with_degenerate_frames_keeps_terms_and_gradients_finite(md_frames):
    """Padded residues carry all-zero frames (no rotation, at the origin): the terms of the
    real residues and every gradient stay finite."""
    frames = md_frames["frames"][:2]
    rots, trans = frames.rots.clone(), frames.trans.clone()
    rots[:, 38:], trans[:, 38:] = 0.0, 0.0
    trans = trans.requires_grad_(True)
    residue_mask = torch.ones(1, 41, dtype=torch.bool)
    residue_mask[:, 38:] = False
    weights = LossSection(bond_violation=1.0, angle_violation=1.0, clash=1.0)
    terms = _denoising_terms(md_frames, Rigid(rots, trans), weights, 0.05, residue_mask)
    assert all(torch.isfinite(terms[name]) for name in VIOLATION_TERMS)
    assert terms["bond_violation"] < 2e-3
    sum(terms[name] for name in VIOLATION_TERMS).backward()
    assert torch.isfinite(trans.grad).all()
