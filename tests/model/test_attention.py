"""Attention layouts, the FlexAttention path, rotary encodings and the folded point term."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from starmd.model import DenoiserConfig, training_attention_mask, training_group_mask
from starmd.model.joint_attention import JointSpatioTemporalAttention, MaskedContext, rotary_angles
from tests.model.conftest import chain_frames, make_model, make_window


def test_group_mask_is_the_papers_training_layout():
    c, n = 1, 1  # readability: rows/cols are [c0 c1 c2 n0 n1 n2]
    expected = torch.tensor(
        [
            [c, 0, 0, 0, 0, 0],
            [c, c, 0, 0, 0, 0],
            [c, c, c, 0, 0, 0],
            [0, 0, 0, n, 0, 0],
            [c, 0, 0, 0, n, 0],
            [c, c, 0, 0, 0, n],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(training_group_mask(3), expected)


def test_group_mask_window_and_sink():
    mask = training_group_mask(5, window=1, sink=True)
    clean_to_clean, noisy_to_clean = mask[:5, :5], mask[5:, :5]
    # n_4 sees c_3 (window) and c_0 (sink) only; c_4 sees c_3, itself and c_0.
    assert noisy_to_clean[4].nonzero().flatten().tolist() == [0, 3]
    assert clean_to_clean[4].nonzero().flatten().tolist() == [0, 3, 4]
    no_sink = training_group_mask(5, window=1)
    assert no_sink[5 + 4, :5].nonzero().flatten().tolist() == [3]


def test_dense_mask_masks_padding_keys_only():
    residue_mask = torch.tensor([[True, True, False], [True, True, True]])
    mask = training_attention_mask(2, residue_mask)
    assert mask.shape == (2, 1, 12, 12)
    assert not mask[0, 0, :, 2::3].any()  # residue 2 of element 0, every group
    assert mask[1, 0, 3, 2]  # element 1: c_1 token sees c_0's residue 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_attention_block_mask_matches_dense_mask():
    model = make_model()
    window = make_window(frames=3, num_padding=2)
    with torch.no_grad():
        dense = model(window.cond, window.clean, window.noisy, window=1, sink=True)
        flex = model(window.cond, window.clean, window.noisy, window=1, sink=True, attention="flex")
    torch.testing.assert_close(flex.noisy.frames.trans, dense.noisy.frames.trans, atol=1e-9, rtol=0)
    torch.testing.assert_close(flex.noisy.torsions, dense.noisy.torsions, atol=1e-9, rtol=0)


def test_predictions_depend_on_time_and_residue_index_only_through_differences():
    model = make_model()
    window = make_window(frames=3)
    shifted_cond = replace(window.cond, residue_index=window.cond.residue_index + 37)
    shift = lambda t: replace(t, time_ps=t.time_ps + 123456.0)  # noqa: E731
    stretch = lambda t: replace(t, time_ps=t.time_ps * 3.0)  # noqa: E731
    with torch.no_grad():
        out = model(window.cond, window.clean, window.noisy)
        shifted = model(shifted_cond, shift(window.clean), shift(window.noisy))
        stretched = model(window.cond, stretch(window.clean), stretch(window.noisy))
    torch.testing.assert_close(
        shifted.noisy.frames.trans, out.noisy.frames.trans, atol=1e-8, rtol=0
    )
    torch.testing.assert_close(shifted.noisy.torsions, out.noisy.torsions, atol=1e-8, rtol=0)
    # Different time differences do change the prediction of later frames.
    assert (stretched.noisy.frames.trans[:, 1:] - out.noisy.frames.trans[:, 1:]).abs().max() > 1e-4


def test_rotary_time_periods_span_the_configured_range():
    config = DenoiserConfig.tiny(rope_residue_dims=0, rope_time_dims=8)
    times_ps = torch.tensor([[0.0, 10.0, 1e6]])  # 0, 0.01 ns and 1 us
    cos, _ = rotary_angles(config, torch.zeros(1, 3, dtype=torch.long), times_ps)
    # The shortest period (0.01 ns) completes one full turn at t = 10 ps ...
    assert cos[0, 0, 1, 0] == pytest.approx(1.0, abs=1e-9)
    # ... and the longest (1000 ns) one full turn at 1 us.
    assert cos[0, 0, 2, -1] == pytest.approx(1.0, abs=1e-9)
    assert cos[0, 0, 1, -1] == pytest.approx(math.cos(2 * math.pi * 0.01 / 1000), abs=1e-12)


def test_folded_point_term_equals_explicit_invariant_point_attention():
    """SDPA over augmented q/k computes softmax(w_L q.k/sqrt(c) - gamma |T_i q - T_j k|^2 ...)
    with value points mapped back to the query frame, written out here term by term."""
    torch.manual_seed(0)
    config = DenoiserConfig.tiny()
    layer = JointSpatioTemporalAttention(config).double()
    b, t = 2, 7
    h, c, pq, pv = config.n_heads, config.c_head, config.n_qk_points, config.n_v_points
    g = torch.Generator().manual_seed(1)
    s = torch.randn(b, t, config.c_s, generator=g, dtype=torch.float64)
    frames = chain_frames((b,), t, g, torch.float64).scale_translation(0.1)
    rope = rotary_angles(
        config, torch.arange(t).expand(b, t), torch.linspace(0, 500, t).expand(b, t)
    )
    mask = torch.rand(b, 1, t, t, generator=g) < 0.7
    mask[..., torch.arange(t), torch.arange(t)] = True

    with torch.no_grad():
        out = layer(s, frames, rope, MaskedContext(mask), layer=0)

        from starmd.model.joint_attention import apply_rotary

        q, k, v = layer.linear_qkv(s).view(b, t, 3, h, c).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        pts = frames.unsqueeze(-1).apply(layer.linear_qk_points(s).view(b, t, 2 * h * pq, 3))
        q_pts, k_pts = pts.view(b, t, 2, h, pq, 3).permute(2, 0, 3, 1, 4, 5)  # (B, H, T, P, 3)
        v_pts = frames.unsqueeze(-1).apply(layer.linear_v_points(s).view(b, t, h * pv, 3))
        v_pts = v_pts.view(b, t, h, pv, 3).transpose(1, 2)
        w_l, w_c = math.sqrt(0.5), math.sqrt(2 / (9 * pq))
        gamma = F.softplus(layer.head_weights)[None, :, None, None]
        sq = ((q_pts[:, :, :, None] - k_pts[:, :, None, :]) ** 2).sum(dim=(-1, -2))
        logits = w_l * (q @ k.transpose(-1, -2) / math.sqrt(c) - gamma * w_c / 2 * sq)
        attn = logits.masked_fill(~mask, -torch.inf).softmax(-1)
        o = (attn @ v).transpose(1, 2).reshape(b, t, h * c)
        o_pts = torch.einsum("bhij,bhjpx->bihpx", attn, v_pts).reshape(b, t, h * pv, 3)
        o_pts = frames.unsqueeze(-1).invert_apply(o_pts)
        o_norm = o_pts.square().sum(-1).add(1e-8).sqrt()
        expected = layer.linear_out(torch.cat([o, o_pts.reshape(b, t, -1), o_norm], dim=-1))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
