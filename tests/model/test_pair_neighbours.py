"""Pair features and IPA over each residue's nearest neighbours (``pair_neighbours``).

Above ``pair_neighbours`` residues the per-frame pair path is O(L k): the tests check that with
every residue as a neighbour it is the dense path, that it keeps the network's SE(3) behaviour,
causality and KV-cache equivalence, and that it really restricts the partners.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from starmd.model import KVCache
from starmd.model.features import gather_pairs, nearest_neighbours
from starmd.structure.rigid import Rigid
from tests.model.conftest import make_model, make_window
from tests.model.test_equivariance import _assert_moved_by, _forward_before_and_after_motion

L = 12


def test_neighbours_are_nearest_first_and_skip_padding():
    window = make_window(length=L, num_padding=3)
    trans, mask = window.cond.init_frames.trans, window.cond.residue_mask
    near = nearest_neighbours(trans, mask, 4)
    assert near.shape == (2, L, 4)
    itself = near[..., 0] == torch.arange(L)
    assert itself[mask].all()  # every real residue is its own nearest neighbour
    d = torch.cdist(trans, trans)
    d_near = gather_pairs(d, near)
    assert (d_near.diff(dim=-1) >= 0).all()
    d_real = d.masked_fill(~mask[:, None, :], torch.inf)
    assert torch.allclose(d_near[..., -1], d_real.sort(dim=-1).values[..., 3])
    assert mask[0][near[0]].all()  # 9 real residues >= 4: padding never chosen
    assert nearest_neighbours(trans, mask, L) is None  # all pairs: dense path
    assert nearest_neighbours(trans, mask, None) is None


def test_all_neighbours_reproduce_the_dense_network():
    model = make_model()
    window = make_window(length=L, num_padding=2)
    with torch.no_grad():
        dense = model(window.cond, window.clean, window.noisy)
        model.pair_neighbours = lambda cond: nearest_neighbours(
            cond.init_frames.trans, cond.residue_mask, L - 1
        )
        restricted = model(window.cond, window.clean, window.noisy)
        # k = L (every residue, in distance order) goes through the neighbour code path too
        model.pair_neighbours = lambda cond: (
            torch.topk(
                torch.cdist(cond.init_frames.trans, cond.init_frames.trans), L, largest=False
            ).indices
        )
        sparse = model(window.cond, window.clean, window.noisy)
    for got, want in ((sparse.noisy, dense.noisy), (sparse.clean, dense.clean)):
        torch.testing.assert_close(got.frames.trans, want.frames.trans, atol=1e-9, rtol=0)
        torch.testing.assert_close(got.frames.rots, want.frames.rots, atol=1e-9, rtol=0)
        torch.testing.assert_close(got.torsions, want.torsions, atol=1e-9, rtol=0)
    # dropping one partner per residue changes the prediction: the restriction is real
    change = (restricted.noisy.frames.trans - dense.noisy.frames.trans).abs().max()
    assert change > 1e-4


def test_neighbour_path_is_equivariant_causal_and_cacheable():
    model = make_model(pair_neighbours=5)
    window = make_window(length=L, frames=3, num_padding=2)
    assert model.pair_neighbours(window.cond).shape == (2, L, 5)
    out, moved, motion = _forward_before_and_after_motion(model, window, 5)
    _assert_moved_by(moved.noisy, out.noisy, motion, 1e-6)

    # causality: moving the last clean frame (seen by no noisy frame) changes only itself
    later = window.clean.frames.trans.clone()
    later[:, -1] += 3.0
    changed = replace(window.clean, frames=Rigid(window.clean.frames.rots, later))
    with torch.no_grad():
        out2 = model(window.cond, changed, window.noisy)
    assert torch.equal(out2.noisy.frames.trans, out.noisy.frames.trans)
    assert torch.equal(out2.clean.frames.trans[:, :-1], out.clean.frames.trans[:, :-1])
    assert (out2.clean.frames.trans[:, -1] - out.clean.frames.trans[:, -1]).abs().max() > 1e-3

    # the KV-cache rollout equals the training-layout forward
    cache = KVCache(window=2, sink=True)
    with torch.no_grad():
        full = model(window.cond, window.clean, window.noisy, window=2, sink=True)
    for t in range(3):
        step = model.denoise(cache, window.cond, window.noisy[t])
        torch.testing.assert_close(step.frames.trans, full.noisy[t].frames.trans, atol=1e-9, rtol=0)
        model.append_clean(cache, window.cond, window.clean[t])
