"""The prepared dataset on disk: a zarr group of chunked, compressed arrays plus an index table.

Layout of ``DIR/dataset.zarr`` (format version in ``attrs['format']``)::

    proteins/{name}/              attrs: sequence, chain_ids, residue_numbers, source, split
        aatype (L,) int8, residue_index (L,) int32, chain_index (L,) int16,
        atom_mask (L, 15) bool, torsion_mask (L, 7) bool, linked_prev (L,) bool,
        init_frames (L, 7) float32, init_torsions (L, 7) float32
        R{i}/                     attrs: dt_ps, source trajectory
            frames (T, L, 7) float32   quaternion (w, x, y, z) + CA translation in Angstrom
            torsions (T, L, 7) float32 radians: omega, phi, psi, chi1..chi4

``DIR/index.csv`` has one row per replica: name, replica, frames, residues, dt_ps, split.
Frames are superposed on nothing in particular: they are in the trajectory's own coordinates
(ATLAS ``_fit`` trajectories are already superposed on the initial structure).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from starmd.errors import StarmdInputError, located

FORMAT = "starmd-dataset-1"
FRAME_CHUNK = 16
INDEX_COLUMNS = ("name", "replica", "frames", "residues", "dt_ps", "split")


@dataclass(frozen=True)
class IndexRow:
    name: str
    replica: int
    frames: int
    residues: int
    dt_ps: float
    split: str


def store_path(root: str | Path) -> Path:
    return Path(root) / "dataset.zarr"


def write_index(path: Path, rows: list[IndexRow]) -> None:
    from starmd.structure.io import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(INDEX_COLUMNS)
            for r in rows:
                writer.writerow([r.name, r.replica, r.frames, r.residues, f"{r.dt_ps:g}", r.split])

    atomic_write(path, write)


def read_index(root: str | Path) -> list[IndexRow]:
    """The index table of a prepared dataset.

    Raises:
        StarmdInputError: not a starmd dataset.
    """
    path = Path(root) / "index.csv"
    if not path.exists() or not store_path(root).exists():
        raise StarmdInputError(
            located(
                root,
                "not a prepared starmd dataset (index.csv/dataset.zarr missing); "
                "run `starmd prepare` first",
            )
        )
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or set(INDEX_COLUMNS) - set(reader.fieldnames):
            raise StarmdInputError(located(path, f"index must have columns {INDEX_COLUMNS}"))
        return [
            IndexRow(
                r["name"],
                int(r["replica"]),
                int(r["frames"]),
                int(r["residues"]),
                float(r["dt_ps"]),
                r["split"],
            )
            for r in reader
        ]


def open_store(root: str | Path, mode: str = "r"):
    """Open the zarr group (``mode`` 'r' to read, 'a' to add)."""
    import zarr

    path = store_path(root)
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as exc:
        raise StarmdInputError(located(path, f"cannot open dataset ({exc})")) from exc
    if mode == "r" and group.attrs.get("format") != FORMAT:
        raise StarmdInputError(located(path, f"unknown dataset format {group.attrs.get('format')}"))
    return group


def write_protein(group, name: str, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Create ``proteins/{name}`` with its per-residue arrays (overwriting an earlier one)."""
    sub = group.require_group("proteins").create_group(name, overwrite=True)
    for key, value in arrays.items():
        sub.create_array(key, data=np.ascontiguousarray(value))
    sub.attrs.update(attrs)


def create_replica(group, name: str, replica: int, n_residues: int, attrs: dict):
    """Empty, appendable ``frames`` and ``torsions`` arrays for one replica."""
    sub = group[f"proteins/{name}"].create_group(f"R{replica}", overwrite=True)
    sub.attrs.update(attrs)
    shape, chunks = (0, n_residues, 7), (FRAME_CHUNK, n_residues, 7)
    return (
        sub.create_array("frames", shape=shape, chunks=chunks, dtype="float32"),
        sub.create_array("torsions", shape=shape, chunks=chunks, dtype="float32"),
    )
