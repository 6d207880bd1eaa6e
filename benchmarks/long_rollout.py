"""Long rollout report: health over time and CA RMSD to the initial structure (with a PNG).

    python benchmarks/long_rollout.py GEN_DIR/NAME.pdb GEN_DIR/NAME_R1.xtc --plot docs/rollout.png

Prints, for the first, middle and last tenth of the trajectory, the fraction of frames with no
CA-CA break (> 4.5 A between bonded residues) and no CA clash (< 3.0 A between non-bonded
residues), and the CA RMSD to frame 0 (after superposition) at a few times. With
``--validity-every K``, also the headline all-atom validity (``starmd evaluate``'s CA+AA check,
:mod:`starmd.evaluate.validity`) of every K-th frame of each tenth.
"""

from __future__ import annotations

import argparse
import json

import mdtraj
import numpy as np
import torch

from starmd.structure.checks import CA_BREAK_A, CA_CLASH_A, ca_health


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topology")
    parser.add_argument("trajectory")
    parser.add_argument("--plot", default=None)
    parser.add_argument(
        "--validity-every",
        type=int,
        default=0,
        help="also judge CA+AA validity on every K-th frame of each tenth (0 = off)",
    )
    args = parser.parse_args()
    traj = mdtraj.load(args.trajectory, top=args.topology)
    ca = traj.topology.select("name CA")
    xyz = traj.xyz[:, ca] * 10.0
    chain = np.array([traj.topology.atom(i).residue.chain.index for i in ca])
    linked = torch.from_numpy(np.concatenate([[False], np.diff(chain) == 0]))
    bonded = np.linalg.norm(np.diff(xyz, axis=1), axis=-1)[:, linked.numpy()[1:]]
    ok = np.zeros(traj.n_frames, dtype=bool)
    for start in range(0, traj.n_frames, 100):  # chunks: never all frames x all pairs at once
        health = ca_health(torch.from_numpy(xyz[start : start + 100]).double(), linked)
        ok[start : start + 100] = ~(
            health["nan"] | (health["breaks"] > 0) | (health["clashes"] > 0)
        ).numpy()
    rmsd = mdtraj.rmsd(traj, traj, 0, atom_indices=ca) * 10.0
    n = traj.n_frames
    tenth = max(1, n // 10)
    parts = {
        "start": slice(1, 1 + tenth),
        "middle": slice(n // 2, n // 2 + tenth),
        "end": slice(n - tenth, n),
    }
    report = {
        "frames": n,
        "time_ps": [float(traj.time[0]), float(traj.time[-1])],
        "valid_fraction": {k: float(ok[s].mean()) for k, s in parts.items()},
        "bad_bond_fraction": {
            k: float(((bonded[s] > CA_BREAK_A) | (bonded[s] < CA_CLASH_A)).mean())
            for k, s in parts.items()
        },
        "ca_rmsd_to_initial_A": {
            f"{traj.time[i]:.0f} ps": float(rmsd[i]) for i in np.linspace(0, n - 1, 6).astype(int)
        },
    }
    if args.validity_every > 0:
        report["ca_aa_valid_fraction"] = all_atom_validity(traj, parts, args.validity_every)
    print(json.dumps(report, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
        t_ns = traj.time / 1000.0
        ax[0].plot(t_ns, rmsd, lw=0.8)
        ax[0].set_ylabel("CA RMSD to frame 0 (A)")
        window = max(1, n // 50)
        # mean over the frames present in each window (no zero padding at the ends)
        kernel = np.ones(window)
        counts = np.convolve(np.ones(len(ok)), kernel, mode="same")
        ax[1].plot(t_ns, np.convolve(ok, kernel, mode="same") / counts, lw=0.8)
        ax[1].set_ylabel(f"CA-valid frames\n(running mean, {window})")
        ax[1].set_xlabel("time (ns)")
        ax[1].set_ylim(-0.05, 1.05)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


def all_atom_validity(traj: mdtraj.Trajectory, parts: dict, every: int) -> dict:
    """Per part: frames judged and the fraction CA+AA-valid (headline thresholds), with the
    fraction failing the heavy-atom clash and the Ramachandran limit."""
    from starmd.evaluate import validity

    heavy = traj.atom_slice(traj.topology.select("not element H"))
    plan = validity.plan_validity(heavy.topology)
    out = {}
    for name, part in parts.items():
        frames = np.arange(part.start, part.stop)[::every]
        checks = validity.check_validity(heavy.xyz[frames] * 10.0, plan)
        out[name] = {
            "frames": len(frames),
            "valid": float(checks["valid"].mean()),
            "aa_clash": float(checks["aa_clash"].mean()),
            "rama_over_limit": float(
                (checks["rama_outlier_fraction"] > validity.HEADLINE.rama_outlier_max).mean()
            ),
        }
    return out


if __name__ == "__main__":
    main()
