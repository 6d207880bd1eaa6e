"""The bundled training corpus: a manifest of small real proteins and a resumable MD build.

The build grows all proteins round-robin in stages (by default 0.1 ns per replica per stage):
first every protein gets both replicas to 0.1 ns, then every protein to 0.2 ns, and so on, so
that an interrupted build always leaves many proteins with some MD rather than a few with a lot.
Each stage is a :func:`starmd.simulate.simulate` call, which resumes from the saved states;
rerunning the build continues it (on any machine: the states are portable OpenMM XML).
``{out_dir}/corpus.lock`` is held while a build runs, so a second build into the same corpus is
refused (:mod:`starmd.outputs`).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from starmd.errors import StarmdInputError
from starmd.outputs import locked_by

log = logging.getLogger("starmd.simulate")

MANIFEST_COLUMNS = (
    "name",
    "pdb_id",
    "residues",
    "fold_class",
    "family",
    "split",
    "description",
    "structure",
    "source_package",
    "path_in_package",
    "source_licence",
    "structure_licence",
    "notes",
)
FOLD_CLASSES = frozenset({"alpha", "beta", "mixed"})
SPLITS = frozenset({"train", "val", "test"})


@dataclass(frozen=True)
class CorpusEntry:
    """One protein of the corpus manifest; ``structure`` is an absolute path.

    ``split`` (train/val/test) is assigned per protein family (homologous domains share a
    family), so that no family straddles two splits.
    """

    name: str
    pdb_id: str
    residues: int
    fold_class: str
    family: str
    split: str
    description: str
    structure: Path
    source_package: str
    path_in_package: str
    source_licence: str
    structure_licence: str
    notes: str


def default_manifest() -> Path:
    """Path of the bundled manifest (``starmd/assets/corpus/manifest.csv``)."""
    return Path(str(resources.files("starmd") / "assets" / "corpus" / "manifest.csv"))


def load_manifest(path: str | Path | None = None) -> list[CorpusEntry]:
    """Read a corpus manifest CSV; structure paths are resolved relative to the CSV.

    Raises:
        StarmdInputError: missing file or column, bad fold class or split, duplicate name,
            or a structure file that does not exist.
    """
    path = Path(path) if path is not None else default_manifest()
    if not path.is_file():
        raise StarmdInputError(f"{path}: no such manifest")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise StarmdInputError(f"{path}: missing columns {', '.join(missing)}")
        rows = list(reader)
    entries: list[CorpusEntry] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        where = f"{path}: line {line}"
        if row["name"] in seen:
            raise StarmdInputError(f"{where}: duplicate name {row['name']!r}")
        seen.add(row["name"])
        if row["fold_class"] not in FOLD_CLASSES:
            raise StarmdInputError(
                f"{where}: fold_class {row['fold_class']!r} not alpha/beta/mixed"
            )
        if row["split"] not in SPLITS:
            raise StarmdInputError(f"{where}: split {row['split']!r} not train/val/test")
        structure = (path.parent / row["structure"]).resolve()
        if not structure.is_file():
            raise StarmdInputError(f"{where}: structure {row['structure']} not found")
        entries.append(
            CorpusEntry(
                **{c: row[c] for c in MANIFEST_COLUMNS if c not in ("residues", "structure")},
                residues=int(row["residues"]),
                structure=structure,
            )
        )
    return entries


def stage_targets(ns: float, step_ns: float) -> list[float]:
    """Per-replica lengths (ns) of the successive round-robin stages: step, 2 step, ..., ns."""
    if not (ns > 0 and step_ns > 0):
        raise StarmdInputError(f"--ns {ns} / --step-ns {step_ns}: must be positive")
    n = math.ceil(ns / step_ns - 1e-9)
    return [round(min(ns, (k + 1) * step_ns), 6) for k in range(n)]


def parse_split_ns(values: Sequence[str] | None) -> dict[str, float]:
    """Per-split production targets from ``SPLIT=NS`` strings (e.g. ``["val=1.0", "test=1.0"]``).

    Raises:
        StarmdInputError: a value is not ``SPLIT=NS`` with a known split and a positive length.
    """
    targets: dict[str, float] = {}
    for value in values or ():
        split, _, ns_text = value.partition("=")
        try:
            ns = float(ns_text)
        except ValueError:
            ns = math.nan
        if split not in SPLITS or not ns > 0:
            raise StarmdInputError(
                f"--split-ns {value}: expected SPLIT=NS with SPLIT in train/val/test, NS > 0"
            )
        targets[split] = ns
    return targets


def stage_plan(
    entries: Sequence[CorpusEntry],
    ns: float,
    step_ns: float,
    split_ns: Mapping[str, float] | None = None,
) -> list[list[tuple[CorpusEntry, float]]]:
    """The round-robin schedule: per stage, the proteins it grows and their length then (ns).

    A protein's own target is ``split_ns[its split]`` where given, else ``ns``. Stage k takes
    every protein whose target is not yet reached to ``min(target, k * step_ns)``, so
    proteins with a shorter target drop out of the later stages while the others go on; a
    stage no protein needs is not planned.

    Raises:
        StarmdInputError: an unknown split or a non-positive length in ``split_ns``.
    """
    split_ns = split_ns or {}
    for split, split_target in split_ns.items():
        if split not in SPLITS or not split_target > 0:
            raise StarmdInputError(
                f"--split-ns {split}={split_target}: SPLIT must be train/val/test, NS > 0"
            )
    per_entry = [stage_targets(split_ns.get(e.split, ns), step_ns) for e in entries]
    n_stages = max((len(t) for t in per_entry), default=0)
    return [
        [
            (entry, targets[k])
            for entry, targets in zip(entries, per_entry, strict=True)
            if k < len(targets)
        ]
        for k in range(n_stages)
    ]


@locked_by(lambda call: Path(call["out_dir"]) / "corpus.lock", "corpus build")
def build_corpus(
    out_dir: str | Path = "corpus/md",
    *,
    manifest: str | Path | None = None,
    ns: float = 0.5,
    replicas: int = 2,
    step_ns: float = 0.1,
    split_ns: Mapping[str, float] | None = None,
    only: Sequence[str] | None = None,
    protocol: str = "implicit",
    save_every_ps: float = 10.0,
    equilibrate_ps: float = 20.0,
    chunk_frames: int = 5,
    seed: int = 0,
    platform: str = "auto",
    threads: int | None = 1,
    workers: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Simulate (or continue) every manifest protein into ``{out_dir}/{name}/`` (ATLAS layout).

    Proteins advance round-robin in stages of ``step_ns`` per replica up to ``ns`` (or their
    split's own target in ``split_ns``; see :func:`stage_plan`); every call resumes what
    exists, and a protein already past a stage's length is left as it is. Each protein's
    seed is ``seed`` (its replicas differ by index).

    Args:
        out_dir: corpus root; one ATLAS folder per protein.
        manifest: manifest CSV (default: the bundled one).
        ns: target production length per replica, ns.
        replicas: replicas per protein.
        step_ns: length added per replica per round-robin stage, ns.
        split_ns: per-split targets overriding ``ns`` (e.g. ``{"val": 1.0, "test": 1.0}``).
        only: restrict to these protein names.
        protocol, save_every_ps, equilibrate_ps, chunk_frames, seed, platform, threads,
            workers, progress: passed to :func:`starmd.simulate.simulate`.

    Returns:
        The metadata of every protein after the last stage.
    """
    from starmd.simulate.engine import simulate

    entries = select_entries(load_manifest(manifest), only)
    out_dir = Path(out_dir)
    plan = stage_plan(entries, ns, step_ns, split_ns)
    results: dict[str, dict[str, Any]] = {}
    for stage, grown in enumerate(plan, start=1):
        for index, (entry, target) in enumerate(grown, start=1):
            log.info(
                "stage %d/%d (%.3f ns per replica): %s (%d/%d, %d residues)",
                stage,
                len(plan),
                target,
                entry.name,
                index,
                len(grown),
                entry.residues,
            )
            results[entry.name] = simulate(
                entry.structure,
                out_dir / entry.name,
                ns=target,
                replicas=replicas,
                protocol=protocol,
                save_every_ps=save_every_ps,
                seed=seed,
                platform=platform,
                threads=threads,
                equilibrate_ps=equilibrate_ps,
                chunk_frames=chunk_frames,
                name=entry.name,
                workers=workers,
                progress=progress,
            )
        write_corpus_index(out_dir, entries)
    return [results[e.name] for e in entries]


