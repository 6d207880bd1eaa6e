import math

import pytest
import torch
from scipy import stats

from starmd.diffusion.so3 import exp_map, hat, log_map, random_rotations, rotation_angle, vee


def _axes(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=dtype), dim=-1)


def _assert_rotations(rots, atol):
    eye = torch.eye(3, dtype=rots.dtype).expand(rots.shape)
    torch.testing.assert_close(rots @ rots.transpose(-1, -2), eye, atol=atol, rtol=0)
    det = torch.linalg.det(rots)
    torch.testing.assert_close(det, torch.ones_like(det), atol=atol, rtol=0)


def test_hat_is_the_cross_product_and_vee_inverts_it():
    v, u = _axes(10, 1), _axes(10, 2)
    torch.testing.assert_close((hat(v) @ u[..., None])[..., 0], torch.linalg.cross(v, u))
    torch.testing.assert_close(vee(hat(v)), v)


def test_exp_map_matches_matrix_exponential_of_hat():
    angles = torch.tensor([0.0, 1e-9, 1e-5, 1e-3, 0.5, 2.0, math.pi - 1e-6, math.pi])
    v = angles.double()[:, None] * _axes(len(angles))
    torch.testing.assert_close(exp_map(v), torch.linalg.matrix_exp(hat(v)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_exp_of_log_is_identity_including_near_zero_and_pi(dtype, atol):
    g = torch.Generator().manual_seed(3)
    generic = random_rotations((200,), g, dtype=torch.float64)
    angles = torch.tensor([1e-12, 1e-7, 1e-4, math.pi - 1e-3, math.pi - 1e-6, math.pi - 1e-9])
    special = exp_map(angles.double()[:, None].repeat(5, 1) * _axes(30, 4))
    n = _axes(10, 5)
    half_turns = 2 * n[:, :, None] * n[:, None, :] - torch.eye(3, dtype=torch.float64)  # angle pi
    rots = torch.cat([generic, special, half_turns, torch.eye(3, dtype=torch.float64)[None]])
    rots = rots.to(dtype)
    torch.testing.assert_close(exp_map(log_map(rots)), rots, atol=atol, rtol=0)
    assert torch.all(rotation_angle(rots) <= math.pi + atol)


def test_log_of_exp_recovers_rotation_vectors_below_pi():
    g = torch.Generator().manual_seed(6)
    angles = torch.rand(500, generator=g, dtype=torch.float64) * (math.pi - 1e-3)
    v = angles[:, None] * _axes(500, 7)
    torch.testing.assert_close(log_map(exp_map(v)), v, atol=1e-10, rtol=0)


def test_maps_have_finite_gradients_at_identity():
    v = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    rots = exp_map(v)
    (rots * torch.randn(4, 3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(v.grad).all()
    r = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1).requires_grad_(True)
    log_map(r).sum().backward()
    assert torch.isfinite(r.grad).all()


def test_random_rotations_are_orthonormal_and_haar_uniform():
    g = torch.Generator().manual_seed(8)
    rots = random_rotations((4000,), g, dtype=torch.float64)
    _assert_rotations(rots, 1e-12)
    # the Haar angle marginal has CDF (omega - sin omega) / pi
    angles = rotation_angle(rots).numpy()
    assert (
        stats.kstest(angles, lambda w: (w - torch.sin(torch.as_tensor(w)).numpy()) / math.pi).pvalue
        > 0.01
    )
