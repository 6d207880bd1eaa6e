"""``starmd inspect``: will this structure work with starmd, and how well does it round-trip?"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from starmd.structure import geometry
from starmd.structure import residue_constants as rc
from starmd.structure.io import load_topology_frame, positions_from_xyz, protein_from_topology
from starmd.structure.provenance import alternate_locations, stripped_entities


def round_trip_rmsd(protein, positions) -> tuple[float, float]:
    """Backbone (N, CA, C, O) and all-heavy-atom RMSD in Angstrom of atoms -> frames + torsions
    -> atoms for positions ``(L, 15, 3)``."""
    pos = torch.from_numpy(positions)
    aatype = torch.from_numpy(protein.aatype)
    atom_mask = torch.from_numpy(protein.atom_mask)
    oxt = torch.from_numpy(protein.oxt_mask)
    torsions, _ = geometry.atoms_to_torsions(
        pos, aatype, atom_mask, torch.from_numpy(protein.linked_prev)
    )
    rebuilt = geometry.frames_to_atoms(geometry.atoms_to_frames(pos), torsions, aatype, oxt)
    mask = geometry.rebuilt_atom_mask(aatype, oxt) & atom_mask
    sq = ((rebuilt - pos) ** 2).sum(-1)
    return (
        float(sq[:, :4][mask[:, :4]].mean().sqrt()),
        float(sq[mask].mean().sqrt()),
    )


def inspect_structure(path: str | Path, chains: Sequence[str] | None = None) -> dict:
    """Describe a structure as starmd sees it.

    Returns a JSON-friendly dict: chains, residues, sequence, chain breaks, what was stripped
    (water, ions, ligands, hydrogens, other chains), residue-name variants mapped, alternate
    locations (the first is kept), missing side-chain atoms,
    and the frames + torsions round-trip RMSDs. Raises :class:`StarmdInputError` with the
    reason when starmd cannot model the structure.
    """
    traj = load_topology_frame(path)
    protein, atom_index = protein_from_topology(traj.topology, path, traj.xyz[0], chains)
    positions = positions_from_xyz(traj.xyz, atom_index)[0]

    stripped = stripped_entities(traj.topology, chains)
    expected = geometry.residue_atom_mask(torch.from_numpy(protein.aatype)).numpy()
    missing = []
    for i in range(protein.n_residues):
        names = rc.ATOM14_NAMES[rc.RESTYPE_3[protein.aatype[i]]]
        absent = [
            names[s] for s in range(len(names)) if expected[i, s] and not protein.atom_mask[i, s]
        ]
        if absent:
            missing.append({"residue": protein.label(i), "atoms": absent})

    backbone, heavy = round_trip_rmsd(protein, positions)
    report = protein.to_dict()
    report.update(
        {
            "file": str(path),
            "chains": [
                {"id": c, "residues": protein.chain_ids.count(c)}
                for c in dict.fromkeys(protein.chain_ids)
            ],
            "heavy_atoms": int(protein.atom_mask.sum()),
            "stripped_residues": stripped["water"] | stripped["ions"] | stripped["ligands"],
            "hydrogens_stripped": stripped["hydrogens"],
            "other_chains": stripped["other_chains"],
            "mapped_residue_names": stripped["mapped_residue_names"],
            "alternate_locations": alternate_locations(path),
            "missing_side_chain_atoms": missing,
            "round_trip_backbone_rmsd_A": round(backbone, 4),
            "round_trip_heavy_atom_rmsd_A": round(heavy, 4),
            "ok": True,
        }
    )
    return report
