"""The Ramachandran reference region and its differentiable distance field."""

from __future__ import annotations

import math

import torch

from starmd.structure.ramachandran import (
    RAMA_BIN_DEG,
    ramachandran_allowed,
    ramachandran_distance_deg,
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
