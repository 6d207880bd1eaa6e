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

from starmd.bench import synthetic_structure
from starmd.model import KVCache
from starmd.model.features import nearest_neighbours
from starmd.model.inputs import FrameTokens
from starmd.model.joint_attention import MaskedContext, NeighbourCacheContext, neighbour_mask
from starmd.model.masks import training_attention_mask
from starmd.sample.rollout import protein_input
from starmd.structure.io import load_structure
from starmd.structure.rigid import Rigid
from tests.conftest import STRUCTURES
from tests.model.conftest import chain_frames, make_model, make_window, random_rigid
from tests.model.test_equivariance import _assert_moved_by

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
    neighbours = model.attention_neighbours(window.cond)
    assert neighbours.shape == (2, L, NEAR)
    near = neighbour_mask(neighbours)
    assert (near.sum(-1) == NEAR).all()
    assert near.diagonal(dim1=-2, dim2=-1)[window.cond.residue_mask].all()  # itself included
    trans = window.cond.init_frames.trans
    d = torch.cdist(trans, trans).masked_fill(~window.cond.residue_mask[:, None, :], torch.inf)
    farthest_kept = d.masked_fill(~near, -torch.inf).amax(-1)
    nearest_dropped = d.masked_fill(near, torch.inf).amin(-1)
    assert (farthest_kept <= nearest_dropped).all()
    assert make_model(attention_neighbours=L).attention_neighbours(window.cond) is None  # all
    assert make_model().attention_neighbours(window.cond) is None


def test_training_mask_sees_own_frame_fully_and_other_frames_through_neighbours():
    window = _window(frames=K, num_padding=2)
    neighbours = make_model(attention_neighbours=NEAR).attention_neighbours(window.cond)
    near = neighbour_mask(neighbours)
    mask = training_attention_mask(K, window.cond.residue_mask)
    restricted = MaskedContext(mask).restrict(neighbours).mask
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
    motion = random_rigid((), torch.Generator().manual_seed(5), torch.float64, scale=30.0)
    moved_window = window.map_frames(motion.compose)
    with torch.no_grad():
        out = model(window.cond, window.clean, window.noisy)
        moved = model(moved_window.cond, moved_window.clean, moved_window.noisy)
    _assert_moved_by(moved.noisy, out.noisy, motion, 1e-6)


def test_flex_attention_refuses_the_neighbour_option():
    model = make_model(attention_neighbours=NEAR)
    window = _window(frames=2)
    with pytest.raises(ValueError, match="dense mask"), torch.no_grad():
        model(window.cond, window.clean, window.noisy, attention="flex")


def _masked_cache_attention(cache, slot, neighbours, q):
    """Reference: masked attention over every cached key, visibility written out densely."""
    slots = [slot] if isinstance(slot, int) else slot
    num_slots, key_mask = cache.visibility(slot)
    b, l, _ = neighbours.shape
    key_slot = torch.arange(num_slots).repeat_interleave(l)
    query_slot = torch.tensor(slots).repeat_interleave(l)
    own_frame = query_slot[:, None] == key_slot[None, :]
    mask = (own_frame | neighbour_mask(neighbours).repeat(1, len(slots), num_slots))[:, None]
    if key_mask is not None:
        mask = mask & key_mask
    mask = mask[..., mask.shape[-2] - q.shape[-2] :, :]
    keys, values = cache.layer(0, num_slots)
    return torch.nn.functional.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask, scale=1.0
    )