def select_entries(entries: Iterable[CorpusEntry], only: Sequence[str] | None) -> list[CorpusEntry]:
    """Entries restricted to the names in ``only`` (all when ``only`` is empty or ``None``).

    Raises:
        StarmdInputError: a name in ``only`` is not in the manifest.
    """
    entries = list(entries)
    if not only:
        return entries
    known = {e.name for e in entries}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise StarmdInputError(f"--only {', '.join(unknown)}: not in the manifest")
    return [e for e in entries if e.name in set(only)]


def write_corpus_index(out_dir: Path, entries: Sequence[CorpusEntry]) -> Path:
    """Write ``{out_dir}/index.csv``: per protein and replica the frames and ns simulated so far.

    Columns: name, split, fold_class, residues, replica, frames, simulated_ns, ns_per_day.
    """
    from starmd.simulate import atlas
    from starmd.structure.io import write_atomically

    lines = ["name,split,fold_class,residues,replica,frames,simulated_ns,ns_per_day"]
    for entry in entries:
        metadata = atlas.read_json(atlas.metadata_json(out_dir / entry.name, entry.name)) or {}
        for rep in metadata.get("replicas", []):
            lines.append(
                f"{entry.name},{entry.split},{entry.fold_class},{entry.residues},"
                f"{rep['replica']},{rep['frames']},{rep['simulated_ns']:.3f},{rep['ns_per_day']}"
            )
    path = out_dir / "index.csv"
    write_atomically(path, "\n".join(lines) + "\n", durable=True)
    return path
