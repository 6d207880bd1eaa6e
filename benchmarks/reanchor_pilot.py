"""Pilot: a rollout re-anchored now and then on one of its own earlier frames.

A rollout conditions every frame on the input structure (pair features, the elastic prior's
springs and the input as the cache's sink), and the network pulls each next frame towards that
conditioning structure (docs/ablations.md, "Where the spread goes"). Version 5 was trained with
half its windows conditioned on a random frame of their own replica instead, and pulls towards
whatever it is conditioned on. This pilot moves the conditioning: every ``EVERY`` frames the
rollout continues with ``cond.init_frames`` replaced by an earlier frame of its own (``BACK``
frames back; ``-1`` a random earlier frame; ``-2`` the input with probability 0.5, else a random
earlier frame, as in training), its cache re-encoded under the new conditioning (the input as
the sink, then the last context frames with their own contextual noise). ``0:0`` is the plain
rollout.

Network output only (no refinement, no polish), 2 replicas; printed per setting: mean C-alpha
RMSD (Kabsch) between frames ``lag`` apart, the C-alpha RMSD to the input over the last 20
frames and the C-alpha radius of gyration there, beside the same of the reference MD's first
``--frames`` frames of each replica. A pilot for a generation option, not a fidelity score.

    python benchmarks/reanchor_pilot.py --protein 2wqg --setting 0:0 --setting 20:-2
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import mdtraj
import numpy as np
import torch
from profile_step import rollout_parts

from starmd.errors import StarmdError
from starmd.sample.rollout import Rollout
from starmd.structure.rigid import Rigid
from starmd.structure.superpose import kabsch_rotations

LAGS = (1, 5, 20, 50, 100)


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """C-alpha RMSD of ``a (M, 3)`` on ``b`` after optimal superposition."""
    a, b = a - a.mean(0), b - b.mean(0)
    rotation = kabsch_rotations(a[None], b[None])[0]
    return float(np.sqrt(((a @ rotation - b) ** 2).sum(-1).mean()))


def lag_rmsd(traj: np.ndarray, lag: int) -> float:
    """Mean C-alpha RMSD between frames ``lag`` apart (at most 40 pairs, evenly spaced)."""
    starts = range(0, len(traj) - lag, max(1, (len(traj) - lag) // 40))
    return float(np.mean([kabsch_rmsd(traj[i], traj[i + lag]) for i in starts]))


def summary(trajs: list[np.ndarray], init: np.ndarray) -> str:
    lags = " ".join(f"lag{lag} {np.mean([lag_rmsd(t, lag) for t in trajs]):.2f}" for lag in LAGS)
    end = np.mean([[kabsch_rmsd(f, init) for f in t[-20:]] for t in trajs])
    tail = np.concatenate([t[-20:] for t in trajs])
    rg = np.sqrt(((tail - tail.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1)).mean()
    return f"{lags} | RMSD to input (last 20) {end:.2f} | Rg {rg:.2f}"


def rollout_ca(
    model: str,
    structure: Path,
    frames: int,
    dt: float,
    seed: int,
    every: int,
    back: int,
    step_scale: float = 1.0,
) -> np.ndarray:
    """C-alpha positions ``(2, frames, L, 3)`` of a 2-replica rollout re-anchored as asked."""
    loaded, inputs, settings, _, _ = rollout_parts(model, structure, 2, dt)
    settings = dataclasses.replace(settings, step_scale=step_scale)
    rng = np.random.default_rng(seed)
    rollout = Rollout(loaded, inputs, settings, seed=seed)
    states = rollout.states(frames)
    history: list[tuple[int, Rigid, torch.Tensor]] = []
    while (state := next(states, None)) is not None:
        t, f, x = state
        history.append((t, Rigid(f.rots.clone(), f.trans.clone()), x.clone()))
        if not every or t == 0 or t % every or t + 1 >= frames:
            continue
        anchor = max(0, t - back) if back >= 0 else int(rng.integers(0, t + 1))
        if back == -2 and rng.random() < 0.5:
            anchor = 0
        cond = dataclasses.replace(inputs.cond, init_frames=history[anchor][1])
        rollout = Rollout(loaded, dataclasses.replace(inputs, cond=cond), settings, seed=seed)
        with torch.inference_mode():
            rollout.push_clean(0, history[0][1], history[0][2])  # the input, as the sink
            for ti, fi, xi in history[max(1, t - settings.context + 1) : t]:
                rollout.push_clean(ti, fi, xi)
            rollout.stage_clean(t, f, x)
        rollout.latest = (t, f, x)
        states = rollout.states(frames)
    ca = torch.stack([h[1].trans for h in history]).numpy()  # (T, B, L, 3)
    return ca.transpose(1, 0, 2, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starmd-small")
    parser.add_argument("--md", type=Path, default=Path("corpus/md"), help="ATLAS-layout MD")
    parser.add_argument("--protein", required=True, help="protein folder name")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--dt", type=float, default=10.0, help="ps; the MD's saved interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setting", action="append", required=True, help="EVERY:BACK[:STEP_SCALE]")
    parser.add_argument(
        "--save", type=Path, default=None, help="folder for each setting's C-alpha .npy"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = args.md / args.protein
    pdb = folder / f"{args.protein}.pdb"
    top = mdtraj.load(str(pdb))
    ca = top.topology.select("name CA")
    md = [
        mdtraj.load(str(x), top=top)[: args.frames].atom_slice(ca).xyz * 10.0
        for x in sorted(folder.glob(f"{args.protein}_prod_R*_fit.xtc"))
    ]
    init = top.xyz[0, ca] * 10.0
    print(f"{'MD':>8}: {summary(md, init)}", flush=True)
    for setting in args.setting:
        every, back, *scale = setting.split(":")
        trajs = rollout_ca(
            args.model,
            pdb,
            args.frames,
            args.dt,
            args.seed,
            int(every),
            int(back),
            float(scale[0]) if scale else 1.0,
        )
        print(f"{setting:>8}: {summary(list(trajs), init)}", flush=True)
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            np.save(args.save / f"{args.protein}_{setting.replace(':', '_')}.npy", trajs)


if __name__ == "__main__":
    try:
        main()
    except (StarmdError, OSError) as exc:  # an unknown model, a missing MD folder: one line
        raise SystemExit(f"error: {exc}") from None
