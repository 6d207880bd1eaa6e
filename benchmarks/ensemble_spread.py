"""How far a model's rollout spreads, against the reference MD, per sampler setting.

A quick probe of the two fidelity rows that follow the ensemble's width: the RMSD-vs-lag gap
(``starmd evaluate``'s definition, ``evaluate.paper.rmsd_lag_curve`` / ``curve_gap``, against
the reference's replica 1) and the C-alpha RMSF, as the ratio of the medians over residues
(generated / MD) and the Pearson r of the profiles; also the RMSD at the shortest lag (one
frame) as a ratio to the MD's. It rolls out ``--replicas`` trajectories of ``--frames`` frames
at ``--dt-ps`` per protein with refinement on (polish is for written atoms only and does not
move C-alpha), takes the C-alpha as the frames' origins and superposes every frame on its
replica's first (Kabsch), as the generated XTC files are.

Each variant is a JSON object of :class:`~starmd.sample.rollout.RolloutSettings` fields
(``sampler``, ``steps``, ``schedule_rho``, ``context_noise``); the model's own defaults fill
the rest. A probe to choose what to score with ``starmd fidelity``, on validation proteins
only: one seed, no baselines, no intervals.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ensemble_spread.py starmd-small \\
        '{"default": {}, "ddpm20": {"sampler": "ddpm", "steps": 20}}' 2wqg,2k1b,2m2l
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mdtraj as md
import numpy as np
import torch

from starmd.evaluate.geometry import rmsf
from starmd.evaluate.paper import curve_gap, lag_grid, rmsd_lag_curve
from starmd.modelfile import load_model, resolve_model
from starmd.sample.generate import GenerationSettings, with_model_defaults
from starmd.sample.refine import RefineSettings
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure
from starmd.structure.superpose import superpose

ROOT = Path(__file__).resolve().parents[1]


def superpose_on_first(frames: np.ndarray) -> np.ndarray:
    """Frames ``(T, N, 3)`` superposed on the first by all atoms, as generated XTCs are."""
    return superpose(frames, frames[0], np.arange(frames.shape[1]))


def probe(loaded, md_dir: Path, name: str, variant: dict, args) -> dict[str, float]:
    top = md_dir / name / f"{name}.pdb"
    reference = md.load(str(md_dir / name / f"{name}_prod_R1_fit.xtc"), top=str(top))
    md_ca = reference.xyz[:, reference.topology.select("name CA")] * 10.0
    defaults = with_model_defaults(GenerationSettings(frames=2, dt_ps=args.dt_ps), loaded.config)
    settings = RolloutSettings(
        steps=variant.get("steps", defaults.steps),
        sampler=variant.get("sampler", defaults.sampler),
        schedule_rho=variant.get("schedule_rho", defaults.schedule_rho),
        context_noise=variant.get("context_noise"),
        refine=RefineSettings(),
    )
    protein, positions = load_structure(top)
    inputs = protein_input(protein, positions, args.dt_ps, args.replicas)
    rollout = Rollout(loaded, inputs, settings, seed=args.seed)
    trans = np.stack([f.trans.numpy() for _, f, _ in rollout.states(args.frames)], axis=1)
    generated = [superpose_on_first(trans[r]) for r in range(args.replicas)]
    n = min(args.frames, len(md_ca))
    lags = lag_grid(n)
    md_curve = rmsd_lag_curve([md_ca[:n]], lags)
    curve = rmsd_lag_curve(generated, lags)
    md_rmsf, gen_rmsf = rmsf(superpose_on_first(md_ca)), rmsf(np.concatenate(generated))
    return {
        "rmsd_lag_gap": curve_gap(curve, md_curve),
        "rmsf_ratio": float(np.median(gen_rmsf) / np.median(md_rmsf)),
        "rmsf_r": float(np.corrcoef(gen_rmsf, md_rmsf)[0, 1]),
        "lag1_ratio": float(curve[0] / md_curve[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="bundled name or model file")
    parser.add_argument("variants", help='JSON: {"label": {RolloutSettings fields}, ...}')
    parser.add_argument("proteins", help="comma-separated corpus names")
    parser.add_argument("--md-dir", type=Path, default=ROOT / "corpus" / "md")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--dt-ps", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(resolve_model(args.model), torch.device("cpu"))
    for label, variant in json.loads(args.variants).items():
        rows = []
        for name in args.proteins.split(","):
            rows.append(probe(loaded, args.md_dir, name, variant, args))
            print(f"  {label} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()))
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"{label}: mean " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()), flush=True)


if __name__ == "__main__":
    main()
