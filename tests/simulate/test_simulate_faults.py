"""Fault matrix, `starmd simulate` and `starmd corpus build` rows (docs/faults.md): disk full,
Ctrl-C, a second run, corrupt progress record or OpenMM state, an unwritable or vanished
output folder. (Kill and resume: test_simulate_engine.py.)"""

from __future__ import annotations

import csv
import errno
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from simulate_consts import NAME

from starmd.outputs import output_lock, try_lock
from starmd.simulate import atlas, replica
from tests.faults import assert_one_error_line

FRAMES, CHUNK = 6, 2


def _args(structure, out, *extra):
    return [
        "simulate", structure, "-o", out, "--ns", FRAMES / 1000, "--save-every-ps", 1.0,
        "--platform", "CPU", "--threads", 1, "--equilibrate-ps", 0.4,
        "--chunk-frames", CHUNK, "--name", NAME, *extra,
    ]  # fmt: skip


def _frames(out: Path) -> mdtraj.Trajectory:
    return mdtraj.load(str(atlas.replica_xtc(out, NAME, 1)), top=str(atlas.topology_pdb(out, NAME)))


def _after_first_chunk(monkeypatch, action):
    """Run ``action()`` once, when the first production chunk has been saved."""
    real_report = replica._report

    def report(callback, job, frames, speed):
        real_report(callback, job, frames, speed)
        if frames == CHUNK:
            action()

    monkeypatch.setattr(replica, "_report", report)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_disk_full_keeps_the_saved_chunks_and_the_rerun_continues(
    starmd, disk, monkeypatch, prepared_dir, trpcage_pdb
):
    xtc = atlas.replica_xtc(prepared_dir, NAME, 1)
    limited = disk(xtc, free=None)
    _after_first_chunk(monkeypatch, lambda: setattr(limited, "free", 100))  # < one chunk
    outcome = starmd(*_args(trpcage_pdb, prepared_dir))
    assert limited.writes_refused == 1
    assert_one_error_line(outcome, str(xtc), "no space left on device", "rerun the same command")
    kept = _frames(prepared_dir)
    assert kept.n_frames == CHUNK  # readable: the partial chunk was cut off
    saved = atlas.read_json(atlas.replica_progress_json(prepared_dir, NAME, 1))
    assert saved["frames_done"] == CHUNK and saved["xtc_bytes"] == xtc.stat().st_size

    monkeypatch.undo()
    limited.free = None
    assert starmd(*_args(trpcage_pdb, prepared_dir)).code == 0
    grown = _frames(prepared_dir)
    assert grown.n_frames == FRAMES
    assert (grown.xyz[:CHUNK] == kept.xyz).all()


def _interrupt():
    raise KeyboardInterrupt


def test_ctrl_c_says_rerun_and_the_rerun_continues(starmd, monkeypatch, prepared_dir, trpcage_pdb):
    _after_first_chunk(monkeypatch, _interrupt)
    outcome = starmd(*_args(trpcage_pdb, prepared_dir))
    assert outcome.code == 130 and "Traceback" not in outcome.err
    assert outcome.error_lines[-1] == (
        "interrupted; rerun the same command to continue from the last saved state"
    )
    monkeypatch.undo()
    assert starmd(*_args(trpcage_pdb, prepared_dir)).code == 0
    record = atlas.read_json(atlas.replica_progress_json(prepared_dir, NAME, 1))
    assert record["frames_done"] == FRAMES and record["resumes"] == 1


def test_second_run_of_a_replica_is_refused_in_one_line(starmd, prepared_dir, trpcage_pdb):
    with try_lock(atlas.replica_lock(prepared_dir, NAME, 1)) as acquired:
        assert acquired
        outcome = starmd(*_args(trpcage_pdb, prepared_dir))
    assert_one_error_line(outcome, "replica 1 of trpcage is being run by another process")
    assert not atlas.replica_xtc(prepared_dir, NAME, 1).exists()


def test_second_run_during_the_setup_is_refused_in_one_line(starmd, trpcage_pdb, tmp_path):
    lock = atlas.setup_lock(tmp_path, NAME)
    with output_lock(lock, "simulate"):
        outcome = starmd(*_args(trpcage_pdb, tmp_path))
    assert_one_error_line(outcome, str(lock), "another `starmd simulate`")
    assert not atlas.setup_json(tmp_path, NAME).exists()


def _interrupted_run(starmd, monkeypatch, prepared_dir, trpcage_pdb) -> None:
    _after_first_chunk(monkeypatch, _interrupt)
    assert starmd(*_args(trpcage_pdb, prepared_dir)).code == 130
    monkeypatch.undo()


