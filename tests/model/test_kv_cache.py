"""Rollout with the KV cache reproduces the training-layout forward exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from starmd.errors import StarmdInputError
from starmd.model import KVCache
from tests.model.conftest import make_model, make_window

K = 5


def _assert_same_prediction(rollout, full, tol):
    torch.testing.assert_close(rollout.frames.rots, full.frames.rots, atol=tol, rtol=0)
    torch.testing.assert_close(rollout.frames.trans, full.frames.trans, atol=tol, rtol=0)
    torch.testing.assert_close(rollout.torsions, full.torsions, atol=tol, rtol=0)


@pytest.mark.parametrize(
    ("window", "sink"), [(None, False), (None, True), (2, False), (2, True), (1, True), (3, False)]
)
def test_rollout_with_cache_matches_full_forward(window, sink):
    model = make_model()
    data = make_window(frames=K, num_padding=2)
    with torch.no_grad():
        full = model(data.cond, data.clean, data.noisy, window=window, sink=sink)
    cache = KVCache(window=window, sink=sink)
    for t in range(K):
        _assert_same_prediction(model.denoise(cache, data.cond, data.noisy[t]), full.noisy[t], 1e-9)
        _assert_same_prediction(
            model.append_clean(cache, data.cond, data.clean[t]), full.clean[t], 1e-9
        )
        held = list(range(t + 1)) if window is None else list(range(max(0, t + 1 - window), t + 1))
        if sink and 0 not in held:
            held = [0, *held]
        assert cache.groups == held


def test_window_changes_the_prediction_once_it_slides():
    """The window is a real restriction (guards against a mask that ignores it)."""
    model = make_model()
    data = make_window(frames=K)
    with torch.no_grad():
        full = model(data.cond, data.clean, data.noisy)
        windowed = model(data.cond, data.clean, data.noisy, window=2)
    diff = (full.noisy.frames.trans - windowed.noisy.frames.trans).abs().amax(dim=(0, 2, 3))
    assert diff[:3].max() < 1e-12  # n_0..n_2 see at most 2 earlier frames anyway
    assert diff[3:].min() > 1e-4


def test_rollout_matches_in_float32():
    model = make_model(torch.float32)
    data = make_window(frames=3, dtype=torch.float32)
    with torch.no_grad():
        full = model(data.cond, data.clean, data.noisy, window=1, sink=True)
    cache = KVCache(window=1, sink=True)
    for t in range(3):
        _assert_same_prediction(model.denoise(cache, data.cond, data.noisy[t]), full.noisy[t], 1e-4)
        model.append_clean(cache, data.cond, data.clean[t])


def test_full_history_cache_grows_and_still_matches():
    model = make_model()
    frames = 10  # more than the initial 8 slots: the buffer must grow
    data = make_window(batch=1, length=6, frames=frames)
    with torch.no_grad():
        full = model(data.cond, data.clean, data.noisy)
    cache = KVCache()
    for t in range(frames - 1):
        model.append_clean(cache, data.cond, data.clean[t])
    assert cache.groups == list(range(frames - 1))
    assert cache.num_slots == 16
    rollout = model.denoise(cache, data.cond, data.noisy[frames - 1])
    _assert_same_prediction(rollout, full.noisy[frames - 1], 1e-9)


def test_denoise_leaves_the_cache_unchanged():
    model = make_model()
    data = make_window(frames=3)
    cache = KVCache(window=2)
    for t in range(3):
        model.append_clean(cache, data.cond, data.clean[t])
    groups, appended = cache.groups, cache.num_appended
    held = [i for i, g in enumerate(cache.slot_group) if g >= 0]
    l = cache.num_residues
    keys = [k[:, :, [s * l + i for s in held for i in range(l)]].clone() for k in cache.keys]
    first = model.denoise(cache, data.cond, data.noisy[2])
    noisy = replace(data.noisy, tau=data.noisy.tau * 0.5)
    model.denoise(cache, data.cond, noisy[2])
    second = model.denoise(cache, data.cond, data.noisy[2])
    assert cache.groups == groups and cache.num_appended == appended
    for before, after in zip(keys, cache.keys, strict=True):
        torch.testing.assert_close(after[:, :, [s * l + i for s in held for i in range(l)]], before)
    _assert_same_prediction(first, second, 0.0)


def test_cache_memory_is_linear_in_residues_and_flat_once_the_window_is_full():
    model = make_model(torch.float32)
    sizes = {}
    for length in (6, 12):
        data = make_window(batch=1, length=length, frames=6, dtype=torch.float32)
        cache = KVCache(window=2, sink=True)
        history = []
        for t in range(6):
            model.append_clean(cache, data.cond, data.clean[t])
            history.append(cache.nbytes())
        assert len(set(history)) == 1  # allocated once: W + sink + 2 scratch slots
        assert cache.nbytes_used() == cache.nbytes() * 3 // 5
        sizes[length] = cache.nbytes()
    assert sizes[12] == 2 * sizes[6]
    layers, heads = model.num_attention_layers, model.config.n_heads
    dims = model.blocks[0].attention[0].key_dim + model.blocks[0].attention[0].value_dim
    assert sizes[6] == layers * heads * 5 * 6 * dims * 4  # 5 slots x 6 residues x float32


def test_rollout_rejects_inconsistent_inputs():
    model = make_model()
    data = make_window(frames=2)
    cache = KVCache(window=2)
    with pytest.raises(StarmdInputError):
        model.append_clean(cache, data.cond, data.clean)  # two groups at once
    model.append_clean(cache, data.cond, data.clean[0])
    other_mask = data.cond.residue_mask.clone()
    other_mask[0, -1] = False
    with pytest.raises(ValueError, match="residue_mask"):
        model.denoise(cache, replace(data.cond, residue_mask=other_mask), data.noisy[1])


@pytest.mark.parametrize(("window", "sink"), [(None, False), (2, True), (1, False)])
def test_appending_and_denoising_in_one_pass_equals_two_passes(window, sink):
    """``append_and_denoise`` (clean frame t and noisy frame t+1 in one pass) gives the noisy
    prediction of ``append_clean`` then ``denoise``, and leaves the same cache behind."""
    model = make_model()
    data = make_window(frames=K, num_padding=2)
    separate, merged = KVCache(window=window, sink=sink), KVCache(window=window, sink=sink)
    model.append_clean(separate, data.cond, data.clean[0])
    model.append_clean(merged, data.cond, data.clean[0])
    for t in range(1, K):
        model.append_clean(separate, data.cond, data.clean[t])
        expected = model.denoise(separate, data.cond, data.noisy[t])
        got = model.append_and_denoise(merged, data.cond, data.clean[t], data.noisy[t])
        _assert_same_prediction(got, expected, 1e-9)
        assert merged.groups == separate.groups
        assert separate.groups[-1] == t
    # the merged pass really used the clean frame: without it the prediction differs
    without = model.denoise(KVCache(window=window, sink=sink), data.cond, data.noisy[K - 1])
    assert (without.frames.trans - expected.frames.trans).abs().max() > 1e-4


def test_restored_cache_continues_the_rollout_bit_for_bit():
    """A cache saved mid-rollout (window sliding, padded residues) and loaded into a new one
    gives exactly the predictions and appends of the original from then on."""
    model = make_model()
    data = make_window(frames=K, num_padding=2)
    original = KVCache(window=2, sink=True)
    for t in range(3):
        model.append_clean(original, data.cond, data.clean[t])
    restored = KVCache(window=2, sink=True)
    restored.load_state_dict(original.state_dict())
    for t in range(3, K):
        a = model.denoise(original, data.cond, data.noisy[t])
        b = model.denoise(restored, data.cond, data.noisy[t])
        _assert_same_prediction(a, b, 0.0)
        model.append_clean(original, data.cond, data.clean[t])
        model.append_clean(restored, data.cond, data.clean[t])
    assert restored.groups == original.groups


def test_cache_state_is_only_loaded_into_the_same_window():
    with pytest.raises(ValueError, match="window=2, sink=True"):
        KVCache(window=3, sink=True).load_state_dict(KVCache(window=2, sink=True).state_dict())


@pytest.mark.parametrize(("window", "sink"), [(2, True), (1, False), (None, False)])
def test_static_cache_gives_the_same_predictions_with_fixed_shapes(window, sink):
    """A static cache (for a compiled rollout) attends over every slot with a key mask: the same
    predictions as the default cache, and the same attention shapes every pass once its ring
    buffer is allocated (what lets one compiled graph serve all frames)."""
    model = make_model()
    data = make_window(frames=K + 2, num_padding=2)
    default, static = KVCache(window=window, sink=sink), KVCache(window, sink, static=True)
    model.append_clean(default, data.cond, data.clean[0])
    model.append_clean(static, data.cond, data.clean[0])
    layouts = set()
    for t in range(1, K + 2):
        slot = model._open_slot(static, data.cond, data.noisy[t])
        n, mask = static.visibility(slot)
        layouts.add((n, tuple(mask.shape)))
        expected = model.denoise(default, data.cond, data.noisy[t])
        got = model.denoise(static, data.cond, data.noisy[t])
        _assert_same_prediction(got, expected, 1e-9)
        expected = model.append_and_denoise(default, data.cond, data.clean[t], data.noisy[t])
        got = model.append_and_denoise(static, data.cond, data.clean[t], data.noisy[t])
        _assert_same_prediction(got, expected, 1e-9)
        assert static.groups == default.groups
    if window is not None:  # a full history grows its buffer (a new shape each time)
        assert len(layouts) == 1
        assert layouts.pop()[0] == static.num_slots
