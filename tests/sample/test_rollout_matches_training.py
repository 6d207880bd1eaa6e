"""A rollout step is the trained task: the denoiser call that predicts frame 1 from the input
structure equals the training-side denoising (``StarMDModule.window_context`` +
``denoise_window``) of the equivalent two-frame window, with the same noisy state and context
noise 0. Everything the rollout builds itself (time stamps, previous frame, posterior base,
elastic prior) is thereby checked against what training built.

"Context noise 0" is made exact here: the rotation and torsion marginals at tau = 0 still have
their schedules' minimum noise (sigma_min), drawn differently by the two code paths, so the test
makes both marginals the identity at tau = 0.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from starmd.diffusion.so3_diffuser import SO3Diffuser
from starmd.diffusion.torus_diffuser import TorusDiffuser
from starmd.modelfile import bundled_model_path, load_model
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure
from starmd.structure.rigid import Rigid
from starmd.train.module import StarMDModule
from tests.conftest import STRUCTURES

DT_PS = 100.0


@pytest.fixture
def noiseless_at_tau_zero(monkeypatch):
    """Rotation and torsion forward marginals return the clean value at tau = 0."""
    for cls in (SO3Diffuser, TorusDiffuser):
        marginal = cls.forward_marginal

        def exact(self, x0, tau, generator, *args, marginal=marginal, **kwargs):
            value, noise = marginal(self, x0, tau, generator, *args, **kwargs)
            zero = torch.as_tensor(tau, device=x0.device) == 0
            zero = zero.reshape(zero.shape + (1,) * (value.dim() - zero.dim()))
            return torch.where(zero, x0, value), noise

        monkeypatch.setattr(cls, "forward_marginal", exact)


def _rollout_first_step(loaded, inputs):
    """The tokens and prediction of the first denoising call of frame 1."""
    settings = RolloutSettings(steps=2, context_noise=0.0)
    rollout = Rollout(loaded, inputs, settings, seed=5)
    model, calls = loaded.model, []
    real = model.append_and_denoise

    def spy(cache, cond, clean, noisy):
        out = real(cache, cond, clean, noisy)
        calls.append((noisy, out))
        return out

    model.append_and_denoise = spy
    try:
        list(rollout.states(2))
    finally:
        model.append_and_denoise = real
    return calls[0]


def _training_window(inputs) -> dict[str, torch.Tensor]:
    """The dataset-layout batch of a window [input structure, input structure] at ``DT_PS``."""
    cond = inputs.cond
    init = inputs.init_frames.to_tensor_7()
    return {
        "init_frames": init,
        "residue_mask": cond.residue_mask,
        "aatype": cond.aatype,
        "residue_index": cond.residue_index,
        "chain_index": cond.chain_index,
        "dt_ps": cond.dt_ps,
        "torsion_mask": cond.torsion_mask,
        "frames": torch.stack([init, init], dim=1),
        "torsions": torch.stack([inputs.init_torsions] * 2, dim=1),
        "time_ps": torch.tensor([[0.0, DT_PS]]),
    }


@pytest.mark.parametrize("model_name", ["tiny", "starmd-small"])
def test_first_rollout_step_equals_training_denoising_of_the_same_window(
    model_name, tiny_model_path, noiseless_at_tau_zero
):
    path = tiny_model_path if model_name == "tiny" else bundled_model_path(model_name)
    loaded = load_model(path)
    protein, positions = load_structure(STRUCTURES / "1vii.pdb")
    inputs = protein_input(protein, positions, DT_PS, replicas=1)
    noisy, rollout_out = _rollout_first_step(loaded, inputs)

    config = loaded.config
    config = dataclasses.replace(
        config, diffusion=dataclasses.replace(config.diffusion, context_noise_max=0.0)
    )
    module = StarMDModule(config)
    module.model.load_state_dict(loaded.model.state_dict())
    module.eval()
    batch = _training_window(inputs)
    with torch.no_grad():
        ctx = module.window_context(batch, torch.Generator().manual_seed(0))
        state = Rigid.cat([noisy.frames, noisy.frames], dim=1)
        torsions = torch.cat([noisy.torsions, noisy.torsions], dim=1)
        tau = torch.cat([noisy.tau, noisy.tau], dim=1)
        pred = module.denoise_window(module.model, ctx, state, torsions, tau)
    torch.testing.assert_close(
        pred.frames.trans[:, 1], rollout_out.frames.trans[:, 0], atol=2e-4, rtol=0
    )
    torch.testing.assert_close(
        pred.frames.rots[:, 1], rollout_out.frames.rots[:, 0], atol=2e-5, rtol=0
    )
    torch.testing.assert_close(pred.torsions[:, 1], rollout_out.torsions[:, 0], atol=2e-5, rtol=0)
