"""Training loss of model files on the same held-out windows and the same noise draws.

    python benchmarks/val_loss.py data/corpus starmd-small runs/a/model.safetensors ... \
        [--split val] [--windows 128] [--batch 4] [--seed 0]

Draws ``--windows`` windows of the prepared dataset's ``--split`` (the first model's data
settings: window length, time steps, crop; the input structure as the conditioning, no
trajectory-frame conditioning, so every model sees identical batches) and scores every model
on each batch with the same noise generator, so that the differences between models are paired
(the noise draws, which dominate a single batch's loss, cancel). Prints each model's mean loss
with a 90% bootstrap interval over batches, and its mean difference from the first model with
the fraction of batches where it is lower. A check beside the fidelity protocol (a model soup
should score at most its ingredients' loss), not a replacement for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.errors import StarmdError
from starmd.modelfile import load_model, resolve_model
from starmd.train.module import StarMDModule, step_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder written by `starmd prepare`")
    parser.add_argument("models", nargs="+", help="model files or bundled names")
    parser.add_argument("--split", default="val")
    parser.add_argument("--windows", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = [load_model(resolve_model(m)) for m in args.models]
    d = loaded[0].config.data
    spec = WindowSpec(window=d.window, dt_ps=tuple(d.dt_ps), crop=d.crop, min_window=d.min_window)
    data = TrajectoryWindowDataset(
        args.data, args.split, spec, samples_per_epoch=args.windows, seed=args.seed
    )
    modules = []
    for m in loaded:
        module = StarMDModule(m.config)
        module.model.load_state_dict(m.model.state_dict())
        modules.append(module.eval())
    losses = np.zeros((len(modules), args.windows // args.batch))
    for b in range(losses.shape[1]):
        batch = collate_windows([data[b * args.batch + i] for i in range(args.batch)])
        for j, module in enumerate(modules):
            with torch.no_grad():
                terms = module.compute_losses(
                    batch, step_generator(args.seed, b, 0, torch.device("cpu"))
                )
            losses[j, b] = float(terms["loss"])
    rng = np.random.default_rng(0)
    boot = rng.integers(0, losses.shape[1], size=(2000, losses.shape[1]))
    for name, row in zip(args.models, losses, strict=True):
        means = row[boot].mean(axis=1)
        diff = row - losses[0]
        diff_means = diff[boot].mean(axis=1)
        print(
            f"{name}: loss {row.mean():.4f} [{np.quantile(means, 0.05):.4f}, "
            f"{np.quantile(means, 0.95):.4f}]; minus the first {diff.mean():+.4f} "
            f"[{np.quantile(diff_means, 0.05):+.4f}, {np.quantile(diff_means, 0.95):+.4f}], "
            f"lower in {np.mean(diff < 0):.0%} of {losses.shape[1]} batches"
        )


if __name__ == "__main__":
    try:
        main()
    except (StarmdError, OSError) as exc:  # an unknown model, a folder not prepared: one line
        raise SystemExit(f"error: {exc}") from None
