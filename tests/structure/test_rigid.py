import math

import pytest
import torch

from starmd.structure.rigid import Rigid, quat_to_rotmat, rotmat_to_quat


def random_rigid(shape, dtype=torch.float64, seed=0) -> Rigid:
    g = torch.Generator().manual_seed(seed)
    quat = torch.randn(*shape, 4, generator=g, dtype=dtype)
    trans = 10 * torch.randn(*shape, 3, generator=g, dtype=dtype)
    return Rigid(quat_to_rotmat(quat), trans)


def test_rotations_are_orthonormal_with_det_one():
    r = random_rigid((50,))
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    torch.testing.assert_close(r.rots @ r.rots.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(r.rots), torch.ones(50, dtype=torch.float64))


def test_quaternion_round_trip_including_near_180_degrees():
    r = random_rigid((200,))
    # rotations by ~pi about random axes: where naive trace-based conversion is unstable
    axis = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    angle = math.pi - 1e-7
    q_pi = torch.cat(
        [torch.full((20, 1), math.cos(angle / 2), dtype=torch.float64), math.sin(angle / 2) * axis],
        -1,
    )
    rots = torch.cat([r.rots, quat_to_rotmat(q_pi)])
    back = quat_to_rotmat(rotmat_to_quat(rots))
    torch.testing.assert_close(back, rots, atol=1e-10, rtol=0)
    assert (rotmat_to_quat(rots)[:, 0] >= 0).all()


def test_tensor_7_round_trip():
    r = random_rigid((4, 6))
    r2 = Rigid.from_tensor_7(r.to_tensor_7())
    torch.testing.assert_close(r2.rots, r.rots)
    torch.testing.assert_close(r2.trans, r.trans)


def test_compose_with_inverse_is_identity():
    r = random_rigid((3, 5))
    ident = r.compose(r.invert())
    torch.testing.assert_close(ident.rots, torch.eye(3, dtype=torch.float64).expand(3, 5, 3, 3))
    torch.testing.assert_close(ident.trans, torch.zeros(3, 5, 3, dtype=torch.float64))


def test_compose_is_function_composition():
    a, b = random_rigid((7,), seed=1), random_rigid((7,), seed=2)
    p = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(a.compose(b).apply(p), a.apply(b.apply(p)))
    torch.testing.assert_close(a.invert_apply(a.apply(p)), p)


def test_from_3_points_convention():
    n = torch.tensor([[-0.5, 1.4, 0.0]], dtype=torch.float64)
    ca = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    c = torch.tensor([[1.5, 0.0, 0.0]], dtype=torch.float64)
    r = random_rigid((1,))
    frame = Rigid.from_3_points(r.apply(n), r.apply(ca), r.apply(c))
    torch.testing.assert_close(frame.rots, r.rots)
    torch.testing.assert_close(frame.trans, r.trans)
    local_n = frame.invert_apply(r.apply(n))
    assert local_n[0, 1] > 0 and abs(local_n[0, 2]) < 1e-12


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        Rigid(torch.zeros(2, 3, 3), torch.zeros(3, 3))


def test_rotation_conversions_work_with_autograd_after_inference_mode():
    """The conversion tables are cached per dtype; a first use under inference mode must not
    leave an inference tensor behind that a later autograd computation would reject."""
    from starmd.structure.rigid import quat_to_rotmat, rotmat_to_quat

    quat = torch.randn(5, 4, dtype=torch.bfloat16)  # a dtype no other test has cached
    with torch.inference_mode():
        rotmat_to_quat(quat_to_rotmat(quat))
    quat = quat.detach().requires_grad_()
    rotmat_to_quat(quat_to_rotmat(quat)).sum().backward()
    assert quat.grad is not None and torch.isfinite(quat.grad.float()).all()
