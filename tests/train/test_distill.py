"""Few-step distillation: its path states, its loss, the CLI run that exports a student."""

import math
import subprocess
import sys

import pytest
import torch

from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.diffusion import SE3TorusDiffuser, log_map, random_rotations
from starmd.errors import StarmdInputError
from starmd.modelfile import load_model
from starmd.modelfile.config import TrainConfig
from starmd.structure.geometry import junction_dihedrals
from starmd.structure.rigid import Rigid
from starmd.train.distill import (
    chord_distance,
    dihedral_regression_term,
    energy_score_term,
    rms_distance,
)
from starmd.train.module import step_generator
from starmd.train.run import build_module
from tests.train.conftest import TINY


def _state(generator, shape=(2, 3, 8)):
    frames = Rigid(
        random_rotations(shape, generator), 8 * torch.randn(*shape, 3, generator=generator)
    )
    torsions = torch.rand(*shape, 7, generator=generator) * 6 - 3
    return frames, torsions


def test_path_runs_from_the_prior_draw_to_the_target_and_its_state_is_exact():
    """The student's inputs: the DDIM path from the draw z (tau = 1) towards the teacher's
    sample; at tau = 1 it is z itself, at tau_min it is (nearly) the target, and the state's
    scores are those of the forward kernel from the target (as forward_marginal's)."""
    g = torch.Generator().manual_seed(0)
    diffuser = SE3TorusDiffuser()
    z_frames, z_torsions = _state(g)
    target_frames, target_torsions = _state(g)
    mask = torch.rand(2, 1, 8, 7, generator=g) > 0.3
    tau = torch.tensor([1.0, 0.3, 0.002])[None, :, None].expand(2, 3, 1)
    frames, torsions = diffuser.posterior_step(
        z_frames, z_torsions, target_frames, target_torsions, mask, 1.0, tau, g, eta=0.0
    )
    torch.testing.assert_close(frames.trans[:, 0], z_frames.trans[:, 0])
    torch.testing.assert_close(frames.rots[:, 0], z_frames.rots[:, 0], atol=1e-5, rtol=0)
    # translations: y' = alpha' y0 + (s' / s) (y - alpha y0), the DDIM step in closed form
    alpha, std = diffuser.r3.marginal_params(torch.tensor([1.0, 0.3, 0.002], dtype=torch.float64))
    for i in (1, 2):
        expected = alpha[i] * target_frames.trans[:, i] + std[i] / std[0] * (
            z_frames.trans[:, i] - alpha[0] * target_frames.trans[:, i]
        )
        torch.testing.assert_close(frames.trans[:, i], expected.float(), atol=1e-4, rtol=1e-4)
    assert (frames.trans[:, 2] - target_frames.trans[:, 2]).abs().max() < 0.5  # z: ~10 A away
    # rotations: the body-frame vector from the target shrinks by sigma' / sigma
    sigma = diffuser.so3.sigma(torch.tensor([1.0, 0.3, 0.002]))
    v_z = log_map(target_frames.rots.transpose(-1, -2) @ z_frames.rots)
    v = log_map(target_frames.rots.transpose(-1, -2) @ frames.rots)
    for i in (1, 2):
        torch.testing.assert_close(v[:, i], v_z[:, i] * sigma[i] / sigma[0], atol=1e-4, rtol=1e-4)
    # an exactly known corruption: the state recovers forward_marginal's noises and scores
    noisy = diffuser.forward_marginal(target_frames, target_torsions, mask, 0.2, g)
    state = diffuser.noisy_state(
        noisy.frames, noisy.torsions, target_frames, target_torsions, mask, 0.2
    )
    for name in ("trans_noise", "rot_noise", "trans_score", "rot_score", "torsion_score"):
        torch.testing.assert_close(getattr(state, name), getattr(noisy, name), msg=name)
    keep = mask.expand(noisy.torsions.shape)
    small = keep & (noisy.torsion_noise.abs() * diffuser.torus.sigma(torch.tensor(0.2)) < 3.0)
    torch.testing.assert_close(
        state.torsion_noise[small], noisy.torsion_noise[small], atol=1e-4, rtol=1e-4
    )


