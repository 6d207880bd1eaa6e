"""Where a denoiser puts the clean frame, from the true next MD frame at a given noise level.

Companion of ``benchmarks/step_spread.py`` (docs/ablations.md, "Where the spread goes"): with
MD's own frames as the context (as there), the true next frame is noised to diffusion time tau
and the network's clean prediction compared with it. Per tau, means over contexts and 4 noise
draws: the change of C-alpha radius of gyration (prediction minus truth) and the pull (C-alpha
RMSD to the input structure, prediction minus truth; negative = closer to the input). At small
tau an unbiased denoiser returns about the truth; a pull there is learned, not a sampler effect.

    python benchmarks/denoise_pull.py starmd-small --protein 2wqg --protein 2k1b --protein 2m2l
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from starmd.errors import StarmdInputError
from starmd.modelfile import load_model, resolve_model
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.rigid import Rigid

sys.path.insert(0, str(Path(__file__).parent))
from step_spread import (  # noqa: E402
    kabsch_rmsd,
    md_context_parser,
    md_frames,
    md_state,
    radius_of_gyration,
    replica_states,
)

TAUS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)


def protein_rows(loaded, folder: Path, args) -> dict[float, tuple[float, float]]:
    protein, init, replicas, interval = md_frames(folder)
    stride = round(args.dt / interval)
    draws = 4
    inputs = protein_input(protein, init, args.dt, draws)
    centre = inputs.centre[0].double()
    rg = {tau: [] for tau in TAUS}
    pull = {tau: [] for tau in TAUS}
    for replica in replicas:
        frames, torsions = replica_states(replica, protein)

        def frame(i: int, frames=frames, torsions=torsions) -> tuple[Rigid, torch.Tensor]:
            return md_state(frames, torsions, i, centre, draws)

        for last in range(args.context * stride, len(replica) - stride, args.every * stride):
            rollout = Rollout(loaded, inputs, RolloutSettings(), seed=last)
            rollout.push_clean(0, inputs.init_frames, inputs.init_torsions)
            t_last = last // stride
            for k in range(args.context - 1, -1, -1):
                rollout.push_clean(t_last - k, *frame(last - k * stride))
            true, true_torsions = frame(last + stride)
            true_ca = replica[last + stride, :, 1]
            generator = torch.Generator().manual_seed(last)
            for tau in TAUS:
                noisy = rollout.diffuser.forward_marginal(
                    true, true_torsions, inputs.cond.torsion_mask, tau, generator
                )
                base = rollout.reference_base(noisy.frames, tau)
                tokens = rollout._tokens(noisy.frames, noisy.torsions, tau, t_last + 1, base)
                with torch.inference_mode():
                    pred = rollout.model.denoise(rollout.cache, inputs.cond, tokens).frames[:, 0]
                for ca in pred.trans.double().numpy() + centre.numpy():
                    rg[tau].append(radius_of_gyration(ca) - radius_of_gyration(true_ca))
                    pull[tau].append(kabsch_rmsd(ca, init[:, 1]) - kabsch_rmsd(true_ca, init[:, 1]))
    return {tau: (float(np.mean(rg[tau])), float(np.mean(pull[tau]))) for tau in TAUS}


def main() -> None:
    args = md_context_parser(__doc__, every=4).parse_args()
    torch.set_num_threads(1)
    loaded = load_model(resolve_model(args.model))
    print(f"{args.model} at {args.dt:g} ps: Rg change / pull (A), prediction minus truth\n")
    print("| protein | " + " | ".join(f"tau {t:g}" for t in TAUS) + " |")
    print("|---|" + "---|" * len(TAUS))
    for name in args.protein:
        row = protein_rows(loaded, args.md / name, args)
        cells = " | ".join(f"{row[t][0]:+.3f} / {row[t][1]:+.3f}" for t in TAUS)
        print(f"| {name} | {cells} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except StarmdInputError as exc:  # a missing or unreadable protein folder: one line
        raise SystemExit(f"error: {exc}") from None
