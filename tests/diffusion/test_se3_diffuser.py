import math

import pytest
import torch

from starmd.diffusion.sampler import reverse_schedule, sample
from starmd.diffusion.se3_diffuser import SE3TorusDiffuser
from starmd.diffusion.so3 import random_rotations, rotation_angle
from starmd.structure.geometry import wrap_angle
from starmd.structure.rigid import Rigid, quat_to_rotmat

B, T, L, K = 2, 3, 40, 7


@pytest.fixture(scope="module")
def diffuser():
    return SE3TorusDiffuser()


def _clean(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = Rigid(
        random_rotations((B, T, L), g, dtype=dtype),
        8 * torch.randn(B, T, L, 3, generator=g, dtype=dtype),
    )
    torsions = torch.rand(B, T, L, K, generator=g, dtype=dtype) * 2 * math.pi - math.pi
    mask = torch.rand(B, T, L, K, generator=g) > 0.3
    return frames, torsions, mask


def _assert_same(a, b):
    fa, ta = a
    fb, tb = b
    assert torch.equal(fa.rots, fb.rots) and torch.equal(fa.trans, fb.trans)
    assert torch.equal(ta, tb)


def test_forward_marginal_with_per_frame_times_matches_the_components(diffuser):
    frames, torsions, mask = _clean()
    tau = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).reshape(1, T, 1).expand(B, T, 1)
    state = diffuser.forward_marginal(frames, torsions, mask, tau, torch.Generator().manual_seed(1))
    assert state.frames.shape == (B, T, L) and state.torsions.shape == (B, T, L, K)
    assert state.tau.shape == (B, T, L)
    torch.testing.assert_close(state.tau[0, :, 0], tau[0, :, 0])
    torch.testing.assert_close(
        state.trans_score, diffuser.r3.score(state.frames.trans, frames.trans, tau)
    )
    torch.testing.assert_close(
        state.rot_score, diffuser.so3.score(state.frames.rots, frames.rots, tau)
    )
    torch.testing.assert_close(
        state.torsion_score, diffuser.torus.score(state.torsions, torsions, tau, mask)
    )
    torch.testing.assert_close(
        state.trans_score, -state.trans_noise / diffuser.r3.marginal_params(tau[..., None])[1]
    )
    for scaling, component in [
        (state.trans_score_scaling, diffuser.r3),
        (state.rot_score_scaling, diffuser.so3),
        (state.torsion_score_scaling, diffuser.torus),
    ]:
        assert scaling.shape == (B, T, L)
        torch.testing.assert_close(scaling, component.score_scaling(tau).expand(B, T, L))
    assert torch.equal(state.torsions[~mask], torsions[~mask])
    # noise grows with the frame's diffusion time
    angle = rotation_angle(frames.rots.transpose(-1, -2) @ state.frames.rots)
    assert angle[:, 0].mean() < angle[:, 1].mean() < angle[:, 2].mean()


def test_same_seed_gives_identical_samples_and_other_seeds_differ(diffuser):
    frames, torsions, mask = _clean()

    def forward(seed):
        s = diffuser.forward_marginal(
            frames, torsions, mask, 0.4, torch.Generator().manual_seed(seed)
        )
        return s.frames, s.torsions

    _assert_same(forward(7), forward(7))
    assert not torch.equal(forward(7)[1], forward(8)[1])

    def prior(seed):
        return diffuser.sample_prior((B, T, L), mask, torch.Generator().manual_seed(seed))

    _assert_same(prior(3), prior(3))
    assert not torch.equal(prior(3)[0].rots, prior(4)[0].rots)

    def run(seed):
        def denoise(f, x, tau):
            return frames, torsions

        g = torch.Generator().manual_seed(seed)
        return sample(diffuser, denoise, (B, T, L), mask, 5, g, dtype=torch.float64)

    _assert_same(run(5), run(5))


@pytest.mark.parametrize("ode", [False, True])
def test_sampling_with_an_oracle_denoiser_lands_near_the_clean_state(diffuser, ode):
    frames, torsions, mask = _clean()
    seen = []

    def oracle(f, x, tau):
        seen.append((f, x, tau))
        return frames, torsions

    g = torch.Generator().manual_seed(9)
    start = diffuser.sample_prior((B, T, L), mask, g, dtype=torch.float64)
    out = sample(diffuser, oracle, start, mask, 100, g, ode=ode)
    assert len(seen) == 100 and seen[-1][2].item() == pytest.approx(1e-3)
    assert seen[0][0] is start[0]
    # the state handed to the last evaluation (tau_min) is what the reverse process produced
    last_frames, last_torsions, _ = seen[-1]
    trans_rms = (last_frames.trans - frames.trans).pow(2).mean().sqrt()
    prior_rms = (start[0].trans - frames.trans).pow(2).mean().sqrt()
    # limited by the last Euler-Maruyama noise, sqrt(beta dtau) / coordinate_scale ~ 0.55 A
    assert prior_rms > 8 and trans_rms < 1.0
    angle = rotation_angle(frames.rots.transpose(-1, -2) @ last_frames.rots)
    assert rotation_angle(frames.rots.transpose(-1, -2) @ start[0].rots).mean() > 1.5
    assert angle.mean() < 0.3
    torsion_err = wrap_angle(last_torsions - torsions)[mask].abs()
    assert torsion_err.mean() < 0.05
    assert torch.all(last_torsions[~mask] == 0)  # masked prior torsions stay put
    _assert_same(out, (frames, torsions))


