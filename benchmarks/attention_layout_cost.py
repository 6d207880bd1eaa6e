"""Time per rollout frame of one model with joint and with factorized attention, side by side.

``DenoiserConfig.attention_layout`` has no parameters, so the same weights run in both layouts;
the difference in time is what the layout costs whatever it was trained with. The two layouts
alternate for ``--rounds`` rounds (so a change of machine load hits both), each a raw rollout
(no refinement: the network's cost) of ``--frames`` frames at the model's sampling defaults;
a frame's time is the rollout time after the first frame divided by the frames after it.

    OMP_NUM_THREADS=1 python benchmarks/attention_layout_cost.py \\
        src/starmd/assets/demo/2wqg/2wqg.pdb --model starmd-small --frames 40 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch

from starmd.model import StarDenoiser
from starmd.modelfile import LoadedModel, load_model, resolve_model
from starmd.sample.generate import GenerationSettings, generate


def with_layout(loaded: LoadedModel, layout: str) -> LoadedModel:
    """``loaded`` with its attention layout set to ``layout`` (same weights)."""
    config = copy.deepcopy(loaded.config)
    config.model.overrides["attention_layout"] = layout
    model = StarDenoiser(config.denoiser(loaded.source))
    model.load_state_dict(loaded.model.state_dict())
    return LoadedModel(model.eval(), config, loaded.source)


def seconds_per_frame(structure: Path, loaded: LoadedModel, frames: int, out: Path) -> float:
    """Wall seconds per generated frame after the first (one replica, no refinement)."""
    elapsed: list[float] = []
    settings = GenerationSettings(frames=frames, refine=False)
    generate(
        structure,
        out,
        settings,
        model=loaded,
        device="cpu",
        overwrite=True,
        progress=lambda info: elapsed.append(info["elapsed_s"]),
    )
    return (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("structure", type=Path)
    parser.add_argument("--model", default="starmd-small", help="bundled name or model file")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_model(resolve_model(args.model))
    layouts = {name: with_layout(base, name) for name in ("joint", "factorized")}
    times: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for name, loaded in layouts.items():
                out = Path(work) / name
                times[name].append(seconds_per_frame(args.structure, loaded, args.frames, out))
    size = f"{args.frames} frames x {args.rounds} rounds"
    print(f"{args.structure.name}, {args.model}, {size}, 1 thread")
    print("| layout | median s/frame | all rounds (s/frame) |\n|---|---|---|")
    for name, values in times.items():
        rounds = ", ".join(f"{v:.4f}" for v in values)
        print(f"| {name} | {statistics.median(values):.4f} | {rounds} |")


if __name__ == "__main__":
    main()
