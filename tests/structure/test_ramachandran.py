"""The Ramachandran reference region and its differentiable distance field."""

from __future__ import annotations

import math

import torch

from starmd.evaluate.validity import staggered
from starmd.structure.ramachandran import (
    JANIN_BIN_DEG,
    RAMA_BIN_DEG,
    janin_allowed,
    janin_distance_slope,
    ramachandran_allowed,
    ramachandran_distance_deg,
    ramachandran_distance_slope,
    staggered_distance_slope,
)


def _grid(n: int = 20000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    angles = (2 * torch.rand(2, n, generator=generator, dtype=torch.float64) - 1) * math.pi
    return angles[0], angles[1]


def test_distance_sign_matches_the_evaluations_outlier_rule_away_from_the_edge():
    phi, psi = _grid()
    distance = ramachandran_distance_deg(phi, psi)
    allowed = torch.from_numpy(ramachandran_allowed(phi.numpy(), psi.numpy()))
    clear = distance.abs() > RAMA_BIN_DEG / 2  # beyond the interpolation's blur of the edge
    assert clear.float().mean() > 0.6  # the region's edge is ragged at the 4-degree bins
    assert torch.equal(distance[clear] < 0, allowed[clear])


def test_distance_of_textbook_conformations():
    degrees = torch.tensor([[-63.0, -43.0], [-120.0, 130.0], [0.0, 0.0]], dtype=torch.float64)
    phi, psi = torch.deg2rad(degrees).unbind(-1)
    distance = ramachandran_distance_deg(phi, psi)
    assert distance[0] < -10 and distance[1] < -10  # alpha helix, beta strand: deep inside
    assert distance[2] > 4  # eclipsed backbone: an outlier several bins from the region


def test_distance_is_periodic():
    phi, psi = _grid(100)
    shifted = ramachandran_distance_deg(phi + 2 * math.pi, psi - 2 * math.pi)
    torch.testing.assert_close(shifted, ramachandran_distance_deg(phi, psi))


def test_gradient_of_an_outlier_points_to_the_allowed_region():
    phi, psi = _grid(2000, seed=1)
    distance = ramachandran_distance_deg(phi, psi)
    outliers = distance > 3.0
    phi = phi[outliers].clone().requires_grad_(True)
    psi = psi[outliers].clone().requires_grad_(True)
    ramachandran_distance_deg(phi, psi).sum().backward()
    grad = torch.stack([phi.grad, psi.grad], -1)
    assert torch.isfinite(grad).all() and (grad.norm(dim=-1) > 0).all()
    # a 1-degree step down the gradient brings the outliers closer to the region (all but
    # those on a ridge of the field, halfway between two allowed regions)
    unit = grad / grad.norm(dim=-1)[:, None]
    step = torch.deg2rad(torch.tensor(1.0, dtype=torch.float64)) * unit
    with torch.no_grad():
        closer = ramachandran_distance_deg(phi - step[:, 0], psi - step[:, 1])
    gain = distance[outliers] - closer
    assert (gain > 0).float().mean() > 0.95
    assert gain.median() > 0.5  # degrees: the field is a distance, slope about 1


def test_closed_form_slope_equals_the_autograd_derivative():
    phi, psi = _grid(5000, seed=2)
    phi, psi = phi.requires_grad_(True), psi.requires_grad_(True)
    distance = ramachandran_distance_deg(phi, psi)
    d_phi, d_psi = torch.autograd.grad(distance.sum(), (phi, psi))
    value, slope_phi, slope_psi = ramachandran_distance_slope(phi.detach(), psi.detach())
    torch.testing.assert_close(value, distance.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(slope_phi, d_phi, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(slope_psi, d_psi, rtol=1e-10, atol=1e-9)
    assert (slope_phi.abs() > 1.0).float().mean() > 0.5  # not a field of zeros


def test_janin_distance_sign_matches_the_rotamer_rule_and_its_slope_is_exact():
    chi1, chi2 = _grid(20000, seed=3)
    chi1, chi2 = chi1.requires_grad_(True), chi2.requires_grad_(True)
    distance, slope1, slope2 = janin_distance_slope(chi1, chi2)
    d1, d2 = torch.autograd.grad(distance.sum(), (chi1, chi2))
    torch.testing.assert_close(slope1, d1, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(slope2, d2, rtol=1e-10, atol=1e-9)
    distance = distance.detach()
    allowed = torch.from_numpy(janin_allowed(chi1.detach().numpy(), chi2.detach().numpy()))
    clear = distance.abs() > JANIN_BIN_DEG / 2
    assert clear.float().mean() > 0.5 and (distance > 0).any() and (distance < 0).any()
    assert torch.equal(distance[clear] < 0, allowed[clear])


def test_staggered_distance_matches_the_chi1_rule():
    chi1, _ = _grid(5000, seed=4)
    distance, slope = staggered_distance_slope(chi1)
    inside = torch.from_numpy(staggered(chi1.numpy()))
    assert torch.equal(distance <= 0, inside)
    assert inside.float().mean() > 0.5 and (~inside).any()  # 3 x 80 of 360 degrees allowed
    step = 1e-6
    moved, _ = staggered_distance_slope(chi1 + step)
    torch.testing.assert_close((moved - distance) / step, slope, rtol=1e-4, atol=1e-4)
