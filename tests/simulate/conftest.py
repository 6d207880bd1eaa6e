"""Shared fixtures: one tiny implicit-solvent run of Trp-cage (20 residues), set up once.

Every MD test uses one CPU thread and picosecond lengths so that the folder runs in well
under a minute on two busy cores.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from simulate_consts import N_FRAMES, NAME, SAVE_EVERY_PS

from starmd.simulate import atlas
from starmd.simulate.corpus import MANIFEST_COLUMNS, default_manifest, load_manifest


@pytest.fixture(scope="session")
def trpcage_pdb() -> Path:
    """The bundled Trp-cage structure (heavy atoms only, 20 residues)."""
    return next(e.structure for e in load_manifest() if e.name == "trpcage_1l2y")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, trpcage_pdb: Path) -> tuple[Path, dict]:
    """A finished 4 ps, 1-replica run: ``(out_dir, metadata)``."""
    from starmd.simulate import simulate

    out_dir = tmp_path_factory.mktemp("tiny_run")
    metadata = simulate(
        trpcage_pdb,
        out_dir,
        ns=N_FRAMES * SAVE_EVERY_PS / 1000.0,
        replicas=1,
        save_every_ps=SAVE_EVERY_PS,
        platform="CPU",
        threads=1,
        equilibrate_ps=0.4,
        chunk_frames=2,
        name=NAME,
        progress=False,
    )
    return out_dir, metadata


@pytest.fixture
def prepared_dir(tiny_run: tuple[Path, dict], tmp_path: Path) -> Path:
    """A fresh output folder holding only the (minimized) system setup of ``tiny_run``."""
    source, _ = tiny_run
    out_dir = tmp_path / "run"
    (out_dir / "state").mkdir(parents=True)
    for path in (
        atlas.topology_pdb(source, NAME),
        atlas.setup_json(source, NAME),
        atlas.system_xml(source, NAME),
        atlas.full_pdb(source, NAME),
    ):
        shutil.copy(path, out_dir / path.relative_to(source))
    return out_dir


@pytest.fixture
def corpus(prepared_dir: Path, trpcage_pdb: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A one-protein corpus (set up, no MD yet) and its manifest: ``(root, manifest)``."""
    root = tmp_path / "corpus"
    shutil.copytree(prepared_dir, root / NAME)
    manifest = tmp_path / "manifest.csv"
    entry = next(r for r in csv.DictReader(default_manifest().open()) if r["pdb_id"] == "1L2Y")
    entry.update(name=NAME, structure=str(trpcage_pdb))
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerow(entry)
    return root, manifest
