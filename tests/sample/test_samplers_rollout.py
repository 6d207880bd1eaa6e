"""Every sampler with both bundled models: a short ``generate`` (villin, 4 frames at the models'
50 ps) keeps the chain connected and near the input, and does move it.

Steps per sampler are the fewest that keep the chain intact here: the deterministic and
posterior samplers (ddpm, ddim, dpm2, dpm2sde, cm) at 2; the reverse SDE at 20 and the
probability-flow ODE at 10 (Euler steps; at 2 steps both leave most of the prior's noise, CA
RMSD 12-120 A).
"""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest

from starmd.sample.generate import GenerationSettings, generate
from tests.conftest import STRUCTURES

VILLIN = STRUCTURES / "1vii.pdb"
STEPS = {"ddpm": 2, "ddim": 2, "dpm2": 2, "dpm2sde": 2, "cm": 2, "sde": 20, "ode": 10}


@pytest.mark.parametrize("sampler", sorted(STEPS))
@pytest.mark.parametrize("model", ["starmd-small", "starmd-small-fast"])
def test_bundled_model_rolls_out_with_every_sampler(model, sampler, tmp_path):
    settings = GenerationSettings(frames=4, steps=STEPS[sampler], sampler=sampler, seed=0)
    sidecar = generate(VILLIN, tmp_path, settings, model=model, device="cpu")
    assert sidecar["settings"]["sampler"] == sampler
    assert sidecar["health"][0]["nan_frames"] == 0
    traj = mdtraj.load(str(tmp_path / "1vii_R1.xtc"), top=str(tmp_path / "1vii.pdb"))
    assert traj.n_frames == 4 and np.isfinite(traj.xyz).all()
    ca = traj.topology.select("name CA")
    bonds = np.linalg.norm(np.diff(traj.xyz[1:, ca] * 10.0, axis=1), axis=-1)
    broken = np.mean((bonds < 3.0) | (bonds > 4.5))
    assert broken < 0.1, f"{broken:.1%} of generated CA-CA bonds outside 3.0-4.5 A"
    rmsd = mdtraj.rmsd(traj, traj, 0, atom_indices=ca)[1:] * 10.0
    assert 0.1 < rmsd.min() and rmsd.max() < 3.0, rmsd
