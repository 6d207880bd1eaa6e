import math

import pytest
import torch
from scipy import stats

from starmd.diffusion.so3 import (
    exp_map,
    geodesic,
    hat,
    log_map,
    random_rotations,
    rotation_angle,
    vee,
)


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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_geodesic_equals_the_tensor_expression(dtype):
    """``start exp(w log(start^T end))`` by the compiled loop (CPU, no gradient) equals the
    tensor expression (the path with gradients): relative turns from zero through the
    small-angle series to near pi, weights 0, fractions, 1 and beyond, a per-element weight and
    a broadcast batch."""
    g = torch.Generator().manual_seed(6)
    n = 9
    start = random_rotations((2, n), g, torch.float64)
    angles = torch.tensor([0.0, 1e-9, 5e-5, 2e-4, 0.3, 1.0, 2.5, math.pi - 1e-3, 3.0])
    turn = exp_map(angles.double()[:, None] * _axes(n, 3))
    end = start @ turn
    tolerance = 1e-12 if dtype == torch.float64 else 2e-6
    for weight in (0.0, 0.4, 1.0, 1.5, torch.linspace(0.0, 2.0, n, dtype=dtype)):
        s, e = start.to(dtype), end.to(dtype)
        w = torch.as_tensor(weight, dtype=dtype)
        got = geodesic(s, e, weight)
        expected = s @ exp_map(w[..., None] * log_map(s.transpose(-1, -2) @ e))
        assert got.dtype == dtype and got.shape == (2, n, 3, 3)
        torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)
    # weight 1 reaches the end, 0 stays at the start; one start broadcasts over a batch of ends
    torch.testing.assert_close(geodesic(start, end, 1.0), end, rtol=0, atol=1e-12)
    torch.testing.assert_close(geodesic(start, end, 0.0), start, rtol=0, atol=1e-12)
    shared = geodesic(start[0, :1], end[0], 0.5)
    assert shared.shape == (n, 3, 3)
    # with gradients it takes the tensor path and stays differentiable
    leaf = start.clone().requires_grad_(True)
    geodesic(leaf, end, 0.5).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
