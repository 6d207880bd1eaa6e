"""The torsion skip (``DenoiserConfig.torsion_skip``): the von Mises posterior it computes, its
limits, and the model contracts (KV cache, causality, SE(3) invariance of torsions) with it on."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from starmd.errors import StarmdInputError
from starmd.model import KVCache
from starmd.model.denoiser import torsion_posterior
from starmd.modelfile.config import TrainConfig
from starmd.train.losses import torsion_loss
from tests.model.conftest import make_model, make_window
from tests.model.test_causality import _assert_clean_frames_seen_only_later
from tests.model.test_equivariance import _assert_moved_by, _forward_before_and_after_motion

SIGMA = (0.1, math.pi)


def _sigma(tau: float) -> float:
    return SIGMA[0] ** (1 - tau) * SIGMA[1] ** tau


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.6, 1.0])
def test_posterior_is_the_mean_direction_of_the_von_mises_product(tau):
    """Against numerical integration on a fine grid of the product of the context's von Mises
    density (mean mu, concentration kappa) and the noisy torsion's (concentration
    1 / sigma(tau)^2)."""
    g = torch.Generator().manual_seed(0)
    mu = (torch.rand(5, generator=g, dtype=torch.float64) - 0.5) * 2 * math.pi
    kappa = torch.tensor([0.5, 2.0, 8.0, 30.0, 100.0], dtype=torch.float64)
    noisy = (torch.rand(5, generator=g, dtype=torch.float64) - 0.5) * 2 * math.pi
    context = kappa[:, None] * torch.stack([mu.sin(), mu.cos()], -1)
    got = torsion_posterior(
        context.view(1, 1, 5, 1, 2),
        noisy.view(1, 1, 5, 1),
        torch.full((1, 1), tau, dtype=torch.float64),
        *SIGMA,
    ).view(5, 2)
    grid = torch.linspace(-math.pi, math.pi, 200_001, dtype=torch.float64)[:-1]
    log_density = (
        kappa[:, None] * torch.cos(grid - mu[:, None])
        + torch.cos(grid - noisy[:, None]) / _sigma(tau) ** 2
    )
    weight = torch.exp(log_density - log_density.amax(-1, keepdim=True))
    mean = torch.stack([(weight * grid.sin()).sum(-1), (weight * grid.cos()).sum(-1)], -1)
    expected = mean / mean.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_posterior_passes_the_noisy_torsion_at_low_noise_and_the_context_at_high():
    noisy = torch.tensor([[[[2.0]]]], dtype=torch.float64)
    context = 8.0 * torch.tensor([[[[[math.sin(-1.0), math.cos(-1.0)]]]]], dtype=torch.float64)
    low = torsion_posterior(context, noisy, torch.zeros(1, 1, dtype=torch.float64), 1e-3, math.pi)
    high = torsion_posterior(context, noisy, torch.ones(1, 1, dtype=torch.float64), 1e-3, math.pi)
    assert math.atan2(*low.flatten().tolist()) == pytest.approx(2.0, abs=1e-4)
    # at tau = 1 the noisy torsion weighs 1 / pi^2 against the context's 8
    assert math.atan2(*high.flatten().tolist()) == pytest.approx(-1.0, abs=0.05)


def _skip_model():
    return make_model(torsion_skip=True, torsion_sigma_min=SIGMA[0])


def test_skip_model_follows_the_noisy_torsions_at_low_noise_and_plain_model_does_not():
    data = make_window(frames=3)
    noisy = replace(data.noisy, tau=torch.zeros_like(data.noisy.tau))
    torsions = noisy.torsions
    expected = torch.stack([torsions.sin(), torsions.cos()], -1)
    exists = data.cond.torsion_mask[:, None] & data.cond.residue_mask[:, None, :, None]
    with torch.no_grad():
        skip = _skip_model()(data.cond, data.clean, noisy).noisy.torsions
        plain = make_model()(data.cond, data.clean, noisy).noisy.torsions
    exists = exists.expand(skip.shape[:-1])
    gap_skip = (skip - expected).norm(dim=-1)[exists]
    gap_plain = (plain - expected).norm(dim=-1)[exists]
    # the randomized head's output is O(1): against a concentration of 100 it moves the angle
    # by at most ~1 / 100 rad
    assert gap_skip.max() < 0.05
    assert gap_plain.mean() > 0.5


@pytest.mark.parametrize(("window", "sink"), [(None, False), (2, True)])
def test_skip_model_kv_cache_rollout_matches_full_forward(window, sink):
    model = _skip_model()
    data = make_window(frames=4, num_padding=2)
    with torch.no_grad():
        full = model(data.cond, data.clean, data.noisy, window=window, sink=sink)
    separate, merged = KVCache(window=window, sink=sink), KVCache(window=window, sink=sink)
    for t in range(4):
        got = model.denoise(separate, data.cond, data.noisy[t])
        torch.testing.assert_close(got.torsions, full.noisy[t].torsions, atol=1e-9, rtol=0)
        torch.testing.assert_close(got.frames.trans, full.noisy[t].frames.trans, atol=1e-9, rtol=0)
        if t:
            one_pass = model.append_and_denoise(merged, data.cond, data.clean[t - 1], data.noisy[t])
            torch.testing.assert_close(one_pass.torsions, got.torsions, atol=1e-9, rtol=0)
        model.append_clean(separate, data.cond, data.clean[t])


def test_skip_model_is_causal():
    _assert_clean_frames_seen_only_later(_skip_model(), make_window(frames=4))


def test_skip_model_torsions_are_invariant_under_a_global_motion():
    model = _skip_model()
    window = make_window(num_padding=2)
    out, moved, motion = _forward_before_and_after_motion(model, window, 7)
    _assert_moved_by(moved.noisy, out.noisy, motion, 1e-6)
    _assert_moved_by(moved.clean, out.clean, motion, 1e-6)


def test_train_config_sets_the_noise_range_from_the_diffusion_section():
    config = TrainConfig.from_yaml(
        None, ["model.overrides={torsion_skip: true}", "diffusion.torsion_sigma_min=0.1"]
    )
    network = config.denoiser()
    assert network.torsion_skip
    assert (network.torsion_sigma_min, network.torsion_sigma_max) == (0.1, math.pi)
    with pytest.raises(StarmdInputError, match="diffusion section"):
        TrainConfig.from_yaml(None, ["model.overrides={torsion_sigma_min: 0.2}"])
    with pytest.raises(StarmdInputError, match="0 < min < max"):
        TrainConfig.from_yaml(None, ["diffusion.torsion_sigma_min=4.0"])


def test_angle_norm_term_can_be_left_out():
    """With the skip the head's output length is a concentration: the loss must not pull it
    to 1 (``norm_weight=0``), while the default keeps AlphaFold's term."""
    angles = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64).view(1, 1, 1, 7)
    unit = torch.stack([angles.sin(), angles.cos()], -1)
    long = 5.0 * unit
    aatype = torch.zeros(1, 1, dtype=torch.long)
    mask = torch.ones(1, 1, 1, 7, dtype=torch.bool)
    assert torsion_loss(unit, long, angles, aatype, mask, norm_weight=0.0) == pytest.approx(0.0)
    assert torsion_loss(unit, long, angles, aatype, mask) == pytest.approx(0.02 * 4.0)
