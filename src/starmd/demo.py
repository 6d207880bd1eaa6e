"""``starmd demo``: the whole pipeline on bundled data, in minutes on a laptop CPU.

Current stages: inspect the bundled structure, prepare its real MD into a dataset, rebuild every
frame from the dataset's frames + torsions and write it as PDB + XTC next to a JSON summary.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from starmd.data.prepare import prepare
from starmd.data.store import open_store
from starmd.structure import geometry
from starmd.structure.inspect import inspect_structure
from starmd.structure.io import atomic_write, iter_trajectory, to_mdtraj
from starmd.structure.rigid import Rigid


def demo_md_dir() -> Path:
    """The bundled demo MD (ATLAS layout)."""
    return Path(str(resources.files("starmd") / "assets" / "demo" / "1am7"))


def run_demo(out_dir: str | Path, log=print) -> dict:
    """Run the demo into ``out_dir``; returns the summary written to ``summary.json``."""
    out_dir = Path(out_dir)
    md_dir = demo_md_dir()
    name = "1am7"
    topology = md_dir / f"{name}.pdb"
    report = inspect_structure(topology)
    log(
        f"[1/3] {topology.name}: {report['n_residues']} residues, round trip "
        f"{report['round_trip_backbone_rmsd_A']:.3f} A backbone, "
        f"{report['round_trip_heavy_atom_rmsd_A']:.3f} A heavy atoms"
    )

    rows = prepare(md_dir, out_dir / "data", fractions=(1, 0, 0), overwrite=True)
    log(f"[2/3] prepared {rows[0].frames} frames at {rows[0].dt_ps:g} ps into {out_dir / 'data'}")

    group = open_store(out_dir / "data")
    replica = group[f"proteins/{name}/R1"]
    frames = torch.from_numpy(replica["frames"][...]).double()
    torsions = torch.from_numpy(replica["torsions"][...]).double()
    ((protein, original, times),) = list(
        iter_trajectory(topology, md_dir / f"{name}_prod_R1_fit.xtc", chunk=10_000)
    )
    aatype = torch.from_numpy(protein.aatype)
    oxt = torch.from_numpy(protein.oxt_mask)
    rebuilt = geometry.frames_to_atoms(Rigid.from_tensor_7(frames), torsions, aatype, oxt).numpy()
    mask = geometry.rebuilt_atom_mask(aatype, oxt).numpy()
    traj = to_mdtraj(protein, rebuilt, mask, time_ps=times)
    pdb = atomic_write(out_dir / f"{name}_rebuilt.pdb", lambda tmp: traj[0].save_pdb(tmp))
    xtc = atomic_write(out_dir / f"{name}_rebuilt.xtc", lambda tmp: traj.save_xtc(tmp))
    common = mask & protein.atom_mask
    diff = np.sqrt(((rebuilt - original) ** 2).sum(-1))
    per_frame = np.sqrt((diff[:, common] ** 2).mean(-1))
    summary = {
        "protein": name,
        "frames": int(len(frames)),
        "dt_ps": rows[0].dt_ps,
        "rebuilt_pdb": str(pdb),
        "rebuilt_xtc": str(xtc),
        "round_trip_heavy_atom_rmsd_A": {
            "median": float(np.median(per_frame)),
            "max": float(per_frame.max()),
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(
        f"[3/3] rebuilt all frames from frames + torsions -> {xtc} (heavy-atom RMSD to MD: "
        f"median {summary['round_trip_heavy_atom_rmsd_A']['median']:.3f} A)"
    )
    return summary
