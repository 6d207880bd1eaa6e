"""The rollout's inputs carry the time step once: adaLN's tensor and the time stamps agree."""

from dataclasses import replace

import pytest
import torch

from starmd.sample.rollout import protein_input
from starmd.structure.io import load_structure
from tests.conftest import STRUCTURES


def test_protein_input_carries_one_time_step():
    protein, positions = load_structure(STRUCTURES / "1vii.pdb")
    inputs = protein_input(protein, positions, 50.0, replicas=2)
    assert inputs.dt_ps == 50.0
    assert inputs.cond.dt_ps.tolist() == [50.0, 50.0]
    with pytest.raises(ValueError, match="time step 10.0 ps disagrees"):
        replace(inputs, dt_ps=10.0)
    with pytest.raises(ValueError, match="disagrees"):
        replace(inputs, cond=replace(inputs.cond, dt_ps=torch.tensor([50.0, 20.0])))
