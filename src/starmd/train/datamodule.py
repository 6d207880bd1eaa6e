"""The LightningDataModule over a prepared dataset (train and validation windows)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.data.store import read_index
from starmd.modelfile.config import DataSection


class WindowDataModule(L.LightningDataModule):
    """Train windows change every epoch (``set_epoch``); validation windows are fixed."""

    def __init__(self, root: str | Path, data: DataSection, seed: int = 0):
        super().__init__()
        self.root = Path(root)
        self.data = data
        self.seed = seed
        self.spec = WindowSpec(
            window=data.window,
            dt_ps=tuple(data.dt_ps),
            crop=data.crop,
            crop_mode=data.crop_mode,
            min_window=data.min_window,
            input_from_trajectory=data.input_from_trajectory,
        )
        self.train_set: TrajectoryWindowDataset | None = None
        self.val_set: TrajectoryWindowDataset | None = None

    @property
    def has_validation(self) -> bool:
        return any(r.split == "val" for r in read_index(self.root))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = TrajectoryWindowDataset(
                self.root, "train", self.spec, self.data.samples_per_epoch, self.seed
            )
        if self.val_set is None and self.has_validation:
            # validation always conditions on the input structure, as a rollout does
            val_spec = replace(self.spec, input_from_trajectory=0.0)
            self.val_set = TrajectoryWindowDataset(
                self.root, "val", val_spec, self.data.val_samples, self.seed + 1
            )

    def _loader(self, dataset: TrajectoryWindowDataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.data.batch_size,
            shuffle=False,  # windows are already random per index
            num_workers=self.data.num_workers,
            collate_fn=collate_windows,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.set_epoch(epoch)
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set) if self.val_set is not None else []
