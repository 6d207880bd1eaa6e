"""Torsion features of a heavy-atom topology: which atom quartets, and their sin/cos encoding."""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj as md
import numpy as np

from starmd.evaluate.geometry import dihedrals

_TORSION_FUNCTIONS = {
    "phi": md.compute_phi,
    "psi": md.compute_psi,
    "chi1": md.compute_chi1,
    "chi2": md.compute_chi2,
    "chi3": md.compute_chi3,
    "chi4": md.compute_chi4,
}


@dataclass(frozen=True)
class Torsions:
    """Atom quartets of a topology's torsions.

    Attributes:
        quartets: ``(K, 4)`` atom indices.
        kinds: ``(K,)`` ``"phi"``, ``"psi"``, ``"chi1"``..``"chi4"``.
        residues: ``(K,)`` residue index of each torsion (the residue of its second atom;
            for phi/psi the residue the angle belongs to).
    """

    quartets: np.ndarray
    kinds: np.ndarray
    residues: np.ndarray

    def select(self, kinds: tuple[str, ...]) -> Torsions:
        keep = np.isin(self.kinds, kinds)
        return Torsions(self.quartets[keep], self.kinds[keep], self.residues[keep])

    def angles(self, frames: np.ndarray) -> np.ndarray:
        """Angles ``(T, K)`` radians of frames ``(T, N, 3)``."""
        return dihedrals(frames, self.quartets)


def torsions_of(topology: md.Topology) -> Torsions:
    """Backbone (phi, psi) and side-chain (chi1-chi4) torsions defined by mdtraj's conventions."""
    dummy = md.Trajectory(np.zeros((1, topology.n_atoms, 3), dtype=np.float32), topology)
    quartets, kinds, residues = [], [], []
    for kind, function in _TORSION_FUNCTIONS.items():
        idx, _ = function(dummy)
        for q in idx:  # atom 1 is N (phi), CA (psi) or CA/CB.. (chi): the owning residue
            quartets.append(q)
            kinds.append(kind)
            residues.append(topology.atom(int(q[1])).residue.index)
    return Torsions(
        np.array(quartets, dtype=int).reshape(-1, 4), np.array(kinds), np.array(residues, dtype=int)
    )


def sincos(angles: np.ndarray) -> np.ndarray:
    """Features ``(T, 2K)``: ``[sin a_1, cos a_1, sin a_2, cos a_2, ...]`` of angles ``(T, K)``."""
    out = np.empty((angles.shape[0], 2 * angles.shape[1]))
    out[:, 0::2] = np.sin(angles)
    out[:, 1::2] = np.cos(angles)
    return out
