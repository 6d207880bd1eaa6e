"""Which validity check fails, per source: MD, MD round-tripped through the model's
representation, and generated trajectories (raw and refined).

    python benchmarks/validity_breakdown.py /work/main/corpus/md \\
        [--generated raw=OUT_RAW --generated refined=OUT_REFINED] [--clashes 8]

For every validation protein of the corpus (``index.csv``, split ``val``) it prints one
Markdown row per source with the percentage of frames failing each check of
:mod:`starmd.evaluate.validity` separately (CA clash, CA break, heavy-atom clash, peptide
break, Ramachandran outliers over 4.12% of residues, rotamer outliers over 7.05%) and the
CA-, AA- and CA+AA-valid percentages:

- ``md``: the corpus's MD frames (all replicas);
- ``md round trip``: the same frames through atoms -> residue frames + torsions -> heavy atoms
  (:mod:`starmd.structure.geometry`), the representation the model generates in;
- ``md round trip, fitted chi``: the same, but chi1-chi4 fitted (least squares over the heavy
  atoms, 150 Adam steps) instead of measured as dihedrals: how much of the round trip's error
  a choice of torsion targets could remove, the residue frames and idealised geometry kept;
- ``LABEL`` for every ``--generated LABEL=FOLDER``: ``FOLDER/NAME/NAME.pdb`` +
  ``NAME_R*.xtc`` as ``starmd generate`` writes them (frame 0, the input, is left out).

Then, for the round trip, the atom pairs (residue and atom names) that clash most often, with
their distance in MD and after the rebuild, and the atoms the rebuild displaces most (mean and
largest displacement over all frames).
"""

from __future__ import annotations

import argparse
import collections
import csv
from pathlib import Path

import mdtraj as md
import numpy as np
import torch
from scipy.spatial import cKDTree

from starmd.evaluate.validity import (
    RAMA_OUTLIER_MAX,
    ROTAMER_OUTLIER_MAX,
    judge,
    measure_frames,
    plan_validity,
)
from starmd.structure import geometry
from starmd.structure import residue_constants as rc
from starmd.structure.io import iter_trajectory, to_mdtraj
from starmd.structure.local_geometry import (
    CLASH_OVERLAP_A,
    CONTACT_SEARCH_A,
    POLAR_ALLOWANCE_A,
    VDW_RADIUS_A,
)

COLUMNS = (
    "frames", "CA clash", "CA break", "AA clash", "pep. break", "Rama > 4.12%",
    "rotamer > 7.05%", "CA-valid", "AA-valid", "CA+AA-valid", "Rama outliers (% res.)",
)  # fmt: skip


def failure_row(xyz_a: np.ndarray, topology: md.Topology) -> list[float]:
    """Frames and % of frames failing each check, then % CA-, AA-, CA+AA-valid, then the mean
    % of Ramachandran outliers per frame, of ``xyz_a (T, N, 3)`` Angstrom."""
    measures = measure_frames(xyz_a, plan_validity(topology))
    checks = judge(measures)
    fails = [
        checks["ca_clash"],
        checks["ca_break"],
        checks["aa_clash"],
        checks["aa_break"],
        measures["rama_outlier_fraction"] > RAMA_OUTLIER_MAX,
        measures["rotamer_outlier_fraction"] > ROTAMER_OUTLIER_MAX,
        checks["valid_ca"],
        checks["valid_aa"],
        checks["valid"],
        measures["rama_outlier_fraction"],
    ]
    return [len(xyz_a)] + [100.0 * float(np.mean(f)) for f in fails]


def md_positions(corpus: Path, name: str):
    """The protein and all MD frames ``(T, L, 15, 3)`` Angstrom of one corpus entry."""
    frames, protein = [], None
    for xtc in sorted((corpus / name).glob(f"{name}_prod_R*_fit.xtc")):
        for chunk_protein, positions, _ in iter_trajectory(corpus / name / f"{name}.pdb", xtc):
            protein = chunk_protein
            frames.append(positions)
    return protein, np.concatenate(frames)


