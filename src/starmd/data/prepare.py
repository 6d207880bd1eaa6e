"""``starmd prepare``: MD trajectories -> frames + torsions dataset with a protein-level split."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from starmd import __version__
from starmd.data import store
from starmd.data.sources import TrajectorySource, discover
from starmd.errors import StarmdInputError, located
from starmd.outputs import naming_file, output_lock
from starmd.structure import geometry
from starmd.structure.io import iter_trajectory, load_structure, write_atomically
from starmd.structure.protein import Protein

SPLITS = ("train", "val", "test")


def hash_split(name: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic split of a protein by the SHA-256 of its name (stable across machines)."""
    u = int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) / 16**12
    edges = np.cumsum(fractions) / np.sum(fractions)
    return SPLITS[int(np.searchsorted(edges, u, side="right"))]


def read_split_files(paths: Sequence[str | Path]) -> dict[str, str]:
    """Protein name -> split from CSV files.

    A file with ``name`` and ``split`` columns is taken as is; a file with only a ``name``
    column (MDGen's ``atlas_train.csv`` style) takes its split from its file name
    (``*train*``, ``*val*``, ``*test*``).
    """
    mapping: dict[str, str] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise StarmdInputError(located(path, "split file not found"))
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "name" not in reader.fieldnames:
                raise StarmdInputError(located(path, "split file needs a 'name' column"))
            implied = next((s for s in SPLITS if s in path.stem.lower()), None)
            for row in reader:
                split = row.get("split") or implied
                if split not in SPLITS:
                    raise StarmdInputError(
                        located(path, f"no valid split for {row['name']!r} (use {SPLITS})")
                    )
                mapping[row["name"]] = split
    return mapping


def positions_to_frames_torsions(
    positions: np.ndarray, protein: Protein
) -> tuple[np.ndarray, np.ndarray]:
    """``(T, L, 15, 3)`` Angstrom -> frames ``(T, L, 7)`` and torsions ``(T, L, 7)``, float32."""
    pos = torch.from_numpy(positions)
    frames = geometry.atoms_to_frames(pos).to_tensor_7()
    torsions, _ = geometry.atoms_to_torsions(
        pos,
        torch.from_numpy(protein.aatype),
        torch.from_numpy(protein.atom_mask),
        torch.from_numpy(protein.linked_prev),
    )
    return frames.numpy().astype(np.float32), torsions.numpy().astype(np.float32)


def _protein_arrays(protein: Protein, init_positions: np.ndarray) -> dict[str, np.ndarray]:
    frames, torsions = positions_to_frames_torsions(init_positions[None], protein)
    mask = geometry.torsion_mask(
        torch.from_numpy(protein.aatype),
        torch.from_numpy(protein.atom_mask),
        torch.from_numpy(protein.linked_prev),
    ).numpy()
    return {
        "aatype": protein.aatype.astype(np.int8),
        "residue_index": protein.segment_index.astype(np.int32),
        "chain_index": protein.chain_index.astype(np.int16),
        "atom_mask": protein.atom_mask,
        "torsion_mask": mask,
        "linked_prev": protein.linked_prev,
        "init_frames": frames[0],
        "init_torsions": torsions[0],
    }


def _dt_from_times(times: np.ndarray) -> float | None:
    if len(times) < 2:
        return None
    steps = np.diff(times)
    if np.all(steps > 0) and np.allclose(steps, steps[0], rtol=1e-3):
        return float(steps[0])
    return None


