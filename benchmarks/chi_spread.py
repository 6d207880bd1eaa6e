"""Side-chain spread of trajectories: the median circular standard deviation of chi1 and chi2.

    python benchmarks/chi_spread.py TOPOLOGY.pdb TRAJ_R1.xtc [TRAJ_R2.xtc ...]

For every chi1 and chi2 angle of the protein (mdtraj's definitions), the circular standard
deviation ``sqrt(-2 ln R)`` (``R`` the mean resultant length) over the frames of all given
trajectories pooled, in degrees; prints the median over all those angles and their count. Run it
on an MD replica pair and on generated replicas of the same protein (``--no-polish`` so that the
side chains are the network's: the refinement never turns a side-chain torsion) to compare how
much the side chains move.
"""

from __future__ import annotations

import argparse
import json
import sys

import mdtraj
import numpy as np


def circular_sd_deg(angles: np.ndarray) -> np.ndarray:
    """Circular standard deviation (degrees) of ``angles (frames, n)`` in radians, per column."""
    resultant = np.abs(np.exp(1j * angles).mean(0))
    return np.degrees(np.sqrt(-2.0 * np.log(np.clip(resultant, 1e-12, 1.0))))


def chi_spread(topology: str, trajectories: list[str]) -> dict:
    """Median circular sd (degrees) of chi1 and chi2 over ``trajectories`` pooled."""
    traj = mdtraj.join([mdtraj.load(path, top=topology) for path in trajectories])
    _, chi1 = mdtraj.compute_chi1(traj)
    _, chi2 = mdtraj.compute_chi2(traj)
    spread = circular_sd_deg(np.concatenate([chi1, chi2], axis=1))
    if spread.size == 0:
        raise ValueError(f"{topology}: no chi1 or chi2 angle (no side chains to measure)")
    return {
        "median_chi_sd_deg": round(float(np.median(spread)), 2),
        "angles": int(spread.size),
        "frames": int(traj.n_frames),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topology")
    parser.add_argument("trajectories", nargs="+")
    args = parser.parse_args()
    try:
        report = chi_spread(args.topology, args.trajectories)
    except (OSError, ValueError, IndexError) as error:
        sys.exit("error: " + " ".join(str(error).split()))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
