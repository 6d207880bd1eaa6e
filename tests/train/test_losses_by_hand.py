"""Loss terms on cases whose value is known by hand: symmetric side chains, rigid motions, the
true rotation."""

from __future__ import annotations

import math

import pytest
import torch

from starmd.diffusion import SE3TorusDiffuser, random_rotations
from starmd.modelfile.config import LossSection
from starmd.structure.residue_constants import RESTYPES
from starmd.structure.rigid import Rigid
from starmd.train.losses import denoising_losses, fape, torsion_loss

CHI2 = 4  # torsion order: omega, phi, psi, chi1, chi2, chi3, chi4
ONE_LETTER = {"ASP": "D", "ASN": "N", "PHE": "F", "LEU": "L"}


def _unit(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack([angles.sin(), angles.cos()], dim=-1)


def _torsion_loss_with_chi2_flipped(residue: str) -> float:
    """Torsion loss of a prediction equal to the truth except chi2 + pi, one residue, chi2
    masked in together with the backbone torsions (4 torsions)."""
    aatype = torch.tensor([[RESTYPES.index(ONE_LETTER[residue])]])
    true = torch.tensor([[[[3.1, -1.2, 2.0, -1.0, 0.7, 0.0, 0.0]]]], dtype=torch.float64)
    pred = true.clone()
    pred[..., CHI2] += math.pi
    mask = torch.tensor([[[[True, True, True, False, True, False, False]]]])
    unit = _unit(pred)
    return float(torsion_loss(unit, unit, true, aatype, mask))


def test_flipped_chi2_costs_nothing_for_symmetric_side_chains():
    # ASP's OD1/OD2 and PHE's ring are the same atoms after chi2 + pi
    assert _torsion_loss_with_chi2_flipped("ASP") == pytest.approx(0.0, abs=1e-12)
    assert _torsion_loss_with_chi2_flipped("PHE") == pytest.approx(0.0, abs=1e-12)


def test_flipped_chi2_costs_its_full_sin_cos_error_for_other_side_chains():
    # |(sin, cos)(x + pi) - (sin, cos)(x)|^2 = 4 on one of 4 masked torsions
    assert _torsion_loss_with_chi2_flipped("ASN") == pytest.approx(1.0, abs=1e-12)
    assert _torsion_loss_with_chi2_flipped("LEU") == pytest.approx(1.0, abs=1e-12)


def _random_frames(shape, generator) -> Rigid:
    rots = random_rotations(shape, generator, dtype=torch.float64)
    return Rigid(rots, 5.0 * torch.randn(*shape, 3, generator=generator, dtype=torch.float64))


def test_fape_is_unchanged_by_a_global_rigid_motion_of_the_prediction():
    g = torch.Generator().manual_seed(0)
    true = _random_frames((2, 9), g)
    pred = _random_frames((2, 9), g)
    points_true = 4.0 * torch.randn(2, 20, 3, generator=g, dtype=torch.float64)
    points_pred = points_true + torch.randn(2, 20, 3, generator=g, dtype=torch.float64)
    mask_f, mask_p = torch.ones(2, 9, dtype=torch.bool), torch.ones(2, 20, dtype=torch.bool)
    before = fape(pred, true, points_pred, points_true, mask_f, mask_p)
    motion = _random_frames((), g)
    moved = Rigid(motion.rots.expand(2, 9, 3, 3), motion.trans.expand(2, 9, 3)).compose(pred)
    after = fape(moved, true, motion.apply(points_pred), points_true, mask_f, mask_p)
    assert float(before) > 0.05  # a real error, not a trivially zero case
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-12)


def test_fape_of_one_displaced_point_is_its_displacement_over_clamp():
    """Frames exact, one of N points off by d < clamp: every frame sees error d on that point,
    so FAPE = d / (N clamp), plus sqrt(1e-8) per exact point (the loss's gradient guard)."""
    g = torch.Generator().manual_seed(1)
    frames = _random_frames((7,), g)
    points = 4.0 * torch.randn(10, 3, generator=g, dtype=torch.float64)
    moved = points.clone()
    moved[3] += torch.tensor([1.2, -1.6, 0.0], dtype=torch.float64)  # d = 2 A
    value = fape(
        frames, frames, moved, points, torch.ones(7, dtype=torch.bool), torch.ones(10, dtype=bool)
    )
    assert float(value) == pytest.approx((2.0 + 9 * 1e-4) / (10 * 10.0), abs=1e-9)