def round_trip(protein, positions: np.ndarray) -> np.ndarray:
    """Heavy atoms ``(T, L, 15, 3)`` rebuilt from the residue frames and torsions of
    ``positions``."""
    x = torch.as_tensor(positions)
    aatype = torch.as_tensor(protein.aatype)
    torsions, _ = geometry.atoms_to_torsions(
        x, aatype, torch.as_tensor(protein.atom_mask), torch.as_tensor(protein.linked_prev)
    )
    frames = geometry.atoms_to_frames(x)
    rebuilt = geometry.frames_to_atoms(frames, torsions, aatype, torch.as_tensor(protein.oxt_mask))
    return rebuilt.numpy()


def round_trip_fitted_chi(protein, positions: np.ndarray, steps: int = 150) -> np.ndarray:
    """Like :func:`round_trip`, with the side-chain torsions chosen to put the rebuilt heavy
    atoms closest to ``positions (T, L, 15, 3)`` (squared distance, Adam, ``steps`` steps)."""
    x = torch.as_tensor(positions)
    aatype, mask = torch.as_tensor(protein.aatype), torch.as_tensor(protein.atom_mask)
    torsions, _ = geometry.atoms_to_torsions(x, aatype, mask, torch.as_tensor(protein.linked_prev))
    frames, oxt = geometry.atoms_to_frames(x), torch.as_tensor(protein.oxt_mask)
    chi = torsions[..., 3:].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([chi], lr=0.02)
    weight = mask.to(x.dtype)[..., None]

    def rebuilt() -> torch.Tensor:
        moved = torch.cat([torsions[..., :3], chi], -1)
        return geometry.frames_to_atoms(frames, moved, aatype, oxt)

    for _ in range(steps):
        loss = (((rebuilt() - x) ** 2) * weight).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return rebuilt().numpy()