def test_distillation_loss_can_be_driven_down_and_the_teacher_stays_frozen(
    tiny_dataset, tiny_model_path
):
    torch.manual_seed(0)
    config = TrainConfig.from_yaml(None, TINY + [f"distill.teacher={tiny_model_path}"])
    module = build_module(config)
    teacher = {n: p.clone() for n, p in module.teacher.state_dict().items()}
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert not any(n.startswith("_teacher") for n in module.state_dict())  # not checkpointed
    spec = WindowSpec(window=2, dt_ps=(100.0,), crop=10)
    data = TrajectoryWindowDataset(tiny_dataset, "train", spec, samples_per_epoch=2)
    batch = collate_windows([data[0], data[1]])
    optimizer = torch.optim.Adam(module.model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        terms = module.compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu")))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        history.append(terms["loss"].item())
    assert history[-1] < history[0] / 3, history
    for name, value in module.teacher.state_dict().items():
        assert torch.equal(value, teacher[name]), name


def test_energy_score_is_least_for_the_observations_own_spread_and_rewards_no_collapse():
    """Monte Carlo of the estimator (Gneiting & Raftery's energy score, beta = 1, on C-alpha
    RMS distances): observations from N(0, 1) per coordinate; a model distribution N(0, s^2)
    scores best at s = 1, worse when collapsed onto the mean (s = 0) or twice as wide; the
    estimate itself is ~ d(x2, y) - d(x1, x2) / 2 by hand."""
    g = torch.Generator().manual_seed(0)
    n, length = 4000, 12
    y = y_draws = torch.randn(n, length, 3, generator=g)
    mask = torch.ones(n, length)
    means = {}
    for s in (0.0, 0.5, 1.0, 2.0):
        x1 = s * torch.randn(n, length, 3, generator=g)
        x2 = s * torch.randn(n, length, 3, generator=g)
        means[s] = energy_score_term(x1, x2, y, mask).mean().item()
    assert means[1.0] < means[0.5] < means[0.0]
    assert means[1.0] < means[2.0]
    # the observations' own constant: E d(X, Y) - E d(X, X') / 2 = E d / 2 at equality
    own = rms_distance(y, torch.randn(n, length, 3, generator=g), mask).mean().item()
    assert means[1.0] == pytest.approx(own / 2, rel=0.02)
    # a masked residue does not count; a hand value on two residues
    a = torch.tensor([[0.0, 0, 0], [9, 9, 9]])
    b = torch.tensor([[3.0, 4, 0], [0, 0, 0]])
    assert rms_distance(a, b, torch.tensor([1.0, 0.0])).item() == pytest.approx(5.0, abs=1e-6)
    assert energy_score_term(a, b, a, torch.tensor([1.0, 0.0])).item() == pytest.approx(2.5)
    # the symmetric form (an observation independent of both draws): (d(x1, y) + d(x2, y)) / 2
    # - d(x1, x2) / 2 by hand, and the same ranking of spreads as the one-sided form
    y = torch.tensor([[6.0, 8, 0], [1, 1, 1]])
    one = torch.tensor([1.0, 0.0])
    assert energy_score_term(a, b, y, one, symmetric=True).item() == pytest.approx(
        0.5 * (10.0 + 5.0) - 2.5
    )
    sym = {}
    for s in (0.0, 1.0, 2.0):
        x1 = s * torch.randn(n, length, 3, generator=g)
        x2 = s * torch.randn(n, length, 3, generator=g)
        sym[s] = energy_score_term(x1, x2, y_draws, mask, symmetric=True).mean().item()
    assert sym[1.0] < sym[0.0] and sym[1.0] < sym[2.0]
    assert sym[1.0] == pytest.approx(own / 2, rel=0.02)


def test_torsion_energy_score_uses_the_chord_distance_and_is_least_at_the_true_spread():
    """The torsion form: chord distance by hand (a quarter turn is sqrt(2), a half turn 2, the
    wrap at +-pi costs nothing, masked torsions do not count); with wrapped-normal observations
    around a mean angle, a model of the same spread scores best, collapsed (the circular mean)
    and twice as wide score worse."""
    a = torch.tensor([[[0.0, 3.1, 1.0]]])
    b = torch.tensor([[[torch.pi / 2, -3.1 - 2 * torch.pi, -2.0]]])
    mask = torch.tensor([[[1.0, 0.0, 0.0]]])
    assert chord_distance(a, b, mask).item() == pytest.approx(2**0.5, abs=1e-4)
    assert chord_distance(a, -a, torch.tensor([[[0.0, 1.0, 0.0]]])).item() == pytest.approx(
        (2 - 2 * torch.cos(torch.tensor(6.2))).sqrt().item(), abs=1e-4
    )
    assert chord_distance(a, a + torch.pi, torch.ones(1, 1, 3)).item() == pytest.approx(2.0)
    assert chord_distance(a, a + 2 * torch.pi, torch.ones(1, 1, 3)).item() < 1e-3
    g = torch.Generator().manual_seed(1)
    n, shape = 4000, (6, 7)
    centre = torch.rand(*shape, generator=g) * 6 - 3
    mask = (torch.rand(*shape, generator=g) > 0.2).float()

    def draw(s):
        return centre + s * torch.randn(n, *shape, generator=g)

    y = draw(0.8)
    means = {
        s: energy_score_term(draw(s), draw(s), y, mask, chord_distance).mean().item()
        for s in (0.0, 0.4, 0.8, 1.6)
    }
    assert means[0.8] < means[0.4] < means[0.0]
    assert means[0.8] < means[1.6]


def test_energy_score_term_enters_the_distillation_loss_with_its_weight(
    tiny_dataset, tiny_model_path
):
    """With ``distill.energy_score`` (and its torsion and backbone-dihedral forms) the loss
    carries the term at its weight and its gradient reaches the student; at 0 (the default)
    the loss is the paired regression, unchanged; a negative weight is refused."""
    spec = WindowSpec(window=3, dt_ps=(100.0,), crop=10)
    data = TrajectoryWindowDataset(tiny_dataset, "train", spec, samples_per_epoch=2)
    batch = collate_windows([data[0], data[1]])
    base = [*TINY, f"distill.teacher={tiny_model_path}", "distill.one_step_fraction=1.0"]
    plain = build_module(TrainConfig.from_yaml(None, base))

    def losses(*overrides):
        """The loss terms of the batch, same draws, weights as ``plain``'s; and the module."""
        module = build_module(TrainConfig.from_yaml(None, [*base, *overrides]))
        module.model.load_state_dict(plain.model.state_dict())
        return module.compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu"))), module

    def reaches_student(term, module):
        term.backward()
        grads = [p.grad for p in module.model.parameters() if p.grad is not None]
        return bool(grads) and any(g.abs().max() > 0 for g in grads)

    t0, _ = losses()
    t1, scored = losses("distill.energy_score=0.5")
    assert "energy_score" not in t0
    assert torch.isfinite(t1["energy_score"]) and t1["energy_score"].item() != 0
    # the same draws up to the second one: every other term as without it
    torch.testing.assert_close(t1["loss"], t0["loss"] + 0.5 * t1["energy_score"])
    assert reaches_student(t1["energy_score"], scored)
    # the torsion form: its own term at its weight, the C-alpha one absent, a gradient
    t2, torsional = losses("distill.torsion_energy_score=2.0")
    assert "energy_score" not in t2
    assert torch.isfinite(t2["torsion_energy_score"]) and t2["torsion_energy_score"].item() != 0
    torch.testing.assert_close(t2["loss"], t0["loss"] + 2.0 * t2["torsion_energy_score"])
    assert reaches_student(t2["torsion_energy_score"], torsional)
    # the backbone-dihedral form, beside the torsion one: each term at its weight
    t3, both = losses("distill.torsion_energy_score=2.0", "distill.dihedral_energy_score=3.0")
    torch.testing.assert_close(t3["torsion_energy_score"], t2["torsion_energy_score"])
    assert torch.isfinite(t3["dihedral_energy_score"]) and t3["dihedral_energy_score"] != 0
    torch.testing.assert_close(
        t3["loss"],
        t0["loss"] + 2.0 * t2["torsion_energy_score"] + 3.0 * t3["dihedral_energy_score"],
    )
    assert reaches_student(t3["dihedral_energy_score"], both)
    for name in (
        "energy_score",
        "torsion_energy_score",
        "dihedral_energy_score",
        "dihedral_regression",
    ):
        with pytest.raises(StarmdInputError, match="dihedral_regression >= 0"):
            build_module(TrainConfig.from_yaml(None, [*base, f"distill.{name}=-1"]))
    with pytest.raises(StarmdInputError, match="energy_score_target"):
        build_module(TrainConfig.from_yaml(None, [*base, "distill.energy_score_target=md"]))


def test_dihedral_regression_is_the_mean_squared_chord_over_the_bonded_junctions():
    """``dihedral_regression_term``: zero where the dihedrals agree (wrapped by 2 pi
    included), ``2 - 2 cos(delta)`` averaged over the psi and phi of the masked junctions by
    hand, unbonded junctions ignored; of frames it does not see a rigid motion of the whole
    prediction (junction dihedrals are internal coordinates)."""
    target = torch.tensor([[[0.3, -1.0], [2.0, 3.0], [-2.5, 0.1]]])  # (1, 3, 2)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    zero = dihedral_regression_term(target + 2 * torch.pi, target, mask)
    torch.testing.assert_close(zero, torch.zeros(1), atol=1e-6, rtol=0)
    pred = target + torch.tensor([[[0.2, 0.0], [0.0, -1.0], [3.0, 3.0]]])
    by_hand = ((2 - 2 * math.cos(0.2)) + 0 + 0 + (2 - 2 * math.cos(1.0))) / 4
    torch.testing.assert_close(
        dihedral_regression_term(pred, target, mask), torch.tensor([by_hand])
    )
    gen = torch.Generator().manual_seed(0)
    frames = Rigid(random_rotations((6,), gen), torch.randn(6, 3, generator=gen) * 3.8)
    other = Rigid(random_rotations((6,), gen), frames.trans + torch.randn(6, 3, generator=gen))
    aatype = torch.zeros(6, dtype=torch.long)
    move = Rigid(random_rotations((1,), gen), torch.randn(1, 3, generator=gen))
    bonded = torch.ones(5)
    before = dihedral_regression_term(
        junction_dihedrals(other, aatype), junction_dihedrals(frames, aatype), bonded
    )
    after = dihedral_regression_term(
        junction_dihedrals(move.compose(other), aatype), junction_dihedrals(frames, aatype), bonded
    )
    assert before > 0.01
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_dihedral_regression_enters_the_distillation_loss_with_its_weight(
    tiny_dataset, tiny_model_path
):
    """``distill.dihedral_regression``: the loss carries the term at its weight, at every
    noise level of the path (no second draw), and its gradient reaches the student; off by
    default."""
    spec = WindowSpec(window=3, dt_ps=(100.0,), crop=10)
    data = TrajectoryWindowDataset(tiny_dataset, "train", spec, samples_per_epoch=2)
    batch = collate_windows([data[0], data[1]])
    base = [*TINY, f"distill.teacher={tiny_model_path}", "distill.one_step_fraction=0.5"]
    plain = build_module(TrainConfig.from_yaml(None, base))
    module = build_module(TrainConfig.from_yaml(None, [*base, "distill.dihedral_regression=4.0"]))
    module.model.load_state_dict(plain.model.state_dict())
    t0 = plain.compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu")))
    t1 = module.compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu")))
    assert "dihedral_regression" not in t0
    assert torch.isfinite(t1["dihedral_regression"]) and t1["dihedral_regression"] > 0
    torch.testing.assert_close(t1["loss"], t0["loss"] + 4.0 * t1["dihedral_regression"])
    t1["dihedral_regression"].backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in module.model.parameters())


