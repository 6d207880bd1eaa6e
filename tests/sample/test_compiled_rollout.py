"""``RolloutSettings(compile=True)``: the rollout through ``torch.compile`` equals the eager one
to float rounding, and one graph per pass layout serves every frame (no re-tracing as the KV
cache's ring buffer turns). Slow: Inductor compiles C++ kernels (tens of seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import _dynamo
from torch._dynamo.utils import counters

from starmd.modelfile import load_model
from starmd.modelfile.config import TrainConfig
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure
from starmd.train.module import StarMDModule
from starmd.train.run import export_model
from tests.conftest import STRUCTURES
from tests.model.conftest import randomize_parameters

pytestmark = pytest.mark.slow


def _rollout(path, compile: bool) -> Rollout:
    loaded = load_model(path)
    loaded.model.double()
    protein, positions = load_structure(STRUCTURES / "1vii.pdb")
    inputs = protein_input(protein, positions, 50.0, 2, dtype=torch.float64)
    settings = RolloutSettings(steps=2, context=2, sink=True, sampler="ddpm", compile=compile)
    return Rollout(loaded, inputs, settings, seed=5)


def test_compiled_rollout_equals_eager_and_compiles_once_per_layout(tmp_path):
    torch.manual_seed(0)
    module = StarMDModule(TrainConfig.from_yaml(None, ["model.preset=tiny"]))
    randomize_parameters(module.model, std=0.05)  # the zero-init update would hide the trunk
    path = export_model(module, tmp_path / "m.safetensors")
    eager, compiled = _rollout(path, False), _rollout(path, True)
    assert compiled.cache.static and not eager.cache.static
    # ring buffer: context 2 + sink + 2 scratch slots; run past two turns of it
    frames = 12
    expected = list(eager.states(frames))
    states = compiled.states(frames)
    got = [next(states) for _ in range(3)]  # frames 0-2: both pass layouts traced
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled trunk did run
    with _dynamo.config.patch(error_on_recompile=True):  # no new graph from here on
        got += list(states)
    moved = 0.0
    for (t, frames_e, torsions_e), (u, frames_c, torsions_c) in zip(expected, got, strict=True):
        assert t == u
        torch.testing.assert_close(frames_c.trans, frames_e.trans, atol=1e-6, rtol=0)
        torch.testing.assert_close(frames_c.rots, frames_e.rots, atol=1e-6, rtol=0)
        torch.testing.assert_close(torsions_c, torsions_e, atol=1e-6, rtol=0)
        moved = max(moved, float((frames_e.trans - expected[0][1].trans).abs().max()))
    assert moved > 0.1  # the frames do move: the comparison is not of constant outputs
