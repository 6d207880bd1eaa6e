"""SE(3): a global rigid motion of every input frame moves the predicted frames by the same
motion and leaves the predicted torsions unchanged."""

from __future__ import annotations

import pytest
import torch

from starmd.model import DenoiserOutput
from tests.model.conftest import make_model, make_window, random_rigid


def _assert_moved_by(moved: DenoiserOutput, original: DenoiserOutput, motion, tol: float):
    expected = motion.compose(original.frames)
    torch.testing.assert_close(moved.frames.rots, expected.rots, atol=tol, rtol=0)
    torch.testing.assert_close(moved.frames.trans, expected.trans, atol=tol, rtol=tol)
    expected_blocks = motion.compose(original.frames_per_block)
    torch.testing.assert_close(
        moved.frames_per_block.trans, expected_blocks.trans, atol=tol, rtol=tol
    )
    torch.testing.assert_close(moved.torsions, original.torsions, atol=tol, rtol=0)


def _forward_before_and_after_motion(model, window, seed: int, dtype=torch.float64, scale=30.0):
    """The model's outputs on ``window`` and on the same window moved by a random rigid motion
    (``Generator(seed)``), and that motion."""
    motion = random_rigid((), torch.Generator().manual_seed(seed), dtype, scale=scale)
    moved_window = window.map_frames(motion.compose)
    with torch.no_grad():
        out = model(window.cond, window.clean, window.noisy)
        moved = model(moved_window.cond, moved_window.clean, moved_window.noisy)
    return out, moved, motion


@pytest.mark.parametrize(
    ("dtype", "tol", "shift"), [(torch.float64, 1e-6, 30.0), (torch.float32, 1e-3, 30.0)]
)
def test_global_rigid_motion_moves_predicted_frames_and_keeps_torsions(dtype, tol, shift):
    model = make_model(dtype)
    window = make_window(dtype=dtype, num_padding=2)
    out, moved, motion = _forward_before_and_after_motion(model, window, 7, dtype, shift)

    # The network does move the frames (the test would be vacuous for the identity update).
    change = (out.noisy.frames.trans - window.noisy.frames.trans).norm(dim=-1)  # (B, G, L)
    real = window.cond.residue_mask[:, None, :].expand_as(change)
    assert change[real].mean() > 0.5
    _assert_moved_by(moved.noisy, out.noisy, motion, tol)
    _assert_moved_by(moved.clean, out.clean, motion, tol)


def test_rollout_path_is_equivariant():
    model = make_model()
    window = make_window(frames=3)
    motion = random_rigid((), torch.Generator().manual_seed(3), torch.float64)
    moved_window = window.map_frames(motion.compose)

    outputs = []
    for w in (window, moved_window):
        cache = model.new_cache(window=1, sink=True)
        for t in range(2):
            model.append_clean(cache, w.cond, w.clean[t])
        outputs.append(model.denoise(cache, w.cond, w.noisy[2]))
    _assert_moved_by(outputs[1], outputs[0], motion, 1e-6)
