"""Baselines scored by the same code as the model.

- ``replica``: an independent MD replica (the oracle / ceiling), taken from the reference folder
  and held out of the reference it is scored against.
- ``static``: the initial structure repeated.
- ``anm``: independent samples of the anisotropic network model (Atilgan et al. 2001) of the
  initial structure's CA atoms, scaled to a generic crystallographic B-factor; nothing is fitted
  to the MD.
- a user folder: any trajectories in the generated layout (loaded by
  :mod:`starmd.evaluate.trajectories`).
"""

from __future__ import annotations

import numpy as np

from starmd.evaluate.trajectories import Ensemble

ANM_CUTOFF_A = 15.0
ANM_GAMMA = 1.0
# Mean CA B-factor used to set the ANM's overall fluctuation size: 25 A^2 is typical of
# well-ordered crystal structures (mean B of PDB entries at 1.5-2.5 A resolution); it gives a
# mean CA RMSF of sqrt(3 B / (8 pi^2)) = 0.97 A.
GENERIC_B_FACTOR_A2 = 25.0


def static_ensemble(
    name: str, topology, initial: np.ndarray, n_frames: int, dt_ps: float
) -> Ensemble:
    """The initial structure ``(N, 3)`` Angstrom repeated ``n_frames`` times (read-only view)."""
    frames = np.broadcast_to(initial.astype(np.float32), (n_frames, *initial.shape))
    return Ensemble(name, topology, [frames], dt_ps, "static initial structure")


def anm_hessian(
    ca: np.ndarray, cutoff: float = ANM_CUTOFF_A, gamma: float = ANM_GAMMA
) -> np.ndarray:
    """ANM Hessian ``(3n, 3n)`` of CA positions ``(n, 3)`` Angstrom.

    Off-diagonal super-element ``(i, j)`` for ``|r_ij| < cutoff``:
    ``-gamma (r_ij r_ij^T) / |r_ij|^2``; diagonal blocks minus the sum of their row's off-diagonal
    blocks (Atilgan et al. 2001, Biophys. J. 80:505).
    """
    n = len(ca)
    diff = ca[None, :, :] - ca[:, None, :]
    d2 = (diff**2).sum(axis=2)
    connected = (d2 < cutoff**2) & ~np.eye(n, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        blocks = -gamma * diff[:, :, :, None] * diff[:, :, None, :] / d2[:, :, None, None]
    blocks[~connected] = 0.0
    blocks[np.arange(n), np.arange(n)] = -blocks.sum(axis=1)
    return blocks.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)


def anm_modes(hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-trivial normal modes: eigenvalues ``(3n - 6,)`` ascending and vectors ``(3n, 3n - 6)``
    (the six zero-frequency rigid-body modes are dropped)."""
    values, vectors = np.linalg.eigh(hessian)
    return values[6:], vectors[:, 6:]


def anm_ensemble(
    name: str,
    topology,
    initial: np.ndarray,
    n_frames: int,
    dt_ps: float,
    seed: int = 0,
    b_factor: float = GENERIC_B_FACTOR_A2,
) -> Ensemble:
    """Independent Gaussian samples of the ANM of the initial structure.

    CA displacements are drawn from ``N(0, s H^+)`` (``H^+`` the pseudo-inverse on the
    non-trivial modes); ``s`` makes the mean CA mean-square fluctuation equal to
    ``3 B / (8 pi^2)`` for the generic ``B``. Every heavy atom moves with its residue's CA.

    Args:
        initial: ``(N, 3)`` Angstrom, heavy atoms of ``topology``.
        n_frames: samples to draw.

    Returns:
        an ensemble of one replica ``(n_frames, N, 3)`` float32; its frames are independent, so
        its dynamics metrics describe no dynamics (the time step is nominal).
    """
    residue_of_atom = np.array([a.residue.index for a in topology.atoms])
    ca_atoms = {a.residue.index: a.index for a in topology.atoms if a.name == "CA"}
    residues = sorted(ca_atoms)
    ca = initial[[ca_atoms[r] for r in residues]].astype(np.float64)
    values, vectors = anm_modes(anm_hessian(ca))
    msf = ((vectors**2) / values).sum(axis=1).reshape(-1, 3).sum(axis=1)
    scale = (3.0 * b_factor / (8.0 * np.pi**2)) / msf.mean()
    amplitudes = np.sqrt(scale / values)
    slot = np.full(residue_of_atom.max() + 1, -1)
    slot[residues] = np.arange(len(residues))
    atom_slot = slot[residue_of_atom]
    moves = atom_slot >= 0
    rng = np.random.default_rng(seed)
    frames = np.empty((n_frames, *initial.shape), dtype=np.float32)
    for start in range(0, n_frames, 1024):
        stop = min(n_frames, start + 1024)
        z = rng.standard_normal((stop - start, len(values)))
        displacement = ((z * amplitudes) @ vectors.T).reshape(stop - start, -1, 3)
        block = np.broadcast_to(initial, (stop - start, *initial.shape)).copy()
        block[:, moves] += displacement[:, atom_slot[moves]]
        frames[start:stop] = block
    return Ensemble(name, topology, [frames], dt_ps, "ANM Gaussian ensemble")
