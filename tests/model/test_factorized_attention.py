"""Factorized attention (``attention_layout="factorized"``): space, then time.

In every block the first attention layer is spatial (a token sees only the residues of its own
frame) and the second temporal (a token sees only its own residue, in its own frame and the
earlier frames the causal layout lets it see). The tests check the layers' visibility against a
direct construction and by perturbing their inputs, then that the network keeps causality, its
KV-cache equivalence and its SE(3) behaviour with it, and that the default stays the joint
attention.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from starmd.model import DenoiserConfig, KVCache, StarDenoiser
from starmd.model.joint_attention import MaskedContext, factorized_contexts, rotary_angles
from starmd.model.masks import training_attention_mask
from starmd.modelfile import bundled_model_path, load_model, save_model
from starmd.modelfile.config import TrainConfig
from starmd.structure.rigid import Rigid
from tests.model.conftest import make_model, make_window
from tests.model.test_causality import _assert_clean_frames_seen_only_later
from tests.model.test_equivariance import _assert_moved_by, _forward_before_and_after_motion
from tests.model.test_kv_cache import _assert_same_prediction

L, K = 8, 3


def _layer_contexts(window):
    mask = training_attention_mask(K, window.cond.residue_mask)
    spatial, temporal = factorized_contexts(MaskedContext(mask), window.cond.residue_mask).contexts
    return mask, spatial.mask, temporal.mask


def test_layer_masks_are_the_causal_mask_restricted_to_own_frame_then_own_residue():
    window = make_window(length=L, frames=K, num_padding=2)
    mask, spatial, temporal = _layer_contexts(window)
    n = 2 * K * L
    real = window.cond.residue_mask
    for b in range(2):
        for q in range(n):
            for k in range(n):
                allowed = bool(mask[b, 0, q, k])
                same_frame, same_residue = q // L == k // L, q % L == k % L
                assert bool(spatial[b, 0, q, k]) == (allowed and same_frame)
                if real[b, q % L]:  # padding queries keep keys (their output is dropped)
                    assert bool(temporal[b, 0, q, k]) == (allowed and same_residue)
    # each real temporal query sees its own residue in every frame the causal mask allows
    visible_frames = mask[:, 0].reshape(2, n, 2 * K, L).any(-1).sum(-1)
    seen = temporal[:, 0].sum(-1)
    torch.testing.assert_close(seen[real.repeat(1, 2 * K)], visible_frames[real.repeat(1, 2 * K)])


def _layer_outputs(model, window, s, layer: int) -> torch.Tensor:
    """Block 0's attention layer ``layer`` (0 spatial, 1 temporal) on single features
    ``s (B, 2 K L, c_s)`` of the window's clean + noisy tokens, through the trunk's contexts."""
    attention = model.blocks[0].attention[layer]
    frames = Rigid.cat([window.clean.frames, window.noisy.frames], dim=1)
    frames = Rigid(frames.rots.flatten(1, 2), frames.trans.flatten(1, 2) * 0.1)
    time_ps = torch.cat([window.clean.time_ps, window.noisy.time_ps], dim=1)
    rope = rotary_angles(
        model.config,
        window.cond.residue_index.repeat(1, 2 * K),
        time_ps.repeat_interleave(L, dim=1),
    )
    contexts = factorized_contexts(
        MaskedContext(training_attention_mask(K, window.cond.residue_mask)),
        window.cond.residue_mask,
    )
    with torch.no_grad():
        return attention(s, frames, rope, contexts, layer).view(2, 2 * K, L, -1)


def _token(group: int, residue: int) -> int:
    return group * L + residue


def test_spatial_layer_ignores_other_frames_and_temporal_layer_other_residues():
    """Perturb one token's input and see which outputs move: the spatial layer moves its own
    frame only, the temporal layer its own residue only (and only in frames that may see it)."""
    model = make_model(attention_layout="factorized")
    window = make_window(length=L, frames=K)
    s = torch.randn(2, 2 * K * L, model.config.c_s, generator=torch.Generator().manual_seed(1))
    s = s.to(torch.float64)
    source_group, source_residue = 0, 2  # clean frame 0, seen by every later frame
    changed = s.clone()
    changed[:, _token(source_group, source_residue)] += 1.0
    for layer in (0, 1):
        moved = (
            (
                _layer_outputs(model, window, changed, layer)
                - _layer_outputs(model, window, s, layer)
            )
            .abs()
            .amax(dim=(0, 3))
        )  # (2 K groups, L residues)
        touched = moved > 1e-6
        if layer == 0:  # spatial: every residue of clean frame 0, nothing else
            expected = torch.zeros_like(touched)
            expected[source_group] = True
        else:  # temporal: residue 2 of every clean and noisy frame after it, nothing else
            expected = torch.zeros_like(touched)
            expected[:, source_residue] = True
            expected[K + source_group, source_residue] = False  # n_0 sees no clean frame
        assert torch.equal(touched, expected), f"layer {layer}:\n{touched.int()}"


def test_factorized_layout_changes_predictions_with_the_same_weights():
    joint = make_model()
    factorized = make_model(attention_layout="factorized")
    factorized.load_state_dict(joint.state_dict())
    window = make_window(length=L, frames=K)
    with torch.no_grad():
        a = joint(window.cond, window.clean, window.noisy)
        b = factorized(window.cond, window.clean, window.noisy)
    assert (a.noisy.frames.trans - b.noisy.frames.trans).abs().max() > 1e-4


def test_factorized_attention_is_causal():
    model = make_model(attention_layout="factorized")
    _assert_clean_frames_seen_only_later(model, make_window(length=L, frames=K, num_padding=2))


@pytest.mark.parametrize(("window", "sink"), [(None, False), (1, True)])
def test_factorized_rollout_with_cache_matches_full_forward(window, sink):
    model = make_model(attention_layout="factorized")
    data = make_window(length=L, frames=K, num_padding=2)
    with torch.no_grad():
        full = model(data.cond, data.clean, data.noisy, window=window, sink=sink)
    cache = KVCache(window=window, sink=sink)
    merged = KVCache(window=window, sink=sink)
    for t in range(K):
        _assert_same_prediction(model.denoise(cache, data.cond, data.noisy[t]), full.noisy[t], 1e-9)
        if t > 0:  # clean frame t - 1 appended in the same pass as denoising frame t
            one_pass = model.append_and_denoise(merged, data.cond, data.clean[t - 1], data.noisy[t])
            _assert_same_prediction(one_pass, full.noisy[t], 1e-9)
        _assert_same_prediction(
            model.append_clean(cache, data.cond, data.clean[t]), full.clean[t], 1e-9
        )
    assert merged.num_appended == K - 1


def test_factorized_attention_is_equivariant():
    model = make_model(attention_layout="factorized")
    window = make_window(length=L, frames=K, num_padding=2)
    out, moved, motion = _forward_before_and_after_motion(model, window, 5)
    _assert_moved_by(moved.noisy, out.noisy, motion, 1e-6)
    _assert_moved_by(moved.clean, out.clean, motion, 1e-6)


def test_padding_gives_finite_gradients_in_the_temporal_layer():
    model = make_model(attention_layout="factorized")
    window = make_window(length=L, frames=K, num_padding=2)
    out = model(window.cond, window.clean, window.noisy)
    out.noisy.frames.trans.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="attention_layout"):
        DenoiserConfig.tiny(attention_layout="space-time")


def test_bundled_model_is_joint_and_unchanged_by_the_option(tmp_path):
    """An existing model file (no ``attention_layout`` saved) loads as the joint layout, and
    naming ``joint`` explicitly gives the same network bit for bit; the factorized layout is
    saved in and read back from a model file."""
    loaded = load_model(bundled_model_path())
    assert "attention_layout" not in loaded.config.model.overrides
    assert loaded.model.config.attention_layout == "joint"
    explicit = StarDenoiser(replace(loaded.model.config, attention_layout="joint")).eval()
    explicit.load_state_dict(loaded.model.state_dict())
    window = make_window(length=L, frames=K, dtype=torch.float32, num_padding=2)
    with torch.no_grad():
        a = loaded.model(window.cond, window.clean, window.noisy)
        b = explicit(window.cond, window.clean, window.noisy)
    assert torch.equal(a.noisy.frames.trans, b.noisy.frames.trans)
    assert torch.equal(a.noisy.torsions, b.noisy.torsions)

    config = TrainConfig.from_dict(loaded.config.to_dict(), "test")
    config.apply_override("model.overrides.attention_layout=factorized")
    factorized = StarDenoiser(config.model.denoiser())
    factorized.load_state_dict(loaded.model.state_dict())  # same parameters
    path = save_model(factorized, config, tmp_path / "factorized.safetensors")
    reloaded = load_model(path)
    assert reloaded.model.config.attention_layout == "factorized"
    with torch.no_grad():
        c = reloaded.model(window.cond, window.clean, window.noisy)
    assert (c.noisy.frames.trans - a.noisy.frames.trans).abs().max() > 1e-4
