"""Padding is inert, the pretrained-prior path works, and every parameter gets a gradient."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from starmd.errors import StarmdInputError
from starmd.model import DenoiserConfig, FrameTokens, ProteinConditioning, StarDenoiser
from starmd.structure.rigid import Rigid
from tests.model.conftest import Window, make_model, make_window

PAD = 3


def _first_protein(window: Window, length: int) -> Window:
    """Batch element 0, residues ``[0, length)``."""

    def rigid(r: Rigid) -> Rigid:
        return r[:1, ..., :length]

    c = window.cond
    cond = ProteinConditioning(
        aatype=c.aatype[:1, :length],
        residue_index=c.residue_index[:1, :length],
        chain_index=c.chain_index[:1, :length],
        residue_mask=c.residue_mask[:1, :length],
        init_frames=rigid(c.init_frames),
        dt_ps=c.dt_ps[:1],
        torsion_mask=c.torsion_mask[:1, :length],
    )

    def tokens(t: FrameTokens) -> FrameTokens:
        return FrameTokens(
            frames=rigid(t.frames),
            torsions=t.torsions[:1, :, :length],
            tau=t.tau[:1],
            time_ps=t.time_ps[:1],
            reference=None if t.reference is None else rigid(t.reference),
        )

    return Window(cond, tokens(window.clean), tokens(window.noisy))


def _scramble_padding(window: Window) -> Window:
    """Replace everything about the padded residues of element 0 with other random values."""
    g = torch.Generator().manual_seed(99)
    real = window.cond.residue_mask[0]

    def scramble(t: torch.Tensor, residue_dim: int) -> torch.Tensor:
        noise = 50 * torch.randn(t.shape, generator=g, dtype=t.dtype)
        index = [slice(None)] * t.dim()
        index[0] = 0
        index[residue_dim] = ~real
        out = t.clone()
        out[tuple(index)] = noise[tuple(index)]
        return out

    def tokens(t: FrameTokens) -> FrameTokens:
        reference = t.reference
        if reference is not None:
            reference = Rigid(reference.rots, scramble(reference.trans, 2))
        return replace(
            t,
            frames=Rigid(t.frames.rots, scramble(t.frames.trans, 2)),
            torsions=scramble(t.torsions, 2),
            reference=reference,
        )

    aatype = window.cond.aatype.clone()
    aatype[0, ~real] = 3
    cond = replace(
        window.cond,
        aatype=aatype,
        init_frames=Rigid(window.cond.init_frames.rots, scramble(window.cond.init_frames.trans, 1)),
    )
    return Window(cond, tokens(window.clean), tokens(window.noisy))


def test_padded_residues_do_not_change_real_residues():
    model = make_model()
    length = 9
    padded = make_window(length=length, num_padding=PAD)
    real = length - PAD
    with torch.no_grad():
        out = model(padded.cond, padded.clean, padded.noisy)
        scrambled = _scramble_padding(padded)
        out_scrambled = model(scrambled.cond, scrambled.clean, scrambled.noisy)
        alone = _first_protein(padded, real)
        out_alone = model(alone.cond, alone.clean, alone.noisy)
    for other in (out_scrambled.noisy, out_alone.noisy):
        torch.testing.assert_close(
            other.frames.trans[0, :, :real], out.noisy.frames.trans[0, :, :real], atol=1e-9, rtol=0
        )
        torch.testing.assert_close(
            other.torsions[0, :, :real], out.noisy.torsions[0, :, :real], atol=1e-9, rtol=0
        )
    # Element 1 (no padding) is untouched by element 0's padding too.
    torch.testing.assert_close(out_scrambled.noisy.frames.trans[1], out.noisy.frames.trans[1])


def test_prior_features_enter_the_prediction():
    model = make_model(c_prior_single=6, c_prior_pair=5)
    window = make_window(prior_single=6, prior_pair=5, num_padding=2)
    with torch.no_grad():
        out = model(window.cond, window.clean, window.noisy)
        other_pair = replace(window.cond, prior_pair=torch.randn_like(window.cond.prior_pair))
        out_pair = model(other_pair, window.clean, window.noisy)
        other_single = replace(window.cond, prior_single=torch.randn_like(window.cond.prior_single))
        out_single = model(other_single, window.clean, window.noisy)
    assert torch.isfinite(out.noisy.frames.trans).all() and torch.isfinite(out.noisy.torsions).all()
    assert (out_pair.noisy.frames.trans - out.noisy.frames.trans).abs().max() > 1e-3
    assert (out_single.noisy.torsions - out.noisy.torsions).abs().max() > 1e-3


def test_prior_inputs_must_match_the_config():
    with_prior = make_model(c_prior_single=6)
    plain = make_model()
    window = make_window(prior_single=6)
    with pytest.raises(StarmdInputError, match="prior_single"):
        plain(window.cond, window.clean, window.noisy)
    with pytest.raises(StarmdInputError, match="prior_single"):
        with_prior(replace(window.cond, prior_single=None), window.clean, window.noisy)


def _training_like_loss(out) -> torch.Tensor:
    """Touches what a training loss touches: noisy-copy frames (final and every block) and
    torsions."""
    noisy = out.noisy
    return (
        noisy.frames.trans.square().mean()
        + noisy.frames.rots.sum(dim=(-1, -2)).square().mean()
        + noisy.frames_per_block.trans.square().mean()
        + noisy.frames_per_block.rots.sum(dim=(-1, -2)).square().mean()
        + noisy.torsions[..., 0].mean()
        + noisy.torsions_unnormalized.square().mean()
    )


def test_every_parameter_receives_a_nonzero_gradient():
    model = make_model(c_prior_single=4, c_prior_pair=3).train()
    window = make_window(prior_single=4, prior_pair=3, num_padding=1)
    _training_like_loss(model(window.cond, window.clean, window.noisy)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} is unused"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, f"{name} has a zero gradient"


def test_every_parameter_is_in_the_graph_at_initialization():
    """DDP without find_unused_parameters needs a gradient tensor for every parameter, also at
    the (partly zero) initialization."""
    torch.manual_seed(0)
    model = StarDenoiser(DenoiserConfig.tiny()).double()
    window = make_window()
    _training_like_loss(model(window.cond, window.clean, window.noisy)).backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_presets_have_the_documented_sizes():
    from starmd.model import count_parameters

    counts = {
        n: count_parameters(StarDenoiser(DenoiserConfig.preset(n)))
        for n in ("tiny", "small", "base")
    }
    assert 0.05e6 < counts["tiny"] < 0.3e6
    assert 1e6 < counts["small"] < 3e6
    assert 8e6 < counts["base"] < 30e6
    with pytest.raises(ValueError, match="unknown"):
        DenoiserConfig.preset("huge")


def test_presets_train_on_every_pair_of_their_crops():
    """pair_neighbours restricts pairs only beyond a preset's training crop: every config in
    configs/ trains with all pairs, as before the option existed."""
    import yaml

    from starmd.modelfile.config import TrainConfig

    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        config = TrainConfig.from_yaml(path)
        denoiser = DenoiserConfig.preset(config.model.preset, **config.model.overrides)
        assert denoiser.pair_neighbours is None or denoiser.pair_neighbours >= config.data.crop, (
            path.name,
            yaml.safe_dump(config.to_dict()["model"]),
        )