def test_own_rollout_replaces_the_history_by_the_students_own_frames(tiny_dataset, tiny_model_path):
    """``distill.own_rollout``: frame 0 stays MD's, every later frame of a chosen window is
    the student's one-step draw against the frames drawn before it (frame 1 reproduced by
    hand from the same random stream), so the result does not depend on MD's later frames;
    windows not chosen keep MD's frames; the loss on such a window reaches the student; a
    fraction outside [0, 1] is refused."""
    from starmd.diffusion.sampler import reverse_loop, sampler_schedule

    spec = WindowSpec(window=4, dt_ps=(100.0,), crop=10)
    data = TrajectoryWindowDataset(tiny_dataset, "train", spec, samples_per_epoch=2)
    batch = collate_windows([data[0], data[1]])
    base = [*TINY, f"distill.teacher={tiny_model_path}", "sampling.steps=1", "sampling.sampler=cm"]
    module = build_module(TrainConfig.from_yaml(None, [*base, "distill.own_rollout=1.0"]))

    def rolled(batch, fraction=1.0):
        module.config.distill.own_rollout = fraction
        gen = step_generator(0, 0, 0, torch.device("cpu"))
        ctx = module.window_context(batch, gen)
        return ctx, module.own_rollout_context(module.model, ctx, gen)

    md, own = rolled(batch)
    torch.testing.assert_close(own.window.frames.trans[:, 0], md.window.frames.trans[:, 0])
    torch.testing.assert_close(own.window.torsions[:, 0], md.window.torsions[:, 0])
    moved = (own.window.frames.trans[:, 1:] - md.window.frames.trans[:, 1:]).norm(dim=-1)
    assert moved.mean() > 0.1
    # frame 1 by hand: the same random stream, one student pass against MD's frame 0
    gen = step_generator(0, 0, 0, torch.device("cpu"))
    ctx = module.window_context(batch, gen)
    torch.rand(2, generator=gen)
    z_frames, z_torsions = module.diffuser.sample_prior(
        ctx.window.frames.shape, ctx.torsion_mask, gen, ctx.dtype, torch.device("cpu")
    )
    taus = sampler_schedule("cm", 1, module.config.diffusion.tau_min).tolist()
    with torch.no_grad():
        frames, torsions = reverse_loop(
            module.diffuser,
            module.predictor(module.model, ctx),
            z_frames,
            z_torsions,
            ctx.torsion_mask,
            taus,
            "cm",
            gen,
        )
    torch.testing.assert_close(own.window.frames.trans[:, 1], frames.trans[:, 1])
    torch.testing.assert_close(own.window.torsions[:, 1], torsions[:, 1])
    # MD's frames after the first never reach the result
    shifted = dict(batch)
    shifted["frames"] = batch["frames"].clone()
    shifted["frames"][:, 1:, :, 4:] += 3.0
    shifted["torsions"] = batch["torsions"].clone() + 0.5
    shifted["torsions"][:, 0] = batch["torsions"][:, 0]
    _, own_shifted = rolled(shifted)
    torch.testing.assert_close(own_shifted.window.frames.trans, own.window.frames.trans)
    torch.testing.assert_close(own_shifted.window.torsions, own.window.torsions)
    # no window chosen: MD's frames, the context as without the option
    md0, kept = rolled(batch, fraction=0.0)
    torch.testing.assert_close(kept.window.frames.trans, md0.window.frames.trans)
    assert kept is md0
    module.config.distill.own_rollout = 1.0
    terms = module.compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu")))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in module.model.parameters())
    with pytest.raises(StarmdInputError, match="own_rollout"):
        build_module(TrainConfig.from_yaml(None, [*base, "distill.own_rollout=1.5"]))