def _terms_with_true_torsions(diffuser, noisy, pred_frames, true, torsions, aatype, weights):
    """All loss terms of ``pred_frames`` against ``true`` (every residue and torsion counted),
    the predicted torsions being the true ones."""
    b, _, l = true.shape
    unit = _unit(torsions)
    return denoising_losses(
        diffuser=diffuser,
        noisy=noisy,
        pred_frames=pred_frames,
        pred_torsions=unit,
        pred_torsions_unnormalized=unit,
        pred_frames_per_block=None,
        true_frames=true,
        true_torsions=torsions,
        aatype=aatype,
        residue_mask=torch.ones(b, l, dtype=torch.bool),
        torsion_mask=torch.ones(b, l, 7, dtype=torch.bool),
        oxt_mask=None,
        weights=weights,
    )


def test_rotation_loss_is_zero_at_the_true_rotation_and_grows_away_from_it():
    g = torch.Generator().manual_seed(2)
    b, k, l = 1, 2, 6
    true = _random_frames((b, k, l), g)
    torsions = torch.rand(b, k, l, 7, generator=g, dtype=torch.float64) * 6 - 3
    aatype = torch.randint(0, 20, (b, l), generator=g)
    mask = torch.ones(b, l, 7, dtype=torch.bool)
    diffuser = SE3TorusDiffuser()
    noisy = diffuser.forward_marginal(true, torsions, mask[:, None], 0.3, g)

    def rot_loss(pred_rots: torch.Tensor) -> float:
        terms = _terms_with_true_torsions(
            diffuser, noisy, Rigid(pred_rots, true.trans), true, torsions, aatype, LossSection()
        )
        return float(terms["rot"])

    assert rot_loss(true.rots) == pytest.approx(0.0, abs=1e-8)
    tilted = random_rotations((b, k, l), g, dtype=torch.float64)
    assert rot_loss(tilted) > 0.1


def test_translation_weight_scales_each_frames_error_by_its_noise_level():
    g = torch.Generator().manual_seed(3)
    b, k, l = 1, 2, 5
    true = _random_frames((b, k, l), g)
    torsions = torch.zeros(b, k, l, 7, dtype=torch.float64)
    mask = torch.ones(b, l, 7, dtype=torch.bool)
    diffuser = SE3TorusDiffuser()
    tau = torch.tensor([[0.002, 0.9]], dtype=torch.float64)[..., None].expand(b, k, l)
    noisy = diffuser.forward_marginal(true, torsions, mask[:, None], tau, g)
    # the same 1 A error on every residue of both frames: 0.01 nm^2 each
    shifted = Rigid(true.rots, true.trans + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))

    def trans_loss(sigma_data: float) -> float:
        weights = LossSection(trans_sigma_data_angstrom=sigma_data)
        aatype = torch.zeros(b, l, dtype=torch.long)
        terms = _terms_with_true_torsions(diffuser, noisy, shifted, true, torsions, aatype, weights)
        return float(terms["trans"])

    assert trans_loss(0.0) == pytest.approx(0.01)
    # noise per coordinate in A: sqrt(1 - exp(-B(tau))) / 0.1, B = 0.1 tau + 9.95 tau^2
    sigma = [math.sqrt(-math.expm1(-(0.1 * t + 9.95 * t * t))) / 0.1 for t in (0.002, 0.9)]
    expected = 0.01 * sum(1 + (1.0 / s) ** 2 for s in sigma) / 2
    assert sigma[0] == pytest.approx(0.155, abs=0.001) and sigma[1] > 9.0
    assert trans_loss(1.0) == pytest.approx(expected, rel=1e-6)
