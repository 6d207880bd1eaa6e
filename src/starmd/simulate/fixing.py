"""Clean an input structure for MD with PDBFixer: protein only, complete heavy atoms, H at pH 7."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starmd.errors import StarmdInputError
from starmd.structure.residue_constants import PEPTIDE_BREAK_A

PH = 7.0
"""Protonation pH used for added hydrogens."""

# Residue names PDBFixer maps onto the 20 standard amino acids (plus the usual caps/variants).
_PROTEIN_RESIDUES = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL "
    "HID HIE HIP HSD HSE HSP CYX ASH GLH LYN MSE ACE NME NH2".split()
)


def fix_structure(path: str | Path, keep: Sequence[str] = ()) -> tuple[Any, Any]:
    """Load ``path`` (PDB or PDBx/mmCIF) and make it ready for an Amber force field.

    Keeps the first model, removes water and every other heterogen except the residue names in
    ``keep`` (e.g. ``("CA", "ZN")``; the force field must know them), adds missing heavy atoms
    (missing internal residues are not modelled: a gap stays a gap, which
    ``simulate`` refuses, :func:`check_chain_breaks`), replaces non-standard
    residues PDBFixer knows (e.g. MSE -> MET) and adds hydrogens at pH 7.

    Returns:
        ``(topology, positions)`` of the cleaned structure (OpenMM objects, positions in nm).

    Raises:
        StarmdInputError: the file is missing, unreadable, or holds no protein residues.
    """
    path = Path(path)
    if not path.is_file():
        raise StarmdInputError(f"{path}: no such file")
    from pdbfixer import PDBFixer

    try:
        fixer = PDBFixer(filename=str(path))
    except Exception as err:  # PDBFixer raises bare Exception/ValueError for unreadable files
        raise StarmdInputError(f"{path}: cannot read structure ({_one_line(err)})") from None
    n_protein = sum(1 for r in fixer.topology.residues() if r.name in _PROTEIN_RESIDUES)
    if n_protein == 0:
        raise StarmdInputError(f"{path}: no protein residues found (nothing to simulate)")
    try:
        fixer.findMissingResidues()
        fixer.missingResidues = {}
        fixer.findNonstandardResidues()
        fixer.replaceNonstandardResidues()
        _remove_heterogens(fixer, set(keep))
        fixer.findMissingAtoms()
        fixer.addMissingAtoms()
        fixer.addMissingHydrogens(PH)
    except Exception as err:
        raise StarmdInputError(f"{path}: PDBFixer cannot complete it ({_one_line(err)})") from None
    _drop_empty_chains(fixer)
    return fixer.topology, fixer.positions


def check_chain_breaks(topology: Any, positions: Any, path: str | Path) -> None:
    """Refuse a chain with a gap: OpenMM's force field bonds consecutive residues of a chain
    whatever their distance, so a missing stretch would become one stretched peptide bond that
    minimisation pulls shut. Raises :class:`StarmdInputError` naming the first gap."""
    import numpy as np
    import openmm.unit as unit

    xyz = np.asarray(positions.value_in_unit(unit.angstrom))
    for chain in topology.chains():
        residues = [r for r in chain.residues() if r.name in _PROTEIN_RESIDUES]
        for before, after in zip(residues, residues[1:], strict=False):
            c = next((a.index for a in before.atoms() if a.name == "C"), None)
            n = next((a.index for a in after.atoms() if a.name == "N"), None)
            if c is None or n is None:
                continue
            distance = float(np.linalg.norm(xyz[c] - xyz[n]))
            if distance > PEPTIDE_BREAK_A:
                raise StarmdInputError(
                    f"{path}: chain {chain.id} has a gap between {before.name}{before.id} and "
                    f"{after.name}{after.id} (C-N {distance:.1f} A); MD would bond them: model "
                    "the missing residues (e.g. PDBFixer) or put the pieces in separate chains"
                )


def _remove_heterogens(fixer: Any, keep: set[str]) -> None:
    """Delete every residue that is neither protein nor named in ``keep`` (water included)."""
    import openmm.app as app

    doomed = [
        r
        for r in fixer.topology.residues()
        if r.name not in _PROTEIN_RESIDUES and r.name not in keep
    ]
    if doomed:
        modeller = app.Modeller(fixer.topology, fixer.positions)
        modeller.delete(doomed)
        fixer.topology, fixer.positions = modeller.topology, modeller.positions


def _drop_empty_chains(fixer: Any) -> None:
    """Remove chains left without residues after heterogen removal."""
    import openmm.app as app

    empty = [c for c in fixer.topology.chains() if len(list(c.residues())) == 0]
    if empty:
        modeller = app.Modeller(fixer.topology, fixer.positions)
        modeller.delete(empty)
        fixer.topology, fixer.positions = modeller.topology, modeller.positions


def _one_line(err: BaseException) -> str:
    """First line of an exception message, for one-line user errors."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