def test_energy_score_against_the_data_scores_the_md_frame_not_the_teachers_sample(
    tiny_dataset, tiny_model_path, monkeypatch
):
    """``distill.energy_score_target=data``: each term scores the student's two draws against
    the window's MD frame (same C-alpha distances as the batch's frames, whatever the draws),
    symmetrically; with ``teacher`` against the teacher's sample (which moves with the draws).
    The loss carries the term at its weight and its gradient reaches the student."""
    import starmd.train.distill as distill

    spec = WindowSpec(window=3, dt_ps=(100.0,), crop=10)
    data = TrajectoryWindowDataset(tiny_dataset, "train", spec, samples_per_epoch=2)
    batch = collate_windows([data[0], data[1]])
    base = [*TINY, f"distill.teacher={tiny_model_path}", "distill.one_step_fraction=1.0"]
    seen = []
    real = distill.energy_score_term

    def spy(x1, x2, y1, mask, *args, **kwargs):
        seen.append((y1.detach().clone(), kwargs.get("symmetric", False)))
        return real(x1, x2, y1, mask, *args, **kwargs)

    monkeypatch.setattr(distill, "energy_score_term", spy)
    md = Rigid.from_tensor_7(batch["frames"]).trans

    def observed(target, seed):
        seen.clear()
        module = build_module(
            TrainConfig.from_yaml(None, [*base, "distill.energy_score=0.5", target])
        )
        terms = module.compute_losses(batch, step_generator(seed, 0, 0, torch.device("cpu")))
        ((y, symmetric),) = seen
        return y, symmetric, terms, module

    def distances(x):
        return torch.cdist(x, x)

    real_residues = batch["residue_mask"].bool()
    pair = real_residues[:, None, :, None] & real_residues[:, None, None, :]
    y0, sym0, terms, module = observed("distill.energy_score_target=data", 0)
    y1, _, _, _ = observed("distill.energy_score_target=data", 1)
    assert sym0
    torch.testing.assert_close(
        distances(y0)[pair.expand_as(distances(y0))], distances(md)[pair.expand_as(distances(md))]
    )
    torch.testing.assert_close(y0, y1)
    t0, sym_t, _, _ = observed("distill.energy_score_target=teacher", 0)
    t1, _, _, _ = observed("distill.energy_score_target=teacher", 1)
    assert not sym_t
    assert (t0 - t1).abs().max() > 1e-3  # the teacher's sample follows the draw
    assert (distances(t0) - distances(md)).abs().max() > 1e-3
    plain = build_module(TrainConfig.from_yaml(None, base))
    plain.model.load_state_dict(module.model.state_dict())
    t_plain = plain.compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu")))
    torch.testing.assert_close(terms["loss"], t_plain["loss"] + 0.5 * terms["energy_score"])
    terms["energy_score"].backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in module.model.parameters())


