"""Few-step samplers: the second-order multistep sampler (dpm2, DPM-Solver++(2M)) converges to
the deterministic ODE's many-step solution faster than DDIM at the same number of model calls."""

import pytest
import torch

from starmd.modelfile import load_model
from starmd.modelfile.config import TrainConfig
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure
from starmd.train.module import StarMDModule
from starmd.train.run import export_model
from tests.conftest import STRUCTURES


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """An untrained small-config model: its prediction is the smooth Gaussian posterior base."""
    torch.manual_seed(0)
    module = StarMDModule(TrainConfig.from_yaml(None, ["model.preset=tiny"]))
    return load_model(export_model(module, tmp_path_factory.mktemp("m") / "base.safetensors"))


def _final(loaded, sampler: str, steps: int, rho: float = 3.0):
    protein, positions = load_structure(STRUCTURES / "1vii.pdb")
    inputs = protein_input(protein, positions, 100.0, 1, dtype=torch.float64)
    loaded.model.double()
    settings = RolloutSettings(steps=steps, sampler=sampler, context_noise=0.0, schedule_rho=rho)
    rollout = Rollout(loaded, inputs, settings, seed=3)
    rollout.push_clean(0, inputs.init_frames, inputs.init_torsions)
    return rollout.sample_frame(1)


def _error(a, b) -> float:
    (fa, ta), (fb, tb) = a, b
    trans = (fa.trans - fb.trans).norm(dim=-1).pow(2).mean().sqrt()
    rot = (fa.rots - fb.rots).flatten(-2).norm(dim=-1).mean()
    return float(trans + rot + (ta - tb).abs().mean())


def test_dpm2_beats_ddim_at_equal_model_calls(base_model):
    reference = _final(base_model, "ddim", 600)
    steps = (3, 5, 9, 17)
    for rho in (1.0, 3.0):
        ddim = {n: _error(_final(base_model, "ddim", n, rho), reference) for n in steps}
        dpm2 = {n: _error(_final(base_model, "dpm2", n, rho), reference) for n in steps}
        for n in steps:  # one model call per step for both
            assert dpm2[n] < ddim[n], (rho, dpm2, ddim)
        assert dpm2[17] < dpm2[5] and dpm2[9] < dpm2[5]  # converges as the steps grow


def test_more_steps_at_low_noise_help_few_step_sampling(base_model):
    reference = _final(base_model, "ddim", 600)
    for sampler in ("ddim", "dpm2"):
        linear = _error(_final(base_model, sampler, 9, rho=1.0), reference)
        cubic = _error(_final(base_model, sampler, 9, rho=3.0), reference)
        assert cubic < 0.6 * linear, (sampler, cubic, linear)


def test_dpm2_is_deterministic(base_model):
    a, b = _final(base_model, "dpm2", 4), _final(base_model, "dpm2", 4)
    assert _error(a, b) == 0.0
