import math

import pytest
import torch
from scipy import stats

from starmd.diffusion.torus_diffuser import (
    TorusDiffuser,
    wrapped_normal_log_density,
    wrapped_normal_score,
)
from starmd.structure.geometry import wrap_angle


@pytest.mark.parametrize("sigma", [0.05, 0.5, 1.5, math.pi])
def test_wrapped_normal_density_integrates_to_one(sigma):
    x = torch.linspace(-math.pi, math.pi, 20001, dtype=torch.float64)
    p = wrapped_normal_log_density(x, torch.tensor(sigma, dtype=torch.float64)).exp()
    assert torch.trapezoid(p, x).item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 1.5, math.pi])
def test_wrapped_normal_score_is_the_numerical_gradient_of_the_log_density(sigma):
    x = torch.linspace(-3.0, 3.0, 121, dtype=torch.float64)
    s = torch.tensor(sigma, dtype=torch.float64)
    h = 1e-5
    fd = (wrapped_normal_log_density(x + h, s) - wrapped_normal_log_density(x - h, s)) / (2 * h)
    torch.testing.assert_close(wrapped_normal_score(x, s), fd, rtol=1e-6, atol=1e-6)
    # periodic: the score at x and x + 2 pi agree
    torch.testing.assert_close(wrapped_normal_score(x + 2 * math.pi, s), wrapped_normal_score(x, s))


def test_sigma_schedule_is_geometric():
    d = TorusDiffuser(sigma_min=0.01, sigma_max=math.pi)
    tau = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.01, math.sqrt(0.01 * math.pi), math.pi], dtype=torch.float64)
    torch.testing.assert_close(d.sigma(tau), expected)


@pytest.mark.parametrize("tau", [0.2, 0.6, 0.9])
def test_forward_marginal_has_closed_form_circular_moments(tau):
    d = TorusDiffuser()
    n = 40000
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([3.0, -3.1, 0.5], dtype=torch.float64).expand(n, 3)
    x_t, noise = d.forward_marginal(x0, tau, g)
    assert torch.all((x_t >= -math.pi) & (x_t < math.pi))
    sigma = d.sigma(torch.tensor(tau, dtype=torch.float64)).item()
    diff = wrap_angle(x_t - x0)
    tol = 5 / math.sqrt(n)
    # wrapped normal: E[cos d] = exp(-sigma^2 / 2), E[sin d] = 0
    assert (torch.cos(diff).mean(0) - math.exp(-(sigma**2) / 2)).abs().max() < tol
    assert torch.sin(diff).mean(0).abs().max() < tol
    torch.testing.assert_close(x_t, wrap_angle(x0 + sigma * noise))


def test_forward_marginal_variance_at_small_sigma():
    d = TorusDiffuser()
    n = 40000
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((n,), 3.1, dtype=torch.float64)  # near the cut at pi
    x_t, _ = d.forward_marginal(x0[:, None], 0.3, g)
    sigma = d.sigma(torch.tensor(0.3, dtype=torch.float64)).item()
    diff = wrap_angle(x_t[:, 0] - x0)
    assert diff.var().item() / sigma**2 == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))


def test_mask_is_respected_everywhere():
    d = TorusDiffuser()
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(6, 7, generator=g, dtype=torch.float64) * 6 - 3
    mask = torch.rand(6, 7, generator=g) > 0.4
    x_t, noise = d.forward_marginal(x0, 0.5, g, mask)
    assert torch.equal(x_t[~mask], x0[~mask]) and torch.all(noise[~mask] == 0)
    assert torch.all(x_t[mask] != x0[mask])
    assert torch.all(d.score(x_t, x0 + 1.0, 0.5, mask)[~mask] == 0)
    for ode in [False, True]:
        stepped = d.reverse_step(x_t, x0 + 1.0, 0.5, 0.1, g, ode=ode, mask=mask)
        assert torch.equal(stepped[~mask], x_t[~mask]) and torch.all(stepped[mask] != x_t[mask])
    prior = d.sample_prior((6, 7), g, dtype=torch.float64, mask=mask)
    assert torch.all(prior[~mask] == 0)


def test_score_scaling_is_the_rms_of_the_score():
    d = TorusDiffuser()
    g = torch.Generator().manual_seed(3)
    x0 = torch.zeros(20000, 1, dtype=torch.float64)
    for tau in [0.0, 0.5, 0.8, 1.0]:
        x_t, _ = d.forward_marginal(x0, tau, g)
        rms = d.score(x_t, x0, tau).pow(2).mean().sqrt().item()
        assert d.score_scaling(tau).item() == pytest.approx(rms, rel=0.03)
    assert d.score_scaling(0.0).item() == pytest.approx(1 / 0.01, rel=1e-6)


def test_prior_is_uniform_on_the_circle():
    d = TorusDiffuser()
    x = d.sample_prior((5000,), torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.all((x >= -math.pi) & (x < math.pi))
    assert stats.kstest(x.numpy(), stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 0.01


def test_reverse_step_crosses_the_periodic_boundary_the_short_way():
    d = TorusDiffuser()
    x_t = torch.tensor([[3.1]], dtype=torch.float64)
    x0 = torch.tensor([[-3.1]], dtype=torch.float64)  # 0.083 rad away across pi
    stepped = d.reverse_step(x_t, x0, 0.3, 0.05, torch.Generator(), ode=True)
    assert -math.pi <= stepped.item() < math.pi
    assert wrap_angle(stepped - x_t).item() > 0  # upwards through pi, not down through 0
    assert abs(wrap_angle(stepped - x0).item()) < abs(wrap_angle(x_t - x0).item())
