"""How much does a trained denoiser add to its Gaussian posterior base? (model diagnostics)

The denoiser predicts each clean frame as an update of the Gaussian posterior mean of (its noisy
state, the previous frame); an untrained network returns that base. For real MD windows of the
validation split this script reports

1. the loss terms of the trained model next to those of the untrained one (= the base), per dt;
2. for one validation protein, the CA error (A) of the noisy state, the base and the prediction
   vs the true next MD frame over noise levels, and the CA-CA distance range of each.

A model whose translation loss and CA errors stay at the base's has not learned the correlated,
chain-preserving part of a step, and sampling then gives near-independent per-residue moves
(chain breaks). Session 2 found exactly that for the first GPU-trained model.

    python benchmarks/denoiser_diagnostic.py runs/small/model.safetensors --data data/corpus \
        --md corpus/md/2wqg
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mdtraj
import torch

from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.modelfile import load_model
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure import geometry
from starmd.structure.io import load_structure
from starmd.structure.rigid import Rigid
from starmd.train.module import losses_vs_base


def loss_table(loaded, data_dir: str, dts: list[float], samples: int) -> list[str]:
    lines = ["| dt (ps) | model | " + " | ".join(TERMS) + " |", "|---|---|" + "---|" * len(TERMS)]
    for dt in dts:
        spec = WindowSpec(window=loaded.config.data.window, dt_ps=(dt,), crop=64)
        data = TrajectoryWindowDataset(data_dir, "val", spec, samples_per_epoch=samples, seed=1)
        batch = collate_windows([data[i] for i in range(samples)])
        for label, terms in losses_vs_base(loaded, batch).items():
            values = " | ".join(f"{terms[t]:.4g}" for t in TERMS)
            lines.append(f"| {dt:g} | {'base only' if label == 'base' else label} | {values} |")
    return lines


TERMS = ("trans", "rot", "torsion", "backbone_fape", "distance", "loss")


def one_step_table(loaded, md_dir: Path, taus: list[float]) -> list[str]:
    name = md_dir.name
    protein, positions = load_structure(md_dir / f"{name}.pdb")
    md = mdtraj.load(md_dir / f"{name}_prod_R1_fit.xtc", top=md_dir / f"{name}.pdb")
    dt = float(md.time[1] - md.time[0]) if md.n_frames > 1 else 10.0
    inputs = protein_input(protein, positions, dt, 1)
    settings = RolloutSettings(steps=2)
    rollout = Rollout(loaded, inputs, settings, seed=0)
    rollout.push_clean(0, inputs.init_frames, inputs.init_torsions)
    with tempfile.TemporaryDirectory() as tmp:
        md[0].save_pdb(f"{tmp}/next.pdb")
        _, next_positions = load_structure(f"{tmp}/next.pdb")
    frames = geometry.atoms_to_frames(torch.from_numpy(next_positions).double())
    true = Rigid(frames.rots.float()[None], frames.trans.float()[None] - inputs.centre[:, None])
    generator = torch.Generator().manual_seed(0)

    def rms(x: Rigid) -> float:
        return float(((x.trans - true.trans).norm(dim=-1) ** 2).mean().sqrt())

    def ca_range(x: Rigid) -> str:
        d = (x.trans[0, 1:] - x.trans[0, :-1]).norm(dim=-1)[
            torch.from_numpy(protein.linked_prev[1:])
        ]
        return f"{float(d.min()):.2f}-{float(d.max()):.2f}"

    lines = [
        f"{name}: true next frame ({dt:g} ps later) is {rms(inputs.init_frames):.2f} A "
        f"(CA RMS) from frame 0; CA-CA {ca_range(true)} A",
        "",
        "| tau | noisy CA err | base CA err | prediction CA err | base CA-CA | prediction CA-CA |",
        "|---|---|---|---|---|---|",
    ]
    for tau in taus:
        noisy = rollout.diffuser.forward_marginal(
            true, inputs.init_torsions, inputs.cond.torsion_mask, tau, generator
        )
        base = rollout.reference_base(noisy.frames, tau)
        tokens = rollout._tokens(noisy.frames, noisy.torsions, tau, 1, reference=base)
        with torch.inference_mode():
            pred = rollout.model.denoise(rollout.cache, inputs.cond, tokens).frames[:, 0]
        lines.append(
            f"| {tau:g} | {rms(noisy.frames):.2f} | {rms(base):.2f} | {rms(pred):.2f} | "
            f"{ca_range(base)} | {ca_range(pred)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="data/corpus", help="prepared dataset (val split)")
    parser.add_argument("--md", default="corpus/md/2wqg", help="ATLAS folder of one protein")
    parser.add_argument("--dt", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model)
    print("\n".join(loss_table(loaded, args.data, args.dt, args.samples)))
    print()
    print("\n".join(one_step_table(loaded, Path(args.md), [0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0])))


if __name__ == "__main__":
    main()