def test_ode_sampling_is_deterministic_for_a_fixed_start(diffuser):
    frames, torsions, mask = _clean()

    def denoise(f, x, tau):
        # a non-oracle but deterministic predictor: half-way between the state and the data
        return Rigid(frames.rots, 0.5 * (f.trans + frames.trans)), wrap_angle(torsions + 0.1)

    start = diffuser.sample_prior((B, T, L), mask, torch.Generator().manual_seed(0), torch.float64)
    a = sample(diffuser, denoise, start, mask, 20, torch.Generator().manual_seed(1), ode=True)
    b = sample(diffuser, denoise, start, mask, 20, torch.Generator().manual_seed(2), ode=True)
    _assert_same(a, b)
    c = sample(diffuser, denoise, start, mask, 20, torch.Generator().manual_seed(2), ode=False)
    assert not torch.equal(a[0].trans, c[0].trans)


def test_float32_round_trip(diffuser):
    frames, torsions, mask = _clean(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    state = diffuser.forward_marginal(frames, torsions, mask, torch.rand(B, T, 1, generator=g), g)
    for value in [
        state.frames.rots,
        state.frames.trans,
        state.torsions,
        state.rot_score,
        state.trans_score,
        state.torsion_score,
        state.rot_score_scaling,
    ]:
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    tau = torch.full((B, T, 1), 0.5)
    new_frames, new_torsions = diffuser.reverse_step(
        state.frames, state.torsions, frames, torsions, mask, tau, torch.full((B, T, 1), 0.01), g
    )
    assert new_frames.dtype == torch.float32 and new_torsions.dtype == torch.float32
    det = torch.linalg.det(new_frames.rots)
    torch.testing.assert_close(det, torch.ones_like(det), atol=1e-5, rtol=0)


def test_reverse_schedule_decreases_from_one_to_tau_min():
    taus = reverse_schedule(50, tau_min=1e-3)
    assert taus.shape == (50,) and taus[0] == 1.0 and taus[-1].item() == pytest.approx(1e-3)
    assert torch.all(taus[1:] < taus[:-1])
    assert reverse_schedule(1).tolist() == [1.0]  # one step: the distilled student's
    # consistency-style sampling ends one time short of tau_min; other samplers end at it
    from starmd.diffusion.sampler import sampler_schedule

    cm, ddim = sampler_schedule("cm", 2, 1e-3, 3.0), sampler_schedule("ddim", 2, 1e-3, 3.0)
    torch.testing.assert_close(cm, reverse_schedule(3, 1e-3, rho=3.0)[:2])
    assert cm[-1] > 0.1 and ddim[-1].item() == pytest.approx(1e-3)
    with pytest.raises(ValueError):
        reverse_schedule(0)
    with pytest.raises(ValueError):
        reverse_schedule(10, tau_min=0.0)


def test_posterior_base_moves_from_the_noisy_frame_to_the_prior_with_noise():
    from starmd.diffusion import SE3TorusDiffuser, random_rotations
    from starmd.structure.rigid import Rigid

    g = torch.Generator().manual_seed(0)
    diffuser = SE3TorusDiffuser()
    shape = (3, 5)
    noisy = Rigid(
        random_rotations(shape, g, torch.float64),
        10 * torch.randn(*shape, 3, generator=g, dtype=torch.float64),
    )
    prior = Rigid(
        random_rotations(shape, g, torch.float64),
        10 * torch.randn(*shape, 3, generator=g, dtype=torch.float64),
    )
    low = diffuser.posterior_base(noisy, prior, 1e-4)
    torch.testing.assert_close(low.trans, noisy.trans, atol=0.05, rtol=0)
    high = diffuser.posterior_base(noisy, prior, 1.0)
    torch.testing.assert_close(high.trans, prior.trans, atol=0.05, rtol=0)
    # rotations: IGSO3 noise never falls below sigma_min, so the base stays between the two
    angle_to_prior = torch.linalg.matrix_norm(high.rots - prior.rots)
    assert angle_to_prior.max() < 0.1
    # a global rotation about the origin moves the base by the same rotation (the VP process
    # contracts towards the origin, the centre of the initial structure, so translations of the
    # coordinate system are removed by centring, not by equivariance)
    motion = Rigid(random_rotations((), g, torch.float64), torch.zeros(3, dtype=torch.float64))
    mid = diffuser.posterior_base(noisy, prior, 0.3)
    moved = diffuser.posterior_base(motion.compose(noisy), motion.compose(prior), 0.3)
    expected = motion.compose(mid)
    torch.testing.assert_close(moved.rots, expected.rots)
    torch.testing.assert_close(moved.trans, expected.trans)


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_posterior_step_preserves_the_forward_marginal(eta):
    """x_tau ~ q(.|x0), one posterior step with the true x0 -> x_tau' ~ q(.|x0) (exact for R3;
    for the torus and SO(3) at small sigma where the Gaussian picture holds)."""
    from starmd.diffusion import R3Diffuser, SO3Diffuser, TorusDiffuser
    from starmd.diffusion.so3 import log_map

    g = torch.Generator().manual_seed(1)
    n = 20000
    r3 = R3Diffuser()
    x0 = torch.full((n, 3), 3.0, dtype=torch.float64)
    tau, tau_next = 0.6, 0.2
    x_tau, _ = r3.forward_marginal(x0, tau, g)
    x_next = r3.posterior_step(x_tau, x0, tau, tau_next, g, eta)
    alpha, std = r3.marginal_params(tau_next)
    torch.testing.assert_close(x_next.mean(0), alpha * x0[0], atol=0.1, rtol=0)
    torch.testing.assert_close(
        x_next.std(0), (std / r3.coordinate_scale).expand(3), atol=0.15, rtol=0
    )

    torus = TorusDiffuser()
    a0 = torch.full((n, 1), 0.5, dtype=torch.float64)
    t, t_next = 0.3, 0.1
    a_tau, _ = torus.forward_marginal(a0, t, g)
    a_next = torus.posterior_step(a_tau, a0, t, t_next, g, eta)
    sigma_next = torus.sigma(torch.tensor(t_next, dtype=torch.float64))
    assert sigma_next < 0.5  # Gaussian regime
    torch.testing.assert_close(a_next.std(), sigma_next, atol=0.02, rtol=0.05)
    torch.testing.assert_close(
        a_next.mean(), torch.tensor(0.5, dtype=torch.float64), atol=0.02, rtol=0
    )

    so3 = SO3Diffuser(sigma_min=0.02, sigma_max=0.3)
    r0 = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    r_tau, _ = so3.forward_marginal(r0, 0.8, g)
    r_next = so3.posterior_step(r_tau, r0, 0.8, 0.3, g, eta)
    v = log_map(r_next)
    expected = so3.sigma(torch.tensor(0.3, dtype=torch.float64))
    torch.testing.assert_close(v.std(0), expected.expand(3), atol=0.01, rtol=0.05)


def test_reverse_schedule_rho_spends_steps_at_low_noise():
    linear, cubic = reverse_schedule(11, 1e-3), reverse_schedule(11, 1e-3, rho=3.0)
    for taus in (linear, cubic):
        assert taus[0] == 1.0 and abs(float(taus[-1]) - 1e-3) < 1e-12
        assert bool((taus[1:] < taus[:-1]).all())
    assert int((cubic < 0.1).sum()) > int((linear < 0.1).sum())
    with pytest.raises(ValueError):
        reverse_schedule(10, rho=0.0)


def test_corrupt_draws_the_same_noisy_state_as_forward_marginal(diffuser):
    """The rollout's score-free corruption equals forward_marginal's frames and torsions."""
    g = torch.Generator().manual_seed(3)
    frames = Rigid(
        quat_to_rotmat(torch.randn(2, 6, 4, generator=g, dtype=torch.float64)),
        torch.randn(2, 6, 3, generator=g, dtype=torch.float64),
    )
    torsions = torch.rand(2, 6, 7, generator=g, dtype=torch.float64) * 6 - 3
    mask = torch.rand(2, 6, 7, generator=g) < 0.7
    full = diffuser.forward_marginal(frames, torsions, mask, 0.3, torch.Generator().manual_seed(11))
    noisy_frames, noisy_torsions = diffuser.corrupt(
        frames, torsions, mask, 0.3, torch.Generator().manual_seed(11)
    )
    assert torch.equal(noisy_frames.trans, full.frames.trans)
    assert torch.equal(noisy_frames.rots, full.frames.rots)
    assert torch.equal(noisy_torsions, full.torsions)
    assert not torch.equal(noisy_frames.trans, frames.trans)
