"""Joint attention restricted to spatial neighbours across frames (``attention_neighbours``).

A token sees every residue of its own frame and, in the other frames it may see, only its ``k``
nearest residues in the input structure. The tests check the visibility against a direct
construction, that the restriction is real, and that the network keeps causality, its KV-cache
equivalence and its SE(3) behaviour with it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from starmd.model import KVCache
from starmd.model.joint_attention import MaskedContext
from starmd.model.masks import training_attention_mask
from starmd.structure.rigid import Rigid
from tests.model.conftest import make_model, make_window
from tests.model.test_equivariance import _assert_moved_by, _forward_before_and_after_motion

L, K, NEAR = 10, 3, 4


def _window(**kwargs):
    """A random window whose input structure has no distance ties (the random walk's 3.8 A
    steps tie, and a tie at the k-th neighbour is broken by rounding)."""
    window = make_window(length=L, **kwargs)
    init = window.cond.init_frames
    jitter = 0.3 * torch.randn(init.trans.shape, generator=torch.Generator().manual_seed(3))
    jittered = Rigid(init.rots, init.trans + jitter.to(init.trans.dtype))
    return replace(window, cond=replace(window.cond, init_frames=jittered))


def test_neighbour_set_is_each_residues_nearest_in_the_input_structure():
    model = make_model(attention_neighbours=NEAR)
    window = _window(num_padding=2)
    near = model.attention_near(window.cond)
    assert near.shape == (2, L, L)
    assert (near.sum(-1) == NEAR).all()
    assert near.diagonal(dim1=-2, dim2=-1)[window.cond.residue_mask].all()  # itself included
    trans = window.cond.init_frames.trans
    d = torch.cdist(trans, trans).masked_fill(~window.cond.residue_mask[:, None, :], torch.inf)
    farthest_kept = d.masked_fill(~near, -torch.inf).amax(-1)
    nearest_dropped = d.masked_fill(near, torch.inf).amin(-1)
    assert (farthest_kept <= nearest_dropped).all()
    assert make_model(attention_neighbours=L).attention_near(window.cond) is None  # all: off
    assert make_model().attention_near(window.cond) is None


def test_training_mask_sees_own_frame_fully_and_other_frames_through_neighbours():
    window = _window(frames=K, num_padding=2)
    near = make_model(attention_neighbours=NEAR).attention_near(window.cond)
    mask = training_attention_mask(K, window.cond.residue_mask)
    restricted = MaskedContext(mask).restrict(near).mask
    n = 2 * K * L
    for b in range(2):
        for q in range(0, n, 7):
            for k in range(n):
                same_frame = q // L == k // L
                expected = bool(mask[b, 0, q, k]) and (same_frame or bool(near[b, q % L, k % L]))
                assert bool(restricted[b, 0, q, k]) == expected


def test_restriction_changes_predictions_of_later_frames_only():
    model = make_model()
    restricted = make_model(attention_neighbours=NEAR)
    restricted.load_state_dict(model.state_dict())
    window = _window(frames=K)
    with torch.no_grad():
        full = model(window.cond, window.clean, window.noisy)
        near = restricted(window.cond, window.clean, window.noisy)
    # frame 0 sees no other frame: identical; later frames see fewer keys: different
    torch.testing.assert_close(near.clean[0].frames.trans, full.clean[0].frames.trans)
    torch.testing.assert_close(near.noisy[0].frames.trans, full.noisy[0].frames.trans)
    assert (near.noisy.frames.trans[:, 1:] - full.noisy.frames.trans[:, 1:]).abs().max() > 1e-4


def test_neighbour_attention_is_causal():
    model = make_model(attention_neighbours=NEAR)
    window = _window(frames=K, num_padding=2)
    later = window.clean.frames.trans.clone()
    later[:, -1] += 3.0
    changed = replace(window.clean, frames=Rigid(window.clean.frames.rots, later))
    with torch.no_grad():
        out = model(window.cond, window.clean, window.noisy)
        out2 = model(window.cond, changed, window.noisy)
    assert torch.equal(out2.noisy.frames.trans, out.noisy.frames.trans)
    assert torch.equal(out2.clean.frames.trans[:, :-1], out.clean.frames.trans[:, :-1])
    assert (out2.clean.frames.trans[:, -1] - out.clean.frames.trans[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize(("window", "sink"), [(None, False), (1, True)])
def test_neighbour_attention_rollout_with_cache_matches_full_forward(window, sink):
    model = make_model(attention_neighbours=NEAR)
    data = _window(frames=K, num_padding=2)
    with torch.no_grad():
        full = model(data.cond, data.clean, data.noisy, window=window, sink=sink)
    cache = KVCache(window=window, sink=sink)
    merged = KVCache(window=window, sink=sink)
    for t in range(K):
        step = model.denoise(cache, data.cond, data.noisy[t])
        torch.testing.assert_close(step.frames.trans, full.noisy[t].frames.trans, atol=1e-9, rtol=0)
        torch.testing.assert_close(step.torsions, full.noisy[t].torsions, atol=1e-9, rtol=0)
        if t > 0:  # the clean frame t - 1 appended in the same pass as denoising frame t
            one_pass = model.append_and_denoise(merged, data.cond, data.clean[t - 1], data.noisy[t])
            torch.testing.assert_close(
                one_pass.frames.trans, full.noisy[t].frames.trans, atol=1e-9, rtol=0
            )
        model.append_clean(cache, data.cond, data.clean[t])


def test_neighbour_attention_is_equivariant():
    model = make_model(attention_neighbours=NEAR)
    window = _window(frames=K, num_padding=2)
    out, moved, motion = _forward_before_and_after_motion(model, window, 5)
    _assert_moved_by(moved.noisy, out.noisy, motion, 1e-6)


def test_flex_attention_refuses_the_neighbour_option():
    model = make_model(attention_neighbours=NEAR)
    window = _window(frames=2)
    with pytest.raises(ValueError, match="dense mask"), torch.no_grad():
        model(window.cond, window.clean, window.noisy, attention="flex")
