"""Training windows read lazily from a prepared dataset.

A sample is a window of ``window`` frames of one replica, taken every ``stride`` saved frames,
where the stride is drawn per sample from a set of physical time steps (continuous-time
conditioning: the model sees ``dt_ps``), with a random crop of at most ``crop`` residues
(contiguous segment or spatial neighbourhood). Only the window's chunks are read from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from starmd.data import store
from starmd.errors import StarmdInputError, located

PROTEIN_KEYS = (
    "aatype",
    "residue_index",
    "chain_index",
    "atom_mask",
    "torsion_mask",
    "init_frames",
    "init_torsions",
)


@dataclass(frozen=True)
class WindowSpec:
    """How windows are drawn.

    Attributes:
        window: frames per window (K).
        min_window: where a replica is too short for ``window`` frames at some dt, use the
            longest window of at least this many frames that fits (None: ``window``, i.e. skip
            that dt). Lets short replicas teach long time steps; a batch is cut to its shortest
            window (:func:`collate_windows`).
        dt_ps: candidate physical time steps between window frames; each must be a multiple of
            a replica's saved interval to be usable for it (others are skipped for it).
        crop: maximum residues per sample (None: whole protein).
        crop_mode: ``"contiguous"`` or ``"spatial"`` (nearest residues to a random centre).
        input_from_trajectory: probability that a window's conditioning structure
            (``init_frames``, ``init_torsions``) is a random frame of the same replica outside
            the window instead of the prepared input structure: the input then stands for one
            member of the ensemble rather than the place the trajectory started from (a lever
            against the pull towards the input, docs/ablations.md). 0 (default): always the
            input structure, and no extra random draw (windows as before).
    """

    window: int = 8
    dt_ps: tuple[float, ...] = (10.0, 20.0, 50.0, 100.0)
    crop: int | None = 128
    crop_mode: str = "contiguous"
    min_window: int | None = None
    input_from_trajectory: float = 0.0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise StarmdInputError(f"window must be >= 1, got {self.window}")
        if self.min_window is not None and not 2 <= self.min_window <= self.window:
            raise StarmdInputError(
                f"min_window must be between 2 and window ({self.window}), got {self.min_window}"
            )
        if self.crop_mode not in ("contiguous", "spatial"):
            raise StarmdInputError(f"crop_mode must be contiguous or spatial, got {self.crop_mode}")
        if not 0.0 <= self.input_from_trajectory <= 1.0:
            raise StarmdInputError(
                f"input_from_trajectory is a probability, got {self.input_from_trajectory}"
            )

    def frames_for(self, n_frames: int, stride: int) -> int:
        """Window length for a replica of ``n_frames`` at ``stride`` (0: none fits)."""
        fits = (n_frames - 1) // stride + 1
        shortest = self.window if self.min_window is None else self.min_window
        return min(self.window, fits) if fits >= shortest else 0


class TrajectoryWindowDataset(Dataset):
    """Random windows of a split of a prepared dataset.

    Each index maps deterministically (through ``seed``) to a replica, a time step, a start frame
    and a crop, so a run is reproducible and workers need no shared state. Replicas are drawn in
    proportion to their number of usable windows.

    Items (a dict of tensors, ``L'`` = cropped length): ``aatype (L')``, ``residue_index (L')``,
    ``chain_index (L')``, ``residue_mask (L')``, ``atom_mask (L', 15)``, ``torsion_mask (L', 7)``,
    ``init_frames (L', 7)``, ``init_torsions (L', 7)``, ``frames (K, L', 7)``,
    ``torsions (K, L', 7)``, ``time_ps (K,)`` (from the window start), ``dt_ps ()``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str] = "train",
        spec: WindowSpec = WindowSpec(),
        samples_per_epoch: int = 1000,
        seed: int = 0,
    ):
        self.root = Path(root)
        self.spec = spec
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.epoch = 0
        splits = {split} if isinstance(split, str) else set(split)
        rows = [r for r in store.read_index(root) if r.split in splits]
        # (replica, stride in frames, window length)
        self.choices: list[tuple[store.IndexRow, int, int]] = []
        weights = []
        for row in rows:
            for dt in spec.dt_ps:
                ratio = dt / row.dt_ps
                stride = int(round(ratio))
                if stride < 1 or abs(ratio - stride) > 1e-6:
                    continue
                length = spec.frames_for(row.frames, stride)
                if length:
                    self.choices.append((row, stride, length))
                    weights.append(row.frames - (length - 1) * stride)
        if not self.choices:
            raise StarmdInputError(
                located(
                    root,
                    f"no {sorted(splits)} replica is long enough for windows of "
                    f"{spec.window} frames at dt {spec.dt_ps} ps",
                )
            )
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self._group = None

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw different windows in each epoch (same sequence for the same seed and epoch)."""
        self.epoch = epoch

    @property
    def group(self):
        # opened lazily so that each DataLoader worker opens its own handle
        if self._group is None:
            self._group = store.open_store(self.root)
        return self._group

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        row, stride, length = self.choices[rng.choice(len(self.choices), p=self.weights)]
        return self.window(row.name, row.replica, stride, rng, length=length)

    def _corrupt(self, problem: str) -> StarmdInputError:
        return StarmdInputError(
            located(
                store.store_path(self.root),
                f"corrupt dataset: {problem} (a chunk missing or damaged); rerun starmd prepare",
            )
        )

    def window(
        self,
        name: str,
        replica: int,
        stride: int,
        rng: np.random.Generator,
        start: int | None = None,
        length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """One window of ``length`` (default ``spec.window``) frames of ``name`` R``replica`` at
        ``stride`` frames (random start unless given)."""
        where = f"proteins/{name}/R{replica}"
        try:
            protein = self.group[f"proteins/{name}"]
            traj = protein[f"R{replica}"]
            n_frames = traj["frames"].shape[0]
            length = self.spec.window if length is None else length
            span = (length - 1) * stride + 1
            if start is None:
                start = int(rng.integers(0, n_frames - span + 1))
            time_slice = slice(start, start + span, stride)
            frames = traj["frames"][time_slice]
            torsions = traj["torsions"][time_slice]
            per_residue = {k: protein[k][...] for k in PROTEIN_KEYS}
            other = self._input_frame(n_frames, time_slice, rng)
            if other is not None:
                per_residue["init_frames"] = traj["frames"][other]
                per_residue["init_torsions"] = traj["torsions"][other]
        except Exception as exc:  # zarr and its codecs raise many types on damaged stores
            raise self._corrupt(f"{where} unreadable ({exc})") from exc
        # zarr reads a missing chunk as zeros: no rotation has a zero quaternion
        if not np.allclose(np.linalg.norm(frames[..., :4], axis=-1), 1.0, atol=1e-3):
            raise self._corrupt(
                f"{where} frames {start}-{start + span - 1} are not unit quaternions"
            )
        crop = self._crop(frames, rng)
        item = {k: torch.from_numpy(np.asarray(v[crop])) for k, v in per_residue.items()}
        item["aatype"] = item["aatype"].long()
        item["residue_index"] = item["residue_index"].long()
        item["chain_index"] = item["chain_index"].long()
        item["residue_mask"] = torch.ones(len(crop), dtype=torch.bool)
        item["frames"] = torch.from_numpy(frames[:, crop])
        item["torsions"] = torch.from_numpy(torsions[:, crop])
        dt = float(traj.attrs["dt_ps"]) * stride
        item["dt_ps"] = torch.tensor(dt, dtype=torch.float32)
        item["time_ps"] = torch.arange(length, dtype=torch.float32) * dt
        return item

    def _input_frame(self, n_frames: int, window: slice, rng: np.random.Generator) -> int | None:
        """The replica frame that conditions this window instead of the input structure
        (``spec.input_from_trajectory``), or None for the input structure."""
        p = self.spec.input_from_trajectory
        if p == 0.0 or rng.random() >= p:
            return None
        outside = np.setdiff1d(np.arange(n_frames), np.arange(n_frames)[window])
        return int(rng.choice(outside)) if len(outside) else None

    def _crop(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = frames.shape[1]
        size = self.spec.crop
        if size is None or n <= size:
            return np.arange(n)
        if self.spec.crop_mode == "contiguous":
            start = int(rng.integers(0, n - size + 1))
            return np.arange(start, start + size)
        ca = frames[0, :, 4:]
        centre = int(rng.integers(0, n))
        nearest = np.argsort(np.linalg.norm(ca - ca[centre], axis=-1), kind="stable")[:size]
        return np.sort(nearest)


def collate_windows(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items, padding residues to the longest (``residue_mask`` False on padding; padded
    ``aatype`` is 20 and padded frames are identities) and cutting windows to the shortest
    (their first frames)."""
    from starmd.structure.residue_constants import UNKNOWN_AATYPE

    frames = min(len(it["time_ps"]) for it in items)
    items = [
        {k: v[:frames] if k in ("frames", "torsions", "time_ps") else v for k, v in it.items()}
        for it in items
    ]
    length = max(len(it["aatype"]) for it in items)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in items[0]}
    for it in items:
        pad = length - len(it["aatype"])
        for key, value in it.items():
            if value.dim() == 0 or key == "time_ps":
                out[key].append(value)
                continue
            res_dim = 1 if key in ("frames", "torsions") else 0
            if pad:
                shape = list(value.shape)
                shape[res_dim] = pad
                filler = torch.zeros(shape, dtype=value.dtype)
                if key == "aatype":
                    filler.fill_(UNKNOWN_AATYPE)
                if key in ("frames", "init_frames"):
                    filler[..., 0] = 1.0  # identity quaternion
                value = torch.cat([value, filler], dim=res_dim)
            out[key].append(value)
    return {k: torch.stack(v) for k, v in out.items()}