@pytest.mark.parametrize(
    ("window", "sink", "padding", "length", "gathered"),
    [
        (None, False, 0, 12, False),
        (2, True, 3, 12, False),
        (2, True, 5, 160, True),
        (None, False, 0, 160, True),
    ],
)
def test_neighbour_cache_attention_equals_masked_attention_over_the_cache(
    window, sink, padding, length, gathered
):
    """Random keys, values and queries through a rollout's slot life: every pass (one group,
    two groups appended together, queries of the last group only) gives what masked
    attention over the whole cache gives, with gathered keys (a 160-residue chain: blocks'
    key sets a fraction of the protein) and with the masked form (12 residues)."""
    g = torch.Generator().manual_seed(11)
    b, h, l, k, dk, dv = 2, 3, length, 4, 8, 16
    residue_mask = torch.ones(b, l, dtype=torch.bool)
    residue_mask[1, l - padding :] = False
    points = chain_frames((b,), l, g, torch.float64).trans
    neighbours = nearest_neighbours(points, residue_mask, k)
    cache = KVCache(window=window, sink=sink)

    def run(count: int, queries: int):
        slot = cache.open_slot(residue_mask, 1, h, dk, dv, torch.float64, count=count)
        context = NeighbourCacheContext(cache, slot, neighbours)
        keys = torch.randn(b, h, count * l, dk, generator=g, dtype=torch.float64)
        values = torch.randn(b, h, count * l, dv, generator=g, dtype=torch.float64)
        q = torch.randn(b, h, queries * l, dk, generator=g, dtype=torch.float64)
        out = context.attend(0, q, keys, values)
        expected = _masked_cache_attention(cache, slot, neighbours, q)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
        seen_before = len(cache.groups) > 0 or count > 1
        assert (context.layout is not None) == (gathered and seen_before)
        return slot

    run(2, 2)  # on an empty cache: the first group sees no other slot, the second the first
    cache.commit(run(1, 1))
    for _ in range(4):
        cache.commit(run(1, 1))
        run(1, 1)  # a noisy group: attends, is not committed
        slots = run(2, 2)  # a clean group appended and the next noisy group in one pass
        assert run(2, 1) == slots  # the same pass keeping the last group's queries only
        cache.commit(slots[0])
    assert len(cache.groups) == (9 if window is None else window + sink)


def test_gathered_rollout_equals_masked_forward_on_a_real_structure(tmp_path):
    """Four villin headpieces (4 x 36 residues, the bench's synthetic protein), 6 neighbours:
    the KV-cache rollout (gathered keys) reproduces the training forward (masked keys) for
    every frame."""
    path = synthetic_structure(STRUCTURES / "1vii.pdb", 144, tmp_path / "villin4.pdb")
    protein, positions = load_structure(path)
    cond = protein_input(protein, positions, 50.0, replicas=1).cond
    model = make_model(dtype=cond.init_frames.trans.dtype, attention_neighbours=6)
    frames, l = 4, 144
    g = torch.Generator().manual_seed(2)
    init = cond.init_frames.unsqueeze(1).map_tensors(lambda t: t.expand(1, frames, *t.shape[2:]))

    def perturbed(scale: float) -> Rigid:
        noise = scale * torch.randn(init.trans.shape, generator=g, dtype=init.trans.dtype)
        return Rigid(init.rots, init.trans + noise)

    time_ps = 50.0 * torch.arange(frames, dtype=init.trans.dtype)[None]
    torsions = torch.zeros(1, frames, l, 7, dtype=init.trans.dtype)
    clean = FrameTokens(perturbed(0.3), torsions, torch.full((1, frames), 0.05), time_ps)
    reference = Rigid.cat([cond.init_frames.unsqueeze(1), clean.frames[:, :-1]], dim=1)
    noisy = FrameTokens(perturbed(3.0), torsions, torch.full((1, frames), 0.7), time_ps, reference)
    with torch.no_grad():
        full = model(cond, clean, noisy, window=2, sink=True)
    cache = KVCache(window=2, sink=True)
    for t in range(frames):
        step = model.denoise(cache, cond, noisy[t])
        torch.testing.assert_close(step.frames.trans, full.noisy[t].frames.trans)
        torch.testing.assert_close(step.torsions, full.noisy[t].torsions)
        model.append_clean(cache, cond, clean[t])
    neighbours = model.attention_neighbours(cond)
    slot = model._open_slot(cache, cond, noisy[0])
    assert NeighbourCacheContext(cache, slot, neighbours).layout is not None  # keys gathered