def prepare(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    split_files: Sequence[str | Path] = (),
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    dt_ps: float | None = None,
    stride: int = 1,
    overwrite: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> list[store.IndexRow]:
    """Convert every trajectory under ``input_path`` into a dataset in ``out_dir``.

    Args:
        input_path: ATLAS-layout folder or a folder of protein folders (see ``sources``).
        out_dir: output folder; receives ``dataset.zarr``, ``index.csv``, ``prepare.json``.
        split_files: CSVs assigning proteins to train/val/test; proteins not listed get the
            split ``none`` (kept, never sampled). Without files: deterministic hash split.
        fractions: train/val/test fractions of the hash split.
        dt_ps: saved time step; overrides the files' time stamps and metadata.
        stride: keep every ``stride``-th frame.
        overwrite: replace an existing dataset.
        progress: ``progress(description, n_frames_done)`` callback.

    ``{out_dir}/prepare.lock`` is held while the dataset is written: a second prepare into the
    same folder is refused. See :func:`_write_dataset` for what an interruption leaves.

    Returns:
        The index rows written.
    """
    out_dir = Path(out_dir)
    sources = discover(input_path)
    if stride < 1:
        raise StarmdInputError(f"--stride must be >= 1, got {stride}")
    if dt_ps is not None and dt_ps <= 0:
        raise StarmdInputError(f"--dt-ps must be > 0, got {dt_ps}")
    final = store.store_path(out_dir)
    if final.exists() and not overwrite:
        raise StarmdInputError(located(final, "exists; pass --overwrite to replace it"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".starmd-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise StarmdInputError(located(out_dir, f"cannot write output ({exc.strerror})")) from exc
    assigned = read_split_files(split_files) if split_files else {}
    split_of = {
        s.name: assigned.get(s.name, "none") if split_files else hash_split(s.name, fractions)
        for s in sources
    }
    provenance = {
        "starmd_version": __version__,
        "input": str(input_path),
        "split_files": [str(p) for p in split_files],
        "fractions": list(fractions) if not split_files else None,
        "stride": stride,
        "dt_ps_override": dt_ps,
        "sources": [
            {
                "name": s.name,
                "replica": s.replica,
                "topology": str(s.topology),
                "trajectory": str(s.trajectory),
            }
            for s in sources
        ],
    }
    with output_lock(out_dir / "prepare.lock", "prepare"):
        return _write_dataset(out_dir, sources, split_of, dt_ps, stride, provenance, progress)


def _write_dataset(
    out_dir: Path,
    sources: Sequence[TrajectorySource],
    split_of: dict[str, str],
    dt_ps: float | None,
    stride: int,
    provenance: dict,
    progress: Callable[[str, int], None] | None,
) -> list[store.IndexRow]:
    """Convert ``sources`` into ``dataset.zarr.partial``, then commit it as ``dataset.zarr``.

    The rename of the finished store is the commit: it comes after ``index.csv`` and
    ``prepare.json``, and the dataset it replaces is removed just before them, so an
    interrupted run leaves the earlier dataset whole, or no dataset (``read_index`` refuses a
    folder without ``dataset.zarr``), never a mix. A failed or interrupted conversion removes
    its partial store (the space it took is free again); a store left by a killed run is
    removed by the next one.
    """
    import zarr

    final = store.store_path(out_dir)
    partial = out_dir / "dataset.zarr.partial"
    if partial.exists():
        shutil.rmtree(partial)
    t0 = time.time()
    try:
        group = zarr.open_group(str(partial), mode="w")
        group.attrs.update({"format": store.FORMAT, "starmd_version": __version__})
        rows = _convert_sources(group, sources, split_of, dt_ps, stride, progress)
        if not (partial / "zarr.json").is_file():  # zarr recreates the folders it writes into
            raise FileNotFoundError(
                errno.ENOENT, "removed while prepare was writing it", str(partial)
            )
        provenance = {**provenance, "wall_seconds": round(time.time() - t0, 2)}
        if final.exists():
            shutil.rmtree(final)
        store.write_index(out_dir / "index.csv", rows)
        write_atomically(out_dir / "prepare.json", json.dumps(provenance, indent=2))
        partial.rename(final)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError):
            raise naming_file(exc, partial) from None
        raise
    return rows


def _convert_sources(
    group,
    sources: Sequence[TrajectorySource],
    split_of: dict[str, str],
    dt_ps: float | None,
    stride: int,
    progress: Callable[[str, int], None] | None,
) -> list[store.IndexRow]:
    rows: list[store.IndexRow] = []
    proteins: dict[str, Protein] = {}
    for source in sources:
        split = split_of[source.name]
        if source.name not in proteins:
            protein, init_positions = load_structure(source.topology)
            store.write_protein(
                group,
                source.name,
                _protein_arrays(protein, init_positions),
                {
                    "sequence": protein.sequence,
                    "chain_ids": list(protein.chain_ids),
                    "residue_numbers": protein.residue_numbers.tolist(),
                    "source": str(source.topology),
                    "split": split,
                },
            )
            proteins[source.name] = protein
        rows.append(
            _convert_replica(group, source, proteins[source.name], dt_ps, stride, split, progress)
        )
    return rows


def _convert_replica(
    group,
    source: TrajectorySource,
    protein: Protein,
    dt_override: float | None,
    stride: int,
    split: str,
    progress: Callable[[str, int], None] | None,
) -> store.IndexRow:
    frames_arr = torsions_arr = None
    n_frames, offset, stamps = 0, 0, []
    for chunk_protein, positions, times in iter_trajectory(source.topology, source.trajectory):
        if frames_arr is None:
            if chunk_protein.n_residues != protein.n_residues:
                raise StarmdInputError(located(source.trajectory, "topology changed between files"))
            frames_arr, torsions_arr = store.create_replica(
                group,
                source.name,
                source.replica,
                protein.n_residues,
                {"source": str(source.trajectory)},
            )
        keep = np.arange(len(positions))[(np.arange(len(positions)) + offset) % stride == 0]
        offset += len(positions)
        if len(stamps) < 3:
            stamps.extend(times[keep][: 3 - len(stamps)].tolist())
        if len(keep) == 0:
            continue
        frames, torsions = positions_to_frames_torsions(positions[keep], protein)
        frames_arr.append(frames, axis=0)
        torsions_arr.append(torsions, axis=0)
        n_frames += len(keep)
        if progress:
            progress(f"{source.name} R{source.replica}", n_frames)
    stamped = _dt_from_times(np.array(stamps))
    if dt_override is not None:
        dt = dt_override * stride
    else:
        dt = stamped or (source.dt_ps * stride if source.dt_ps else None)
    if dt is None:
        raise StarmdInputError(
            located(source.trajectory, "time step unknown (no time stamps); pass --dt-ps")
        )
    group[f"proteins/{source.name}/R{source.replica}"].attrs["dt_ps"] = dt
    return store.IndexRow(source.name, source.replica, n_frames, protein.n_residues, dt, split)
