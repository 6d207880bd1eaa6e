import math

import pytest
import torch

from starmd.diffusion.r3_diffuser import R3Diffuser


def _tolerance(n: int) -> tuple[float, float]:
    """5-sigma sampling tolerances for a standardized mean and a relative variance."""
    return 5 / math.sqrt(n), 5 * math.sqrt(2 / n)


def test_marginal_params_follow_the_linear_beta_schedule():
    d = R3Diffuser(beta_min=0.1, beta_max=20.0)
    tau = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    big_b = 0.1 * tau + 0.5 * 19.9 * tau**2
    alpha, std = d.marginal_params(tau)
    torch.testing.assert_close(alpha, torch.exp(-big_b / 2))
    torch.testing.assert_close(std, torch.sqrt(1 - torch.exp(-big_b)))
    torch.testing.assert_close(alpha**2 + std**2, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [0.05, 0.4, 1.0])
def test_forward_marginal_has_closed_form_moments_in_angstrom(dtype, tau):
    d = R3Diffuser(coordinate_scale=0.1)
    n = 40000
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([12.0, -5.0, 3.0], dtype=dtype).expand(n, 3)
    x_t, noise = d.forward_marginal(x0, tau, g)
    alpha, std = (v.item() for v in d.marginal_params(tau))
    std_angstrom = std / 0.1
    mean_tol, var_tol = _tolerance(n)
    err = (x_t.double().mean(0) - alpha * x0[0].double()) / std_angstrom
    assert err.abs().max() < mean_tol
    var = x_t.double().var(0)
    assert ((var / std_angstrom**2) - 1).abs().max() < var_tol
    torch.testing.assert_close(x_t, alpha * x0 + std_angstrom * noise)


def test_score_is_the_gradient_of_the_gaussian_log_density_in_scaled_units():
    d = R3Diffuser(coordinate_scale=0.1)
    g = torch.Generator().manual_seed(1)
    x0 = 10 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    tau = torch.linspace(0.1, 1.0, 8, dtype=torch.float64)
    x_t, noise = d.forward_marginal(x0, tau, g)
    alpha, std = d.marginal_params(tau[:, None])
    y = (x_t * 0.1).requires_grad_(True)
    log_p = (-((y - alpha * x0 * 0.1) ** 2) / (2 * std**2)).sum()
    (grad,) = torch.autograd.grad(log_p, y)
    score = d.score(x_t, x0, tau)
    torch.testing.assert_close(score, grad)
    torch.testing.assert_close(score, -noise / std)


def test_score_scaling_is_the_rms_of_score_components():
    d = R3Diffuser()
    g = torch.Generator().manual_seed(2)
    x0 = torch.zeros(20000, 3, dtype=torch.float64)
    for tau in [0.01, 0.5, 1.0]:
        x_t, _ = d.forward_marginal(x0, tau, g)
        rms = d.score(x_t, x0, tau).pow(2).mean().sqrt().item()
        assert d.score_scaling(tau).item() == pytest.approx(rms, rel=0.03)


def test_per_frame_times_broadcast_over_residues():
    d = R3Diffuser()
    g = torch.Generator().manual_seed(3)
    x0 = torch.zeros(2, 3, 4000, 3, dtype=torch.float64)
    tau = torch.tensor([[0.01], [0.2], [1.0]], dtype=torch.float64).expand(2, 3, 1)
    x_t, _ = d.forward_marginal(x0, tau, g)
    std = d.marginal_params(tau[0, :, 0])[1] / 0.1
    torch.testing.assert_close(x_t.std(dim=(0, 2, 3)), std, rtol=0.03, atol=0)
    with pytest.raises(ValueError, match="broadcast"):
        d.forward_marginal(x0, torch.zeros(5), g)


def test_reverse_sde_step_has_the_euler_maruyama_mean_and_variance():
    d = R3Diffuser(coordinate_scale=0.1)
    g = torch.Generator().manual_seed(4)
    n, tau, dtau = 40000, 0.6, 0.01
    x_t = torch.tensor([4.0, -2.0, 7.0], dtype=torch.float64).expand(n, 3)
    x0 = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64).expand(n, 3)
    alpha, std = (v.item() for v in d.marginal_params(tau))
    beta = 0.1 + tau * 19.9
    y, y0 = 0.1 * x_t[0], 0.1 * x0[0]
    score = -(y - alpha * y0) / std**2
    mean = (y + (0.5 * beta * y + beta * score) * dtau) / 0.1
    sd = math.sqrt(beta * dtau) / 0.1
    stepped = d.reverse_step(x_t, x0, tau, dtau, g)
    mean_tol, var_tol = _tolerance(n)
    assert ((stepped.mean(0) - mean) / sd).abs().max() < mean_tol
    assert (stepped.var(0) / sd**2 - 1).abs().max() < var_tol
    ode = d.reverse_step(x_t, x0, tau, dtau, g, ode=True)
    torch.testing.assert_close(ode[0], (y + (0.5 * beta * y + 0.5 * beta * score) * dtau) / 0.1)
    quiet = d.reverse_step(x_t, x0, tau, dtau, g, noise_scale=0.0)
    torch.testing.assert_close(quiet[0], mean)


def test_prior_is_standard_normal_in_scaled_units():
    d = R3Diffuser(coordinate_scale=0.1)
    x = d.sample_prior((50000,), torch.Generator().manual_seed(5), dtype=torch.float64)
    assert x.shape == (50000, 3)
    mean_tol, var_tol = _tolerance(50000)
    assert (x.mean(0) / 10).abs().max() < mean_tol
    assert (x.var(0) / 100 - 1).abs().max() < var_tol
