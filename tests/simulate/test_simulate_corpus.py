"""The corpus manifest is complete and consistent; the build is round-robin and resumable."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import replace

import mdtraj
import pytest
from simulate_consts import NAME

from starmd.errors import StarmdInputError
from starmd.simulate import atlas
from starmd.simulate.corpus import (
    MANIFEST_COLUMNS,
    build_corpus,
    default_manifest,
    load_manifest,
    parse_split_ns,
    select_entries,
    stage_plan,
    stage_targets,
)


def test_manifest_has_at_least_32_distinct_small_real_proteins():
    entries = load_manifest()
    assert len(entries) >= 32
    assert len({e.name for e in entries}) == len(entries)
    assert len({e.pdb_id for e in entries}) == len(entries)
    assert all(10 <= e.residues <= 120 for e in entries)
    assert Counter(e.fold_class for e in entries).keys() == {"alpha", "beta", "mixed"}
    assert all(e.source_package and e.path_in_package and e.source_licence for e in entries)


LARGE = default_manifest().with_name("manifest_large.csv")


def test_large_gpu_manifest_extends_the_small_one_without_straddling_families():
    small, large = load_manifest(), load_manifest(LARGE)
    assert {e.name for e in small} < {e.name for e in large}
    for family in {e.family for e in large}:
        assert len({e.split for e in large if e.family == family}) == 1, family


def test_manifest_residue_counts_match_structures():
    for entry in load_manifest(LARGE):
        structure = mdtraj.load(str(entry.structure))
        assert structure.n_residues == entry.residues, entry.name
        assert structure.topology.n_chains == 1, entry.name


def test_split_is_by_protein_family_and_mostly_train():
    entries = load_manifest()
    for family in {e.family for e in entries}:
        assert len({e.split for e in entries if e.family == family}) == 1, family
    splits = Counter(e.split for e in entries)
    assert splits["val"] >= 2 and splits["test"] >= 3
    assert splits["train"] > len(entries) / 2
    assert {e.fold_class for e in entries if e.split == "test"} == {"alpha", "beta", "mixed"}


def test_stage_targets_grow_to_the_requested_length():
    assert stage_targets(0.5, 0.1) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert stage_targets(0.25, 0.1) == [0.1, 0.2, 0.25]
    with pytest.raises(StarmdInputError):
        stage_targets(0.5, 0.0)


def test_split_ns_parses_per_split_targets_and_rejects_bad_ones():
    assert parse_split_ns(["val=1.0", "test=1.2"]) == {"val": 1.0, "test": 1.2}
    assert parse_split_ns(None) == {}
    for bad in ("val", "holdout=1.0", "val=x", "test=0"):
        with pytest.raises(StarmdInputError, match=f"--split-ns {bad}: expected SPLIT=NS"):
            parse_split_ns([bad])


def test_stage_plan_grows_training_proteins_first_then_held_out_ones_further():
    base = load_manifest()[0]
    entries = [
        replace(base, name="new_train", split="train"),
        replace(base, name="heldout_val", split="val"),
        replace(base, name="heldout_test", split="test"),
    ]
    plan = stage_plan(entries, 0.3, 0.1, {"val": 1.0, "test": 1.0})
    grown = [[(entry.name, ns) for entry, ns in stage] for stage in plan]
    assert len(grown) == 10
    assert grown[0] == [("new_train", 0.1), ("heldout_val", 0.1), ("heldout_test", 0.1)]
    assert grown[2] == [("new_train", 0.3), ("heldout_val", 0.3), ("heldout_test", 0.3)]
    assert grown[3] == [("heldout_val", 0.4), ("heldout_test", 0.4)]
    assert grown[-1] == [("heldout_val", 1.0), ("heldout_test", 1.0)]
    assert stage_plan(entries, 0.25, 0.1) == [[(e, ns) for e in entries] for ns in (0.1, 0.2, 0.25)]
    with pytest.raises(StarmdInputError, match="--split-ns holdout=1.0"):
        stage_plan(entries, 0.3, 0.1, {"holdout": 1.0})


def test_select_entries_rejects_unknown_names():
    entries = load_manifest()
    assert [e.name for e in select_entries(entries, ["1enh"])] == ["1enh"]
    with pytest.raises(StarmdInputError, match="--only nope: not in the manifest"):
        select_entries(entries, ["nope"])


def test_bad_manifest_is_a_clear_error(tmp_path):
    rows = list(csv.DictReader(default_manifest().open()))
    rows[0]["fold_class"] = "coil"
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(StarmdInputError, match=r"line 2: fold_class 'coil'"):
        load_manifest(path)


def test_build_grows_every_replica_round_robin_to_its_split_target(corpus):
    root, manifest = corpus

    results = build_corpus(
        root,
        manifest=manifest,
        ns=0.002,
        step_ns=0.001,
        replicas=2,
        save_every_ps=1.0,
        equilibrate_ps=0.4,
        chunk_frames=1,
        platform="CPU",
        threads=1,
        progress=False,
    )
    assert [r["frames"] for r in results[0]["replicas"]] == [2, 2]
    index = list(csv.DictReader((root / "index.csv").open()))
    assert [(r["name"], r["replica"], r["frames"]) for r in index] == [
        (NAME, "1", "2"),
        (NAME, "2", "2"),
    ]
    for replica in (1, 2):
        traj = mdtraj.load(
            str(atlas.replica_xtc(root / NAME, NAME, replica)),
            top=str(atlas.topology_pdb(root / NAME, NAME)),
        )
        assert list(traj.time) == [1.0, 2.0]

    grown = build_corpus(
        root,
        manifest=manifest,
        ns=0.001,
        split_ns={"train": 0.003},
        step_ns=0.001,
        replicas=2,
        save_every_ps=1.0,
        equilibrate_ps=0.4,
        chunk_frames=1,
        platform="CPU",
        threads=1,
        progress=False,
    )
    assert [r["frames"] for r in grown[0]["replicas"]] == [3, 3]


def test_manifest_doubles_as_the_split_file_of_prepare():
    read_split_files = pytest.importorskip("starmd.data.prepare").read_split_files
    splits = read_split_files([default_manifest()])
    assert splits == {e.name: e.split for e in load_manifest()}
