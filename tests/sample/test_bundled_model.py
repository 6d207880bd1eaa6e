"""The bundled default model: it ships with the package, loads offline with the defaults its card
states, has learned something (it denoises unseen MD better than its untrained Gaussian base)
and generates sane chains at its defaults. The rollout check is a loose regression guard (the
elastic prior alone nearly meets it); docs/model_card.md has the measured quality.
"""

from importlib import resources
from pathlib import Path

import mdtraj
import numpy as np

from starmd.modelfile import bundled_model_path, load_model
from starmd.sample.generate import GenerationSettings, generate

DEMO = Path(str(resources.files("starmd") / "assets" / "demo" / "2wqg" / "2wqg.pdb"))


def test_bundled_model_loads_with_its_recommended_settings():
    path = bundled_model_path()
    assert path.is_file(), f"bundled model missing: {path}"
    loaded = load_model(path)
    sampling = loaded.config.sampling
    assert (sampling.dt_ps, sampling.steps, sampling.sampler) == (50.0, 5, "dpm2")
    assert sampling.step_scale == 1.5  # session 37: the calibrated step (docs/ablations.md)
    assert sum(p.numel() for p in loaded.model.parameters()) > 1_000_000
    fast = load_model(bundled_model_path("starmd-small-fast")).config.sampling
    assert (fast.dt_ps, fast.steps, fast.sampler, fast.step_scale) == (50.0, 1, "cm", 1.3)


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


def test_bundled_weights_denoise_unseen_md_better_than_their_base(tmp_path):
    """The check an untrained network (whose update starts at zero: output = Gaussian base)
    fails: on windows of 2WQG's MD (never trained on) the trained weights lower the loss."""
    from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
    from starmd.data.prepare import prepare
    from starmd.train.module import losses_vs_base

    prepare(DEMO.parent, tmp_path / "data", fractions=(0, 1, 0))
    loaded = load_model(bundled_model_path())
    spec = WindowSpec(window=loaded.config.data.window, dt_ps=(10.0, 50.0), crop=64)
    data = TrajectoryWindowDataset(tmp_path / "data", "val", spec, samples_per_epoch=8, seed=3)
    batch = collate_windows([data[i] for i in range(8)])
    losses = losses_vs_base(loaded, batch)
    assert losses["trained"]["loss"] < 0.8 * losses["base"]["loss"], losses
    assert losses["trained"]["torsion"] < 0.5 * losses["base"]["torsion"], losses
    assert losses["trained"]["rot"] < 0.8 * losses["base"]["rot"], losses
