"""Helper for ``test_training.py``'s DDP test (a script, not a test module): trains one step with
2 CPU processes (DDP, gloo) and saves, per rank, the batch it saw, the weights before the step
and the synchronized gradients of that step.

    python tests/train/ddp_gradients.py DATA_DIR OUT_DIR [KEY=VALUE ...]

Lightning's DDP launcher re-runs this script once per extra rank, so it must be a file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from starmd.modelfile.config import TrainConfig
from starmd.train.run import train

DDP = [
    "trainer.devices=2",
    "trainer.strategy=ddp",
    "trainer.accelerator=cpu",
    "trainer.max_steps=1",
    "trainer.limit_val_batches=0",
]


class RecordFirstStep(L.Callback):
    """Saves ``OUT_DIR/rank{r}.pt``: {"batch", "weights", "grads"} of global step 0."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.seen: dict = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            self.seen["batch"] = {k: v.clone() for k, v in batch.items()}
            self.seen["weights"] = {k: v.clone() for k, v in module.model.state_dict().items()}

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if trainer.global_step == 0:
            self.seen["grads"] = {
                name: p.grad.clone()
                for name, p in module.model.named_parameters()
                if p.grad is not None
            }
            torch.save(self.seen, self.out_dir / f"rank{trainer.global_rank}.pt")


def main() -> None:
    data_dir, out_dir, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    config = TrainConfig.from_yaml(None, overrides + DDP)
    out_dir.mkdir(parents=True, exist_ok=True)
    train(data_dir, out_dir / "run", config, progress=False, callbacks=[RecordFirstStep(out_dir)])


if __name__ == "__main__":
    main()
