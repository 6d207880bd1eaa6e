"""The bundled default model: it ships with the package, loads offline and generates sane chains.

The quality floor is deliberately loose (a regression guard, not a benchmark: see
docs/model_card.md for the measured quality): on the demo protein 2WQG, which the model never
saw in training, a short rollout at the model's own defaults has no NaN, keeps the chain
connected and stays near the input structure.
"""

from importlib import resources
from pathlib import Path

import mdtraj
import numpy as np

from starmd.sample.generate import GenerationSettings, bundled_model_path, generate
from starmd.train.run import load_model

DEMO = Path(str(resources.files("starmd") / "assets" / "demo" / "2wqg" / "2wqg.pdb"))


def test_bundled_model_loads_with_its_recommended_settings():
    path = bundled_model_path()
    assert path.is_file(), f"bundled model missing: {path}"
    loaded = load_model(path)
    sampling = loaded.config.sampling
    assert sampling.dt_ps > 0 and sampling.steps >= 1
    assert sum(p.numel() for p in loaded.model.parameters()) > 1_000_000


def test_bundled_model_keeps_an_unseen_protein_connected(tmp_path):
    sidecar = generate(DEMO, tmp_path, GenerationSettings(frames=8, seed=0), device="cpu")
    assert sidecar["model"] == str(bundled_model_path())
    assert sidecar["health"][0]["nan_frames"] == 0
    traj = mdtraj.load(str(tmp_path / "2wqg_R1.xtc"), top=str(tmp_path / "2wqg.pdb"))
    assert traj.n_frames == 8
    ca = traj.topology.select("name CA")
    xyz = traj.xyz[:, ca] * 10.0
    bonds = np.linalg.norm(np.diff(xyz, axis=1), axis=-1)
    bad = np.mean((bonds < 3.0) | (bonds > 4.5))
    assert bad < 0.05, f"{bad:.1%} of CA-CA bonds outside 3.0-4.5 A"
    rmsd = mdtraj.rmsd(traj, traj, 0, atom_indices=ca) * 10.0
    assert rmsd.max() < 4.0, f"CA RMSD to the input reached {rmsd.max():.2f} A"
