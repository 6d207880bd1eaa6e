import math

import numpy as np
import pytest
import torch
from scipy import stats

from starmd.diffusion import Diffuser, R3Diffuser, TorusDiffuser
from starmd.diffusion.igso3 import igso3_angle_score, igso3_log_density
from starmd.diffusion.so3 import exp_map, log_map, random_rotations, rotation_angle
from starmd.diffusion.so3_diffuser import SO3Diffuser


@pytest.fixture(scope="module")
def diffuser():
    return SO3Diffuser()


def test_sigma_schedule_is_logarithmic_between_its_ends(diffuser):
    tau = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    sigma = diffuser.sigma(tau)
    torch.testing.assert_close(sigma[[0, 2]], torch.tensor([0.1, 1.5], dtype=torch.float64))
    assert sigma[1].item() == pytest.approx(math.log(0.5 * math.exp(1.5) + 0.5 * math.exp(0.1)))
    tau = tau.clone().requires_grad_(True)
    (dsigma_sq,) = torch.autograd.grad((diffuser.sigma(tau) ** 2).sum(), tau)
    torch.testing.assert_close(diffuser.diffusion_coefficient_sq(tau.detach()), dsigma_sq)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_marginal_is_orthonormal_and_body_frame(diffuser, dtype):
    g = torch.Generator().manual_seed(0)
    rot0 = random_rotations((4, 50), g, dtype=dtype)
    tau = torch.rand(4, 1, generator=g, dtype=dtype)
    rot_t, noise = diffuser.forward_marginal(rot0, tau, g)
    assert rot_t.shape == (4, 50, 3, 3) and noise.shape == (4, 50, 3) and rot_t.dtype == dtype
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    eye = torch.eye(3, dtype=dtype).expand(rot_t.shape)
    torch.testing.assert_close(rot_t @ rot_t.transpose(-1, -2), eye, atol=atol, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(rot_t), torch.ones(4, 50, dtype=dtype), atol=atol, rtol=0
    )
    torch.testing.assert_close(rot0.transpose(-1, -2) @ rot_t, exp_map(noise), atol=atol, rtol=0)


def test_forward_marginal_angles_follow_igso3_at_the_scheduled_sigma(diffuser):
    g = torch.Generator().manual_seed(1)
    rot0 = random_rotations((2000,), g, dtype=torch.float64)
    tau = 0.3
    rot_t, _ = diffuser.forward_marginal(rot0, tau, g)
    angles = rotation_angle(rot0.transpose(-1, -2) @ rot_t)
    sigma = diffuser.sigma(torch.tensor(tau, dtype=torch.float64)).item()
    table = diffuser.table
    row = torch.tensor([sigma], dtype=torch.float64)
    index, weight = table._sigma_bracket(row)
    cdf = (1 - weight) * table.cdf[index[0]] + weight * table.cdf[index[0] + 1]
    ks = stats.kstest(angles.numpy(), lambda w: np.interp(w, table.omega.numpy(), cdf.numpy()))
    assert ks.pvalue > 0.01


def test_score_is_the_body_frame_gradient_of_the_log_density(diffuser):
    g = torch.Generator().manual_seed(2)
    rot0 = random_rotations((30,), g, dtype=torch.float64)
    tau = torch.linspace(0.05, 1.0, 30, dtype=torch.float64)
    rot_t, _ = diffuser.forward_marginal(rot0, tau, g)
    score = diffuser.score(rot_t, rot0, tau)
    xi = torch.zeros(30, 3, dtype=torch.float64, requires_grad=True)
    moved = rot_t @ exp_map(xi)
    angle = rotation_angle(rot0.transpose(-1, -2) @ moved)
    log_p = igso3_log_density(angle, diffuser.sigma(tau))
    (grad,) = torch.autograd.grad(log_p.sum(), xi)
    torch.testing.assert_close(score, grad, rtol=1e-6, atol=1e-6)


def test_score_points_back_towards_the_clean_rotation(diffuser):
    v = torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64)
    rot0 = torch.eye(3, dtype=torch.float64)[None]
    score = diffuser.score(exp_map(v), rot0, 0.2)
    assert score[0, 0] < 0 and torch.allclose(score[0, 1:], torch.zeros(2, dtype=torch.float64))
    assert torch.all(diffuser.score(rot0, rot0, 0.2) == 0)


def test_score_scaling_is_the_rms_of_score_components(diffuser):
    g = torch.Generator().manual_seed(3)
    rot0 = random_rotations((20000,), g, dtype=torch.float64)
    for tau in [0.05, 0.5, 1.0]:
        rot_t, _ = diffuser.forward_marginal(rot0, tau, g)
        score = diffuser.score(rot_t, rot0, tau)
        mc = score.pow(2).mean().sqrt().item()
        assert diffuser.score_scaling(tau).item() == pytest.approx(mc, rel=0.03)


def test_prior_is_uniform_and_reverse_step_stays_on_so3(diffuser):
    g = torch.Generator().manual_seed(4)
    prior = diffuser.sample_prior((3000,), g, dtype=torch.float64)
    angles = rotation_angle(prior).numpy()
    assert stats.kstest(angles, lambda w: (w - np.sin(w)) / math.pi).pvalue > 0.01
    pred = random_rotations((3000,), g, dtype=torch.float64)
    stepped = diffuser.reverse_step(prior, pred, 0.7, 0.05, g)
    eye = torch.eye(3, dtype=torch.float64).expand(stepped.shape)
    torch.testing.assert_close(stepped @ stepped.transpose(-1, -2), eye, atol=1e-12, rtol=0)


def test_ode_reverse_step_moves_along_the_geodesic_to_the_prediction(diffuser):
    """With a score along log(R0^T R), the ODE step rotates about that same axis, towards R0."""
    g = torch.Generator().manual_seed(5)
    rot0 = random_rotations((10,), g, dtype=torch.float64)
    v = 1.0 * torch.nn.functional.normalize(
        torch.randn(10, 3, generator=g, dtype=torch.float64), dim=-1
    )
    rot_t = rot0 @ exp_map(v)
    stepped = diffuser.reverse_step(rot_t, rot0, 0.5, 0.01, g, ode=True)
    v_new = log_map(rot0.transpose(-1, -2) @ stepped)
    torch.testing.assert_close(torch.nn.functional.normalize(v_new, dim=-1), v)
    tau = torch.tensor(0.5, dtype=torch.float64)
    sigma, g_sq = diffuser.sigma(tau), diffuser.diffusion_coefficient_sq(tau)
    expected = (
        1.0 + 0.5 * g_sq * igso3_angle_score(torch.tensor(1.0, dtype=torch.float64), sigma) * 0.01
    )
    torch.testing.assert_close(v_new.norm(dim=-1), expected.expand(10))
    assert expected < 1.0


def test_small_sigma_samples_are_gaussian_rotation_vectors():
    """Below closed_form_below the table uses the closed form; samples ~ N(0, sigma^2 I_3)."""
    small = SO3Diffuser(sigma_min=0.01, sigma_max=0.05, num_sigma=50, disk_cache=False)
    sigma = 0.02
    g = torch.Generator().manual_seed(6)
    rotvec = small.sample_igso3(torch.full((3000,), sigma, dtype=torch.float64), g)
    for component in rotvec.T:
        assert stats.kstest(component.numpy(), stats.norm(scale=sigma).cdf).pvalue > 0.01


def test_all_diffusers_implement_the_common_interface(diffuser):
    for d in [R3Diffuser(), diffuser, TorusDiffuser()]:
        assert isinstance(d, Diffuser)