def test_distill_from_takes_a_bundled_name(tmp_path, capsys):
    """`--distill-from starmd-small` resolves to the bundled file: the run then stops at the
    dataset check (not a dataset), after the teacher was found."""
    from tests.test_cli import assert_one_line_error, run_cli

    args = ["train", str(tmp_path), "-o", str(tmp_path / "run"), "--distill-from", "starmd-small"]
    code, _, err = run_cli(args, capsys)
    assert "starmd-small" not in err
    assert_one_line_error(code, err, str(tmp_path))


def test_a_teacher_of_another_network_is_one_clear_error(tiny_model_path):
    config = TrainConfig.from_yaml(
        None, ["model.preset=small", f"distill.teacher={tiny_model_path}"]
    )
    with pytest.raises(StarmdInputError, match="teacher's network differs"):
        build_module(config)
    config = TrainConfig.from_yaml(
        None, ["model.preset=tiny", "diffusion.tau_min=0.01", f"distill.teacher={tiny_model_path}"]
    )
    with pytest.raises(StarmdInputError, match="diffusion section differs"):
        build_module(config)
    config = TrainConfig.from_yaml(
        None, [*TINY, "distill.teacher_sampler=euler", f"distill.teacher={tiny_model_path}"]
    )
    with pytest.raises(StarmdInputError, match="teacher_sampler: unknown 'euler'"):
        build_module(config)


