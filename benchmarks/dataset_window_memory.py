"""Peak memory of reading training windows from a prepared dataset larger than 1 GB.

Builds a synthetic dataset in the real on-disk format (random-walk frames and torsions of one
protein, float32, incompressible enough that the store is > 1 GB), then reads random windows in a
fresh process and reports that process's peak RSS next to the dataset's size. A window read
touches only the chunks it needs, so peak memory stays far below the dataset size.

    python benchmarks/dataset_window_memory.py --root /tmp/starmd_big --frames 50000 --residues 400
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build(root: Path, frames: int, residues: int, seed: int = 0) -> float:
    import zarr

    from starmd.data import store

    rng = np.random.default_rng(seed)
    group = zarr.open_group(str(store.store_path(root)), mode="w")
    group.attrs.update({"format": store.FORMAT})
    per_residue = {
        "aatype": rng.integers(0, 20, residues).astype(np.int8),
        "residue_index": np.arange(residues, dtype=np.int32),
        "chain_index": np.zeros(residues, np.int16),
        "atom_mask": np.ones((residues, 15), bool),
        "torsion_mask": np.ones((residues, 7), bool),
        "linked_prev": np.ones(residues, bool),
        "init_frames": np.tile(np.array([1, 0, 0, 0, 0, 0, 0], np.float32), (residues, 1)),
        "init_torsions": np.zeros((residues, 7), np.float32),
    }
    store.write_protein(group, "synthetic", per_residue, {"split": "train"})
    frames_arr, torsions_arr = store.create_replica(
        group, "synthetic", 1, residues, {"dt_ps": 10.0}
    )
    block = 2000
    state = rng.normal(size=(residues, 7)).astype(np.float32)
    for start in range(0, frames, block):
        n = min(block, frames - start)
        walk = state + np.cumsum(rng.normal(0, 0.1, (n, residues, 7)), 0).astype(np.float32)
        state = walk[-1]
        frames_arr.append(walk, axis=0)
        torsions_arr.append(walk, axis=0)
    group["proteins/synthetic/R1"].attrs["dt_ps"] = 10.0
    store.write_index(
        root / "index.csv", [store.IndexRow("synthetic", 1, frames, residues, 10.0, "train")]
    )
    return sum(p.stat().st_size for p in store.store_path(root).rglob("*") if p.is_file()) / 1e9


def read_windows(root: Path, windows: int) -> dict:
    from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ds = TrajectoryWindowDataset(
        root,
        "train",
        WindowSpec(window=8, dt_ps=(10.0, 100.0, 1000.0), crop=256),
        samples_per_epoch=windows,
    )
    t0 = time.perf_counter()
    for i in range(windows):
        item = ds[i]
        assert item["frames"].shape[0] == 8
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "windows": windows,
        "ms_per_window": 1000 * elapsed / windows,
        "peak_rss_mb": peak,
        "rss_before_reading_mb": base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/starmd_window_bench"))
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--residues", type=int, default=400)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(read_windows(args.root, args.windows)))
        return
    if not (args.root / "index.csv").exists():
        t0 = time.time()
        size_gb = build(args.root, args.frames, args.residues)
        print(f"built {size_gb:.2f} GB in {time.time() - t0:.0f} s", file=sys.stderr)
    from starmd.data import store

    size_gb = (
        sum(p.stat().st_size for p in store.store_path(args.root).rglob("*") if p.is_file()) / 1e9
    )
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--root",
            str(args.root),
            "--windows",
            str(args.windows),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["dataset_gb"] = round(size_gb, 2)
    print("| dataset on disk | windows read | ms / window | peak RSS of reader |")
    print("|---|---|---|---|")
    print(
        f"| {result['dataset_gb']} GB | {result['windows']} (8 frames, crop 256) | "
        f"{result['ms_per_window']:.1f} | {result['peak_rss_mb']:.0f} MB "
        f"({result['rss_before_reading_mb']:.0f} MB after imports) |"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
