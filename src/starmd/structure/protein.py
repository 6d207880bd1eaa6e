"""The :class:`Protein` topology carried with every coordinate array.

It keeps what outputs need to look like the input in a viewer: residue names, chain ids, residue
numbers; and what the model needs: residue types, chain breaks, which atoms exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from starmd.structure import residue_constants as rc

CHAIN_BREAK_CA_CA = 4.2
"""Consecutive CA atoms farther apart than this (Angstrom) are not peptide-bonded (trans CA-CA
is 3.80 A; cis 2.9 A)."""


@dataclass(frozen=True, eq=False)
class Protein:
    """Topology of a protein in starmd's residue layout.

    Attributes:
        name: a short identifier (file stem), used for output file names.
        aatype: ``(L,)`` int, index into :data:`RESTYPES`.
        chain_ids: ``(L,)`` chain identifier of each residue.
        residue_numbers: ``(L,)`` residue number as in the input file.
        linked_prev: ``(L,)`` bool, residue i is peptide-bonded to residue i-1 (False at each
            chain start and after a chain break).
        atom_mask: ``(L, 15)`` bool, heavy atoms present in the source (atom15 layout).
    """

    name: str
    aatype: np.ndarray
    chain_ids: tuple[str, ...]
    residue_numbers: np.ndarray
    linked_prev: np.ndarray
    atom_mask: np.ndarray
    source: str = field(default="")

    def __post_init__(self) -> None:
        n = len(self.aatype)
        shapes = {
            "chain_ids": len(self.chain_ids),
            "residue_numbers": len(self.residue_numbers),
            "linked_prev": len(self.linked_prev),
            "atom_mask": self.atom_mask.shape[0],
        }
        bad = {k: v for k, v in shapes.items() if v != n}
        if bad or self.atom_mask.shape[1:] != (rc.ATOMS_PER_RESIDUE,):
            raise ValueError(f"inconsistent Protein arrays for {n} residues: {bad}")

    @property
    def n_residues(self) -> int:
        return len(self.aatype)

    @property
    def sequence(self) -> str:
        """One-letter sequence, chains separated by ``/``."""
        out = []
        for i, t in enumerate(self.aatype):
            if i > 0 and self.chain_ids[i] != self.chain_ids[i - 1]:
                out.append("/")
            out.append(rc.RESTYPES[t])
        return "".join(out)

    @property
    def residue_names(self) -> tuple[str, ...]:
        return tuple(rc.RESTYPE_3[t] for t in self.aatype)

    @property
    def chain_starts(self) -> np.ndarray:
        """``(L,)`` bool, first residue of each chain."""
        starts = np.ones(self.n_residues, dtype=bool)
        starts[1:] = np.array(self.chain_ids[1:]) != np.array(self.chain_ids[:-1])
        return starts

    @property
    def chain_breaks(self) -> np.ndarray:
        """Indices i of residues not bonded to i-1 although in the same chain (gaps)."""
        return np.flatnonzero(~self.linked_prev & ~self.chain_starts)

    @property
    def chain_index(self) -> np.ndarray:
        """``(L,)`` int, 0-based chain number."""
        return np.cumsum(self.chain_starts) - 1

    @property
    def oxt_mask(self) -> np.ndarray:
        """``(L,)`` bool: residues that carry a terminal OXT in the source."""
        return self.atom_mask[:, rc.OXT_SLOT].copy()

    @property
    def segment_index(self) -> np.ndarray:
        """``(L,)`` int: residue index with a gap of 100 at every chain start or break.

        Used as the model's residue position: relative offsets are exact inside a segment,
        and unbonded segments are far apart.
        """
        return np.arange(self.n_residues) + 100 * np.cumsum(~self.linked_prev)

    def label(self, i: int) -> str:
        """Human-readable residue label, e.g. ``"A:LYS12"``."""
        return f"{self.chain_ids[i]}:{rc.RESTYPE_3[self.aatype[i]]}{self.residue_numbers[i]}"

    def to_dict(self) -> dict:
        """JSON-friendly description (without the atom mask)."""
        return {
            "name": self.name,
            "n_residues": self.n_residues,
            "sequence": self.sequence,
            "chains": sorted(set(self.chain_ids), key=self.chain_ids.index),
            "chain_breaks": [self.label(i) for i in self.chain_breaks],
        }