def clashing_pairs(xyz_a: np.ndarray, topology: md.Topology) -> list[tuple[int, int, int]]:
    """``(frame, atom i, atom j)`` of every heavy-atom clash by the evaluation's rule."""
    atoms = list(topology.atoms)
    elements = [a.element.symbol.upper() for a in atoms]
    radius = np.array([VDW_RADIUS_A[e] for e in elements])
    polar = np.array([e in ("N", "O") for e in elements])
    residue = np.array([a.residue.index for a in atoms])
    sulfur_gamma = np.array([a.name == "SG" for a in atoms])
    out = []
    for f, x in enumerate(xyz_a):
        pairs = cKDTree(x).query_pairs(CONTACT_SEARCH_A, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        far = (np.abs(residue[i] - residue[j]) >= 2) & ~(sulfur_gamma[i] & sulfur_gamma[j])
        d = np.linalg.norm(x[i] - x[j], axis=1)
        excess = radius[i] + radius[j] - d - np.where(polar[i] & polar[j], POLAR_ALLOWANCE_A, 0)
        bad = far & (excess > CLASH_OVERLAP_A)
        out += [(f, a, b) for a, b in zip(i[bad], j[bad], strict=True)]
    return out


def clash_table(md_xyz: np.ndarray, rt_xyz: np.ndarray, topology: md.Topology, top: int):
    """Markdown rows: the round trip's most frequent clashing pairs with their distances."""
    label = {a.index: f"{a.residue.name}{a.residue.resSeq}:{a.name}" for a in topology.atoms}
    seen = collections.defaultdict(list)
    for f, i, j in clashing_pairs(rt_xyz, topology):
        md_a = np.linalg.norm(md_xyz[f, i] - md_xyz[f, j])
        seen[(i, j)].append((md_a, np.linalg.norm(rt_xyz[f, i] - rt_xyz[f, j])))
    rows = sorted(seen.items(), key=lambda kv: -len(kv[1]))[:top]
    lines = []
    for (i, j), d in rows:
        d = np.array(d)
        lines.append(
            f"| {label[i]} - {label[j]} | {len(d)} | {d[:, 0].mean():.2f} | {d[:, 1].mean():.2f} |"
        )
    return lines


def displacement_table(protein, md_pos: np.ndarray, rt_pos: np.ndarray, top: int) -> list[str]:
    """Markdown rows: atom names (per residue type) the rebuild moves most, mean and max."""
    moved = np.linalg.norm(rt_pos - md_pos, axis=-1)  # (T, L, 15)
    by_atom = collections.defaultdict(list)
    for i, t in enumerate(protein.aatype):
        name = rc.RESTYPE_3[t]
        for slot, atom in enumerate(rc.ATOM14_NAMES[name]):
            by_atom[f"{name}:{atom}"].append(moved[:, i, slot])
    stats = [(k, np.concatenate(v)) for k, v in by_atom.items()]
    stats.sort(key=lambda kv: -kv[1].mean())
    return [f"| {k} | {v.mean():.2f} | {v.max():.2f} |" for k, v in stats[:top]]


def generated_xyz(folder: Path, name: str) -> tuple[np.ndarray, md.Topology] | None:
    """Generated frames (Angstrom; frame 0, the input, left out) of ``folder/NAME``."""
    root = folder / name
    xtcs = sorted(root.glob(f"{name}_R*.xtc"))
    xtcs = [x for x in xtcs if ".relaxed" not in x.name]
    if not xtcs:
        return None
    top = str(root / f"{name}.pdb")
    xyz = [md.load(str(x), top=top).xyz[1:] * 10.0 for x in xtcs]
    return np.concatenate(xyz), md.load_topology(top)


def val_names(corpus: Path) -> list[str]:
    with open(corpus / "index.csv") as fh:
        return sorted({r["name"] for r in csv.DictReader(fh) if r["split"] == "val"})


def fmt(row: list[float]) -> str:
    return f"{int(row[0])} | " + " | ".join(f"{v:.1f}" for v in row[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--generated", action="append", default=[], metavar="LABEL=FOLDER")
    parser.add_argument("--clashes", type=int, default=8, help="clashing pairs listed per protein")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generated = [g.split("=", 1) for g in args.generated]
    header = "| protein | source | " + " | ".join(COLUMNS) + " |"
    table, details = [header, "|" + "---|" * (len(COLUMNS) + 2)], []
    for name in val_names(args.corpus):
        protein, md_pos = md_positions(args.corpus, name)
        rt_pos = round_trip(protein, md_pos)
        traj_md = to_mdtraj(protein, md_pos)
        traj_rt = to_mdtraj(protein, rt_pos)
        md_xyz, rt_xyz = traj_md.xyz * 10.0, traj_rt.xyz * 10.0
        table.append(f"| {name} | md | {fmt(failure_row(md_xyz, traj_md.topology))} |")
        table.append(f"| {name} | md round trip | {fmt(failure_row(rt_xyz, traj_rt.topology))} |")
        fitted = to_mdtraj(protein, round_trip_fitted_chi(protein, md_pos))
        row = fmt(failure_row(fitted.xyz * 10.0, fitted.topology))
        table.append(f"| {name} | md round trip, fitted chi | {row} |")
        for label, folder in generated:
            found = generated_xyz(Path(folder), name)
            if found is not None:
                table.append(f"| {name} | {label} | {fmt(failure_row(*found))} |")
        details += [
            "",
            f"{name}: round-trip clashing pairs (frames, mean distance in MD and rebuilt, A)",
            "",
            "| pair | frames | MD | rebuilt |",
            "|---|---|---|---|",
            *clash_table(md_xyz, rt_xyz, traj_md.topology, args.clashes),
            "",
            f"{name}: atoms the rebuild moves most (A)",
            "",
            "| atom | mean | max |",
            "|---|---|---|",
            *displacement_table(protein, md_pos, rt_pos, args.clashes),
        ]
    print("\n".join(table + details))


if __name__ == "__main__":
    main()
