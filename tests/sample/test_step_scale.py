"""``generate --step-scale s``: each residue's rigid move from the previous frame scaled by s.

The scaled move must be the stated one (translation s times as long, rotation angle s times
as large about the same axis), commute with a global rigid motion of the whole trajectory, and
leave a rollout unchanged at s = 1; bad values are one-line errors.
"""

from __future__ import annotations

import pytest
import torch

from starmd.diffusion.so3 import exp_map, log_map, random_rotations
from starmd.errors import StarmdInputError
from starmd.modelfile import load_model
from starmd.sample.generate import GenerationSettings, generate
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure
from starmd.structure.rigid import Rigid
from tests.conftest import STRUCTURES

VILLIN = STRUCTURES / "1vii.pdb"


def _rollout(model_path, scale: float) -> Rollout:
    protein, positions = load_structure(VILLIN)
    inputs = protein_input(protein, positions, 100.0, replicas=2, dtype=torch.float64)
    loaded = load_model(model_path)
    loaded.model.double()
    return Rollout(loaded, inputs, RolloutSettings(steps=2, step_scale=scale), seed=0)


def _moved(frames: Rigid, generator: torch.Generator) -> Rigid:
    """``frames`` with every residue turned by up to ~0.3 rad and shifted by ~0.5 A."""
    rotvec = 0.15 * torch.randn(*frames.shape, 3, generator=generator, dtype=frames.dtype)
    shift = 0.5 * torch.randn(*frames.shape, 3, generator=generator, dtype=frames.dtype)
    return Rigid(frames.rots @ exp_map(rotvec), frames.trans + shift)


def test_scaled_move_is_the_stated_one_and_equivariant(tiny_model_path):
    rollout = _rollout(tiny_model_path, 1.5)
    generator = torch.Generator().manual_seed(3)
    last = rollout.inputs.init_frames
    new = _moved(last, generator)
    rollout.latest = (0, last, rollout.inputs.init_torsions)
    scaled = rollout.scale_step(new)
    torch.testing.assert_close(scaled.trans - last.trans, 1.5 * (new.trans - last.trans))
    move = log_map(last.rots.transpose(-1, -2) @ new.rots)
    scaled_move = log_map(last.rots.transpose(-1, -2) @ scaled.rots)
    torch.testing.assert_close(scaled_move, 1.5 * move)
    # a global rotation and translation of both frames moves the result the same way
    rotation = random_rotations((1,), generator, dtype=torch.float64)[0]
    shift = torch.tensor([3.0, -2.0, 7.0], dtype=torch.float64)

    def moved(f: Rigid) -> Rigid:
        return Rigid(rotation @ f.rots, f.trans @ rotation.T + shift)

    rollout.latest = (0, moved(last), rollout.inputs.init_torsions)
    turned = rollout.scale_step(moved(new))
    torch.testing.assert_close(turned.rots, moved(scaled).rots)
    torch.testing.assert_close(turned.trans, moved(scaled).trans)


def test_first_scaled_frame_is_the_plain_frame_scaled(tiny_model_path):
    # frame 1 is sampled from the same cache (frame 0 alone) with the same draws either way
    plain = [f for _, f, _ in _rollout(tiny_model_path, 1.0).states(2)]
    scaled_rollout = _rollout(tiny_model_path, 1.7)
    scaled = [f for _, f, _ in scaled_rollout.states(2)]
    scaled_rollout.latest = (0, plain[0], scaled_rollout.inputs.init_torsions)
    expected = scaled_rollout.scale_step(plain[1])
    torch.testing.assert_close(scaled[1].trans, expected.trans)
    torch.testing.assert_close(scaled[1].rots, expected.rots)
    step = (plain[1].trans - plain[0].trans).norm(dim=-1)
    torch.testing.assert_close((scaled[1].trans - plain[0].trans).norm(dim=-1), 1.7 * step)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_bad_step_scale(tiny_model_path, tmp_path, scale):
    settings = GenerationSettings(frames=3, dt_ps=100.0, steps=2, step_scale=scale)
    with pytest.raises(StarmdInputError, match="--step-scale must be > 0"):
        generate(VILLIN, tmp_path, settings, model=tiny_model_path, device="cpu")


def test_the_models_recommended_scale_is_the_default_with_refinement(tmp_path):
    from starmd.modelfile.config import TrainConfig
    from starmd.train.module import StarMDModule
    from starmd.train.run import export_model

    config = TrainConfig.from_yaml(None, ["model.preset=tiny", "sampling.step_scale=1.5"])
    model = export_model(StarMDModule(config), tmp_path / "scaled.safetensors")

    def run(out: str, **kw) -> dict:
        settings = GenerationSettings(frames=3, dt_ps=100.0, steps=2, **kw)
        return generate(VILLIN, tmp_path / out, settings, model=model)

    assert run("refined")["settings"]["step_scale"] == 1.5
    assert run("refined_1", step_scale=1.0)["settings"]["step_scale"] == 1.0
    # without refinement nothing restores the stretched chain: the network's own steps,
    # unless a scale is asked for
    assert run("raw", refine=False)["settings"]["step_scale"] == 1.0
    assert run("raw_15", refine=False, step_scale=1.5)["settings"]["step_scale"] == 1.5

    def xtc(out: str) -> bytes:
        return (tmp_path / out / "1vii_R1.xtc").read_bytes()

    assert xtc("refined") != xtc("refined_1") and xtc("raw") != xtc("raw_15")
