"""Training and distillation loss of the bundled models on one fixed batch, bit for bit.

    python benchmarks/fixed_batch_loss.py [--out losses.json]

Prepares the bundled 2WQG demo MD (never trained on) into a temporary dataset, draws 4 windows
with a fixed seed, and prints every loss term of ``starmd-small`` (ordinary training loss) and
of ``starmd-small-fast`` distilled from ``starmd-small`` (distillation loss) under a fixed noise
generator, as exact hexadecimal floats: a refactor that claims to keep training unchanged must
print the same lines.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import starmd
from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.data.prepare import prepare
from starmd.modelfile import load_model, resolve_model
from starmd.train.distill import DistillModule
from starmd.train.module import StarMDModule, step_generator

DEMO = Path(starmd.__file__).parent / "assets" / "demo" / "2wqg"


def _load(name: str):
    return load_model(resolve_model(name))


def _terms(module: StarMDModule, batch: dict[str, torch.Tensor]) -> dict[str, str]:
    with torch.no_grad():
        terms = module.eval().compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu")))
    return {name: float(value).hex() for name, value in terms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    small, fast = _load("starmd-small"), _load("starmd-small-fast")
    with tempfile.TemporaryDirectory() as tmp:
        prepare(DEMO, Path(tmp) / "data", fractions=(0, 1, 0))
        spec = WindowSpec(window=small.config.data.window, dt_ps=(10.0, 50.0), crop=32)
        data = TrajectoryWindowDataset(Path(tmp) / "data", "val", spec, samples_per_epoch=4, seed=3)
        batch = collate_windows([data[i] for i in range(4)])
    train = StarMDModule(small.config)
    train.model.load_state_dict(small.model.state_dict())
    distill = DistillModule(fast.config, small.model)
    distill.model.load_state_dict(fast.model.state_dict())
    result = {"train": _terms(train, batch), "distill": _terms(distill, batch)}
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
