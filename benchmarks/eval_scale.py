"""Memory and time of ``starmd.evaluate`` on a large synthetic protein.

Builds a ~1,000-residue heavy-atom "protein" by tiling villin headpiece (OpenMM's test.pdb,
29 copies as separate chains on a grid), writes a reference replica and a generated trajectory
of ``--frames`` frames each (synthetic breathing motion plus noise), runs the full evaluation
(all metric families, plots off) in this process and reports wall time and peak resident
memory. The point: validity and contact checks use KD-tree neighbour search and stream over
frames, so memory stays linear in frames x atoms (an all-pairs clash check at this size would
need hundreds of GiB).

    python benchmarks/eval_scale.py          # 1,015 residues x 10,000 frames (~35 min, 9.3 GiB)
    python benchmarks/eval_scale.py --quick  # 140 residues x 1,000 frames (~1 min)
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm.app

VILLIN = Path(openmm.app.__file__).parent / "data" / "test.pdb"


def tiled_protein(copies: int) -> md.Trajectory:
    """``copies`` villin chains (heavy atoms) on a 45 A grid, one mdtraj frame (nm)."""
    villin = md.load_pdb(str(VILLIN))
    villin = villin.atom_slice(villin.topology.select("protein and not element H"))
    villin.unitcell_vectors = None
    villin.xyz -= villin.xyz.mean(axis=1, keepdims=True)
    side = int(np.ceil(copies ** (1 / 3)))
    pieces = []
    for k in range(copies):
        piece = villin[:]
        offset = np.array([k % side, (k // side) % side, k // side**2]) * 4.5  # nm
        piece.xyz = piece.xyz + offset
        pieces.append(piece)
    protein = pieces[0]
    for piece in pieces[1:]:
        protein = protein.stack(piece)
    return protein


def write_trajectory(structure: md.Trajectory, path: Path, frames: int, seed: int, dt_ps: float):
    """Synthetic motion: slow two-state breathing (+-3%) plus smooth noise, written in blocks."""
    rng = np.random.default_rng(seed)
    x0 = structure.xyz[0].astype(np.float64)
    centre = x0.mean(axis=0)
    residue = np.array([a.residue.index for a in structure.topology.atoms])
    state = 1.0
    with md.formats.XTCTrajectoryFile(str(path), "w") as handle:
        for start in range(0, frames, 500):
            n = min(500, frames - start)
            block = np.empty((n, *x0.shape), dtype=np.float32)
            for t in range(n):
                if rng.random() < 0.02:
                    state = -state
                scale = 1.0 + 0.03 * state + 0.005 * rng.standard_normal()
                noise = 0.008 * rng.standard_normal((structure.topology.n_residues, 3))
                block[t] = centre + (x0 - centre) * scale + noise[residue]
            handle.write(block, time=(start + np.arange(n)) * dt_ps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="140 residues x 1,000 frames")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--copies", type=int, default=None, help="villin copies (35 residues each)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    copies = args.copies or (4 if args.quick else 29)
    frames = args.frames or (1000 if args.quick else 10000)

    from starmd.evaluate import evaluate

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        protein = tiled_protein(copies)
        for folder in ("ref", "gen"):
            (root / folder).mkdir()
            protein.save_pdb(str(root / folder / "big.pdb"))
        t0 = time.perf_counter()
        write_trajectory(protein, root / "ref" / "big_prod_R1_fit.xtc", frames, 1, 10.0)
        write_trajectory(protein, root / "gen" / "big_R1.xtc", frames, 2, 10.0)
        written = time.perf_counter() - t0
        print(
            f"protein: {protein.topology.n_residues} residues, {protein.n_atoms} heavy atoms; "
            f"{frames} frames per trajectory (written in {written:.0f} s)",
            flush=True,
        )
        t0 = time.perf_counter()
        table = evaluate(
            root / "gen", root / "ref", root / "out", baselines=("static",), plots=False
        )
        elapsed = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"evaluate: {elapsed:.0f} s, peak RSS {peak_gib:.2f} GiB (limit 24 GiB)")
    for key in ("coverage_jsd", "validity_pct", "rmsf_r", "rmwd"):
        print(f"  {key}: " + ", ".join(f"{m}={v:.3g}" for m, v in table.values[key].items()))


if __name__ == "__main__":
    main()