def test_a_student_may_restrict_its_attention_to_neighbours_of_a_full_attention_teacher(
    tiny_model_path,
):
    """attention_neighbours has no parameters: the student starts from the teacher's weights
    and keeps its own option, while the teacher keeps attending to every residue."""
    config = TrainConfig.from_yaml(
        None,
        [*TINY, "model.overrides.attention_neighbours=4", f"distill.teacher={tiny_model_path}"],
    )
    module = build_module(config)
    assert module.model.config.attention_neighbours == 4
    assert module.teacher.config.attention_neighbours is None


def test_train_distill_from_exports_a_student_started_from_its_teacher(
    tiny_dataset, tiny_model_path, tmp_path
):
    cmd = [sys.executable, "-m", "starmd.cli", "train", str(tiny_dataset), "-o", str(tmp_path)]
    cmd += ["--distill-from", str(tiny_model_path), "--max-steps", "2"]
    for item in TINY + ["sampling.steps=2", "sampling.sampler=ddim"]:
        cmd += ["--set", item]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    student = load_model(tmp_path / "model.safetensors")
    assert student.config.distill.teacher == str(tiny_model_path)
    assert (student.config.sampling.steps, student.config.sampling.sampler) == (2, "ddim")
    teacher = load_model(tiny_model_path).model.state_dict()
    diffs = [(student.model.state_dict()[n] - w).abs().max().item() for n, w in teacher.items()]
    # two small steps from the teacher's weights: changed, but close (a fresh init is not)
    assert max(diffs) > 0
    assert max(diffs) < 0.05
