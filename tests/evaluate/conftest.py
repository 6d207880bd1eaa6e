"""Fixtures for the evaluation tests: villin headpiece (heavy atoms, from OpenMM's test.pdb with
water and ions stripped) and synthetic "MD" built from it.

Synthetic dynamics: every residue moves rigidly with a displacement field that is smooth along
the sequence (Gaussian kernel over residues) and follows an AR(1) process in time, plus a slow
two-state hinge (the C-terminal half shifts between two positions with rare switches). Bond
geometry stays near ideal, so frames pass the validity checks, and replicas of the same process
sample the same distribution.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
VILLIN_PDB = DATA / "villin.pdb"
MD_DT_PS = 10.0
MODEL_DT_PS = 50.0


def load_villin() -> md.Trajectory:
    return md.load_pdb(str(VILLIN_PDB))


def synthetic_frames(
    structure: md.Trajectory,
    n_frames: int,
    seed: int,
    noise: float = 0.08,
    strain: float = 0.012,
    stretch: float = 0.035,
    memory: float = 0.9,
    switch: float = 0.03,
) -> np.ndarray:
    """Frames ``(n_frames, N, 3)`` in nm (mdtraj units) around ``structure``'s first frame.

    ``x_t = c + A_t (x_0 - c) + e_t``: ``A_t`` is the identity plus a two-state stretch
    (+-``stretch`` along a fixed axis, switching with probability ``switch`` per frame) plus a
    random symmetric strain following an AR(1) process; ``e_t`` is a per-residue rigid
    displacement (Angstrom scale ``noise``), smooth along the sequence and AR(1) in time. Affine
    deformations of a few percent keep bonds and contacts physical.
    """
    rng = np.random.default_rng(seed)
    top = structure.topology
    x0 = structure.xyz[0].astype(np.float64)
    centre = x0.mean(axis=0)
    residue_of_atom = np.array([a.residue.index for a in top.atoms])
    r = np.arange(top.n_residues)
    kernel = np.exp(-0.5 * ((r[:, None] - r[None, :]) / 2.5) ** 2)
    kernel /= np.sqrt((kernel**2).sum(axis=1, keepdims=True))
    axis = np.array([0.6, -0.48, 0.64])
    axis_outer = np.outer(axis, axis)
    state = 1.0
    local = rng.standard_normal((top.n_residues, 3))
    shear = rng.standard_normal((3, 3))
    frames = np.empty((n_frames, top.n_atoms, 3), dtype=np.float32)
    for t in range(n_frames):
        local = memory * local + np.sqrt(1 - memory**2) * rng.standard_normal(local.shape)
        shear = memory * shear + np.sqrt(1 - memory**2) * rng.standard_normal((3, 3))
        if rng.random() < switch:
            state = -state
        deform = np.eye(3) + state * stretch * axis_outer + strain * 0.5 * (shear + shear.T)
        shift = (noise / 10.0) * (kernel @ local)
        frames[t] = centre + (x0 - centre) @ deform.T + shift[residue_of_atom]
    return frames


def write_trajectory(
    frames_nm: np.ndarray, topology: md.Topology, path: Path, dt_ps: float
) -> None:
    traj = md.Trajectory(frames_nm, topology)
    traj.time = np.arange(len(frames_nm)) * dt_ps
    traj.save_xtc(str(path))


def make_reference(folder: Path, n_replicas: int = 3, n_frames: int = 300, seed: int = 0) -> Path:
    """ATLAS-layout reference of villin in ``folder/villin``."""
    villin = load_villin()
    target = folder / "villin"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(VILLIN_PDB, target / "villin.pdb")
    for i in range(1, n_replicas + 1):
        frames = synthetic_frames(villin, n_frames, seed=seed + i)
        write_trajectory(frames, villin.topology, target / f"villin_prod_R{i}_fit.xtc", MD_DT_PS)
    return folder


def make_generated(
    folder: Path, n_frames: int = 120, seed: int = 100, backbone_only: bool = False
) -> Path:
    """Generated-layout villin at 50 ps per frame (the same process, seen every 5th step)."""
    villin = load_villin()
    folder.mkdir(parents=True, exist_ok=True)
    frames = synthetic_frames(villin, n_frames * 5, seed=seed)[::5]
    if backbone_only:
        keep = villin.topology.select("backbone")
        villin = villin.atom_slice(keep)
        frames = frames[:, keep]
    villin.save_pdb(str(folder / "villin.pdb"))
    write_trajectory(frames, villin.topology, folder / "villin_R1.xtc", 0.0)
    (folder / "villin.json").write_text(json.dumps({"dt_ps": MODEL_DT_PS}))
    return folder


@pytest.fixture(scope="session")
def villin() -> md.Trajectory:
    return load_villin()


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    return make_reference(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="session")
def generated_dir(tmp_path_factory) -> Path:
    return make_generated(tmp_path_factory.mktemp("generated"))