@pytest.mark.parametrize(
    ("target", "edit", "problem"),
    [
        ("progress", lambda text: text[: len(text) // 2], "corrupt record"),
        ("progress", lambda text: text.replace('"xtc_bytes": ', '"xtc_bytes": 9'), "xtc_bytes"),
        ("progress", lambda text: text.replace('"frames_done"', '"frames"'), "frames_done"),
        ("state", lambda text: text[: len(text) // 2], "corrupt OpenMM state"),
    ],
    ids=["truncated-record", "edited-bytes", "edited-key", "truncated-xml-state"],
)
def test_corrupt_resume_state_is_one_line_and_nothing_changes(
    starmd, monkeypatch, prepared_dir, trpcage_pdb, target, edit, problem
):
    _interrupted_run(starmd, monkeypatch, prepared_dir, trpcage_pdb)
    path = {
        "progress": atlas.replica_progress_json(prepared_dir, NAME, 1),
        "state": atlas.replica_state_xml(prepared_dir, NAME, 1),
    }[target]
    path.write_text(edit(path.read_text()))
    before = _files(prepared_dir)
    outcome = starmd(*_args(trpcage_pdb, prepared_dir))
    assert_one_error_line(outcome, str(path), problem)
    assert _files(prepared_dir) == before


def test_read_only_output_folder_is_one_line(starmd, disk, prepared_dir, trpcage_pdb):
    disk(prepared_dir, error=errno.EROFS)
    outcome = starmd(*_args(trpcage_pdb, prepared_dir))
    assert_one_error_line(outcome, str(prepared_dir), "read-only file system")


def test_output_folder_vanishing_mid_run_is_one_line(
    starmd, monkeypatch, prepared_dir, trpcage_pdb
):
    _after_first_chunk(monkeypatch, lambda: shutil.rmtree(prepared_dir))
    outcome = starmd(*_args(trpcage_pdb, prepared_dir))
    assert_one_error_line(outcome, str(prepared_dir), "no such file or directory")


def _build_args(root: Path, manifest: Path) -> list:
    return [
        "corpus", "build", "--manifest", manifest, "--out", root, "--ns", 0.004,
        "--step-ns", 0.002, "--replicas", 1, "--save-every-ps", 1.0, "--equilibrate-ps", 0.4,
        "--platform", "CPU", "--threads", 1,
    ]  # fmt: skip


def test_second_corpus_build_is_refused_in_one_line(starmd, corpus):
    root, manifest = corpus
    with output_lock(root / "corpus.lock", "corpus build"):
        outcome = starmd(*_build_args(root, manifest))
    assert_one_error_line(outcome, str(root / "corpus.lock"), "another `starmd corpus build`")
    assert not atlas.replica_xtc(root / NAME, NAME, 1).exists()


def test_corpus_build_disk_full_keeps_saved_chunks_and_the_rerun_finishes(
    starmd, disk, monkeypatch, corpus
):
    """A build is a sequence of simulate calls: the same guarantees, then the rerun finishes."""
    root, manifest = corpus
    xtc = atlas.replica_xtc(root / NAME, NAME, 1)
    limited = disk(xtc, free=None)
    _after_first_chunk(monkeypatch, lambda: setattr(limited, "free", 100))  # end of stage 1
    outcome = starmd(*_build_args(root, manifest))
    assert_one_error_line(outcome, str(xtc), "no space left on device", "rerun the same command")
    assert _frames(root / NAME).n_frames == CHUNK
    monkeypatch.undo()
    limited.free = None
    assert starmd(*_build_args(root, manifest)).code == 0
    assert _frames(root / NAME).n_frames == 2 * CHUNK
    index = list(csv.DictReader((root / "index.csv").open()))
    assert [(r["name"], r["frames"]) for r in index] == [(NAME, str(2 * CHUNK))]


def test_corpus_build_ctrl_c_then_corrupt_record_is_one_line(starmd, monkeypatch, corpus):
    root, manifest = corpus
    _after_first_chunk(monkeypatch, _interrupt)
    outcome = starmd(*_build_args(root, manifest))
    assert outcome.code == 130
    assert outcome.error_lines[-1] == (
        "interrupted; rerun the same command to continue from the last saved states"
    )
    monkeypatch.undo()
    record = atlas.replica_progress_json(root / NAME, NAME, 1)
    record.write_text(record.read_text()[:20])
    before = _files(root)
    assert_one_error_line(starmd(*_build_args(root, manifest)), str(record), "corrupt record")
    assert _files(root) == before


def test_corpus_build_read_only_root_is_one_line(starmd, disk, corpus):
    root, manifest = corpus
    disk(root, error=errno.EROFS)
    assert_one_error_line(starmd(*_build_args(root, manifest)), str(root), "read-only file system")


@pytest.mark.slow  # the protein's setup (PDBFixer, minimization) runs again
def test_corpus_protein_removed_between_stages_starts_again(starmd, monkeypatch, corpus):
    """Removing a protein's folder is how it is redone: the next stage simulates it afresh
    (within a stage a vanished folder is an error, as for simulate)."""
    root, manifest = corpus
    _after_first_chunk(monkeypatch, lambda: shutil.rmtree(root / NAME))  # end of stage 1
    assert starmd(*_build_args(root, manifest)).code == 0
    record = atlas.read_json(atlas.replica_progress_json(root / NAME, NAME, 1))
    assert record["frames_done"] == 2 * CHUNK and record["resumes"] == 0


@pytest.mark.slow
def test_corpus_build_killed_at_a_random_point_then_rerun_keeps_and_finishes(corpus):
    root, manifest = corpus
    command = [sys.executable, "-m", "starmd.cli", *map(str, _build_args(root, manifest))]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = atlas.replica_progress_json(root / NAME, NAME, 1)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None and not progress.exists():
        time.sleep(0.02)
    time.sleep(np.random.default_rng().uniform(0, 1.5))
    child.send_signal(signal.SIGKILL)
    child.wait()
    record = atlas.read_json(progress)
    xtc = atlas.replica_xtc(root / NAME, NAME, 1)
    committed = xtc.read_bytes()[: record["xtc_bytes"]] if xtc.exists() else b""
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert _frames(root / NAME).n_frames == 2 * CHUNK
    assert xtc.read_bytes().startswith(committed)
