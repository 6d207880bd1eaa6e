"""What starmd kept and left out of an input structure, and the input's digest.

:func:`~starmd.structure.io.protein_from_topology` models only the standard amino acids of the
chosen chains; this module describes everything else in the file (water, ions, ligands,
hydrogens, unselected chains) and the alternate locations (altlocs) of which the first was
kept, for ``starmd inspect``, the sidecar of ``starmd generate`` and its end-of-run summary.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from starmd.structure.io import (
    _WATER_AND_IONS,
    _canonical_residue,
    _chain_label,
    _is_hydrogen,
    load_topology_frame,
)

WATER_NAMES = {"HOH", "WAT", "SOL", "TIP3", "TIP4", "TIP5", "T3P", "SPC"}


def file_sha256(path: str | Path) -> str:
    """The full SHA-256 (64 hex digits) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stripped_entities(topology, chains: Sequence[str] | None = None) -> dict:
    """What of an ``mdtraj.Topology`` is not modelled when keeping ``chains`` (None: all).

    Returns:
        ``{"water": {name: n}, "ions": {name: n}, "ligands": {name: n}, "hydrogens": n,
        "other_chains": [ids], "mapped_residue_names": {"HIE->HIS": n}}``: residues by name,
        hydrogens counted on the kept residues, ``other_chains`` the protein chains left out.
    """
    keep = set(chains or [])
    hydrogens = 0
    water: Counter[str] = Counter()
    ions: Counter[str] = Counter()
    ligands: Counter[str] = Counter()
    mapped: Counter[str] = Counter()
    other_chains: dict[str, None] = {}
    for chain in topology.chains:
        label = _chain_label(chain)
        for residue in chain.residues:
            canonical = _canonical_residue(residue.name)
            if canonical is None:
                name = residue.name.upper()
                if residue.is_water or name in WATER_NAMES:
                    water[residue.name] += 1
                elif name in {n.upper() for n in _WATER_AND_IONS}:
                    ions[residue.name] += 1
                else:
                    ligands[residue.name] += 1
            elif keep and label not in keep:
                other_chains[label] = None
            else:
                if canonical != residue.name.upper():
                    mapped[f"{residue.name}->{canonical}"] += 1
                hydrogens += sum(_is_hydrogen(a) for a in residue.atoms)
    return {
        "water": dict(water),
        "ions": dict(ions),
        "ligands": dict(ligands),
        "hydrogens": hydrogens,
        "other_chains": list(other_chains),
        "mapped_residue_names": dict(mapped),
    }


def alternate_locations(path: str | Path) -> list[dict]:
    """Residues with alternate locations in a PDB or mmCIF file, and the one starmd kept.

    mdtraj (PDB) and OpenMM (mmCIF) keep, for every atom, the first alternate location in the
    file; this reads the same records and reports per residue the locations present and the
    kept (first) one: ``[{"residue": "A:SER22", "locations": ["A", "B"], "kept": "A"}]``
    (``"A:SER/PRO22"`` where the locations differ in residue type).
    Other formats carry no alternate locations (empty list).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pdb":
        records = _pdb_altlocs(path)
    elif suffix in {".cif", ".mmcif", ".pdbx"}:
        records = _mmcif_altlocs(path)
    else:
        return []
    residues: dict[tuple[str, str], dict] = {}
    for chain, name, number, altloc in records:
        entry = residues.setdefault((chain, number), {"names": [], "locations": []})
        for key, value in (("names", name), ("locations", altloc)):
            if value not in entry[key]:
                entry[key].append(value)
    return [
        {
            "residue": f"{chain}:{'/'.join(entry['names'])}{number}",
            "locations": entry["locations"],
            "kept": entry["locations"][0],
        }
        for (chain, number), entry in residues.items()
    ]


def _pdb_altlocs(path: Path) -> list[tuple[str, str, str, str]]:
    """(chain, residue name, number, altloc) of the first model's ATOM/HETATM records with an
    altloc."""
    found = []
    with open(path, errors="replace") as handle:
        for line in handle:
            if line.startswith("ENDMDL"):
                break
            if line.startswith(("ATOM  ", "HETATM")) and len(line) > 26 and line[16] != " ":
                chain = line[21].strip() or "A"
                found.append((chain, line[17:20].strip(), line[22:27].strip(), line[16]))
    return found


def _mmcif_altlocs(path: Path) -> list[tuple[str, str, str, str]]:
    """As :func:`_pdb_altlocs` for an mmCIF file, through the PDBx reader OpenMM's
    ``PDBxFile`` uses (author chain and residue numbers, as starmd reports residues)."""
    from openmm.app.internal.pdbx.reader.PdbxReader import PdbxReader

    blocks: list = []
    with open(path) as handle:
        PdbxReader(handle).read(blocks)
    atoms = blocks[0].getObj("atom_site") if blocks else None
    if atoms is None:
        return []
    column = {name: atoms.getAttributeIndex(name) for name in atoms.getAttributeList()}
    alt, model = column.get("label_alt_id", -1), column.get("pdbx_PDB_model_num", -1)
    if alt < 0:
        return []
    chain = column.get("auth_asym_id", column.get("label_asym_id"))
    number = column.get("auth_seq_id", column.get("label_seq_id"))
    resname = column.get("auth_comp_id", column.get("label_comp_id"))
    rows = atoms.getRowList()
    first_model = rows[0][model] if rows and model >= 0 else None
    found = []
    for row in rows:
        if model >= 0 and row[model] != first_model:
            break
        if row[alt] not in {".", "?"}:
            found.append((row[chain], row[resname], row[number], row[alt]))
    return found


def input_record(path: str | Path, chains: Sequence[str] | None = None) -> dict:
    """The input structure as a generated trajectory's sidecar records it: path, full
    SHA-256, the chains kept (``None``: all), what was stripped
    (:func:`stripped_entities`) and the alternate locations kept
    (:func:`alternate_locations`)."""
    traj = load_topology_frame(path)
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "chains": list(chains) if chains else None,
        "stripped": stripped_entities(traj.topology, chains),
        "alternate_locations": alternate_locations(path),
    }


def describe_input(stripped: dict, altlocs: Sequence[dict]) -> str:
    """One line on what was left out of an input (:func:`stripped_entities`) and which
    alternate locations were kept (:func:`alternate_locations`), e.g. ``"stripped 81 water,
    HEM x1 (ligand), 950 H; other chains: B; alternate locations kept: A at 2 residues"``."""
    parts = []
    n_water = sum(stripped["water"].values())
    if n_water:
        parts.append(f"{n_water} water")
    parts += [f"{name} x{n} (ion)" for name, n in stripped["ions"].items()]
    parts += [f"{name} x{n} (ligand)" for name, n in stripped["ligands"].items()]
    if stripped["hydrogens"]:
        parts.append(f"{stripped['hydrogens']} H")
    text = "stripped " + (", ".join(parts) if parts else "nothing")
    if stripped["other_chains"]:
        text += f"; other chains left out: {', '.join(stripped['other_chains'])}"
    if stripped["mapped_residue_names"]:
        renamed = ", ".join(f"{k} x{v}" for k, v in stripped["mapped_residue_names"].items())
        text += f"; renamed {renamed}"
    if altlocs:
        kept = Counter(a["kept"] for a in altlocs)
        text += "; alternate locations kept: " + ", ".join(
            f"{loc} at {n} residue{'s' * (n > 1)}" for loc, n in kept.items()
        )
    return text
