"""Share of the rollout refinement in a frame's time, measured in one process.

    python benchmarks/refine_cost.py [--model starmd-small-fast]
        [--structure corpus/md/2wqg/2wqg.pdb] [--frames 31] [--replicas 1]

Runs a refined rollout (``RolloutSettings.refine``) at the model's default sampling settings on
one CPU thread and prints, per frame, the whole step, the refinement (``Rollout.refine_s``) and
the rest (denoising and caching). Both come from the same frames, so their ratio holds on a
loaded machine even where the absolute times do not.
"""

from __future__ import annotations

import argparse
import time

import torch

from starmd.modelfile import load_model, resolve_model
from starmd.sample.generate import GenerationSettings, with_model_defaults
from starmd.sample.refine import RefineSettings
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starmd-small-fast")
    parser.add_argument("--structure", default="corpus/md/2wqg/2wqg.pdb")
    parser.add_argument("--frames", type=int, default=31)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(resolve_model(args.model))
    defaults = with_model_defaults(GenerationSettings(frames=args.frames), loaded.config)
    protein, positions = load_structure(args.structure)
    inputs = protein_input(protein, positions, defaults.dt_ps, args.replicas)
    settings = RolloutSettings(
        steps=defaults.steps, sampler=defaults.sampler, refine=RefineSettings()
    )
    rollout = Rollout(loaded, inputs, settings, seed=0)
    states = rollout.states(args.frames)
    next(states)  # frame 0 is the input
    start = time.perf_counter()
    for _ in states:
        pass
    n = args.frames - 1
    total, refine = (time.perf_counter() - start) / n, rollout.refine_s / n
    print(
        f"{args.model}, {protein.n_residues} residues x {args.replicas}: per frame "
        f"{1000 * total:.1f} ms, refinement {1000 * refine:.1f} ms ({100 * refine / total:.0f}%), "
        f"denoising and caching {1000 * (total - refine):.1f} ms"
    )


if __name__ == "__main__":
    main()
