"""What a noisy frame is denoised against, built once from a model's diffusion settings: the
same call serves a training window (B, K, L) and a rollout frame (B, L)."""

import pytest
import torch

from starmd.diffusion import random_rotations
from starmd.diffusion.conditioning import FrameConditioner
from starmd.diffusion.elastic import bonded_pairs, elastic_prior
from starmd.diffusion.settings import DiffusionSection, build_diffuser
from starmd.structure.rigid import Rigid

ELASTIC = DiffusionSection(
    reference_trans_spread=1.5,
    reference_bond_stiffness=50.0,
    reference_contact_stiffness=2.0,
    reference_contact_restoring=0.5,
)


def _protein(g, b=2, l=7):
    """Random previous frames around a chain of C-alpha atoms 3.8 A apart, one chain."""
    ca = torch.cumsum(3.8 * torch.nn.functional.normalize(torch.randn(b, l, 3, generator=g)), 1)
    ca = ca.double()
    frames = Rigid(random_rotations((b, l), g, torch.float64), ca + 0.3 * torch.randn_like(ca))
    index = torch.arange(l).expand(b, l)
    return frames, ca, torch.ones(b, l, dtype=torch.bool), index, torch.zeros_like(index)


def test_without_springs_the_previous_frame_has_no_translation_prior():
    g = torch.Generator().manual_seed(0)
    settings = DiffusionSection()
    conditioner = FrameConditioner(settings, build_diffuser(settings))
    frames, rest, mask, index, chain = _protein(g)
    assert conditioner.previous_frame(frames, rest, mask, index, chain).trans_prior is None


def test_posterior_base_uses_the_sections_spreads_and_elastic_prior():
    g = torch.Generator().manual_seed(1)
    diffuser = build_diffuser(ELASTIC)
    conditioner = FrameConditioner(ELASTIC, diffuser)
    frames, rest, mask, index, chain = _protein(g)
    previous = conditioner.previous_frame(frames, rest, mask, index, chain)
    prior = elastic_prior(
        frames.trans, rest, mask, bonded_pairs(index, chain), 1.5, 50.0, 2.0, 10.0, 0.5
    )
    noisy = Rigid(random_rotations((2, 7), g, torch.float64), frames.trans + torch.randn_like(rest))
    base = conditioner.posterior_base(noisy, previous, 0.3)
    expected = diffuser.posterior_base(noisy, frames, 0.3, 1.5, 0.2, prior)
    torch.testing.assert_close(base.trans, expected.trans)
    torch.testing.assert_close(base.rots, expected.rots)


def test_a_training_window_gets_what_each_rollout_frame_gets():
    """Frame k of a window (B, K, L; protein tensors passed as (B, 1, L)) is conditioned exactly
    as a rollout conditions that frame alone (B, L)."""
    g = torch.Generator().manual_seed(2)
    conditioner = FrameConditioner(ELASTIC, build_diffuser(ELASTIC))
    steps = [_protein(g) for _ in range(3)]
    _, rest, mask, index, chain = steps[0]
    window = Rigid.stack([s[0] for s in steps], dim=1)  # (B, K, L)
    noisy = Rigid(random_rotations((2, 3, 7), g, torch.float64), window.trans + 1.0)
    tau = torch.tensor([[0.2], [0.5], [0.8]], dtype=torch.float64).T.expand(2, 3)
    whole = conditioner.posterior_base(
        noisy,
        conditioner.previous_frame(
            window, rest[:, None], mask[:, None], index[:, None], chain[:, None]
        ),
        tau[..., None],
    )
    for k, step in enumerate(steps):
        alone = conditioner.posterior_base(
            Rigid(noisy.rots[:, k], noisy.trans[:, k]),
            conditioner.previous_frame(step[0], rest, mask, index, chain),
            float(tau[0, k]),
        )
        torch.testing.assert_close(whole.trans[:, k], alone.trans)
        torch.testing.assert_close(whole.rots[:, k], alone.rots)


def test_training_tau_is_uniform_by_default_and_rho_moves_mass_to_low_noise():
    u = torch.linspace(0, 1, 10_001, dtype=torch.float64)
    uniform = DiffusionSection()
    assert torch.allclose(uniform.training_tau(u), uniform.tau_min + (1 - uniform.tau_min) * u)
    low = DiffusionSection(train_tau_rho=3.0)
    tau = low.training_tau(u)
    assert float(tau.min()) == pytest.approx(low.tau_min) and float(tau.max()) == pytest.approx(1)
    # P(tau < t) = ((t - tau_min) / (1 - tau_min))^(1/rho): 0.265 at t = 0.02 (uniform: 0.018)
    expected = ((0.02 - low.tau_min) / (1 - low.tau_min)) ** (1 / 3)
    assert float((tau < 0.02).double().mean()) == pytest.approx(expected, abs=1e-3)
    assert float((uniform.training_tau(u) < 0.02).double().mean()) < 0.02
    with pytest.raises(ValueError, match="train_tau_rho must be > 0"):
        DiffusionSection(train_tau_rho=0.0).training_tau(u)
