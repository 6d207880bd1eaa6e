"""Fault matrix, `starmd evaluate` row (docs/faults.md): disk full, kill, Ctrl-C, a second run
into the same report, a corrupt input or earlier report, an unwritable or vanished output
folder. Evaluate has no resume: its rerun into the same folder starts afresh, and every file
it writes is written atomically."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from starmd.evaluate import api
from starmd.outputs import output_lock
from tests.faults import assert_one_error_line

from .conftest import make_generated, make_reference


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """``(generated, reference)`` folders of synthetic villin."""
    reference = make_reference(tmp_path_factory.mktemp("ref_faults"), n_frames=200)
    return make_generated(tmp_path_factory.mktemp("gen_faults"), n_frames=30), reference


def _args(inputs, out: Path) -> list:
    generated, reference = inputs
    return [
        "evaluate", generated, "--reference", reference, "-o", out, "--baselines", "static",
        "--no-plots", "--ensemble-frames", 20, "--workers", 1,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def metrics(inputs, tmp_path_factory) -> bytes:
    """metrics.csv of an uninterrupted run."""
    from starmd.cli import main

    out = tmp_path_factory.mktemp("report")
    main([str(a) for a in _args(inputs, out)])
    return (out / "metrics.csv").read_bytes()


def _no_temporary_files(out: Path) -> None:
    assert not [p for p in out.rglob(".*") if p.is_file()], list(out.rglob(".*"))


def test_disk_full_is_one_line_and_the_rerun_starts_afresh(starmd, disk, inputs, metrics, tmp_path):
    limited = disk(tmp_path, free=3_000)
    outcome = starmd(*_args(inputs, tmp_path))
    assert limited.writes_refused == 1
    line = assert_one_error_line(outcome, str(tmp_path), "no space left on device", "rerun")
    assert Path(line.split(": ")[1]).is_relative_to(tmp_path)
    assert not (tmp_path / "metrics.csv").exists()
    _no_temporary_files(tmp_path)
    limited.free = None
    assert starmd(*_args(inputs, tmp_path)).code == 0
    assert (tmp_path / "metrics.csv").read_bytes() == metrics


@pytest.mark.slow
def test_kill_at_a_random_point_then_rerun_gives_the_same_report(inputs, metrics, tmp_path):
    command = [sys.executable, "-m", "starmd.cli", *map(str, _args(inputs, tmp_path))]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "settings.json").exists():
        time.sleep(0.01)
    time.sleep(np.random.default_rng().uniform(0, 2.0))
    child.send_signal(signal.SIGKILL)
    child.wait()
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "metrics.csv").read_bytes() == metrics
    _no_temporary_files(tmp_path)


def test_ctrl_c_says_rerun(starmd, monkeypatch, inputs, tmp_path):
    def interrupt(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "evaluate_protein", interrupt)
    outcome = starmd(*_args(inputs, tmp_path))
    assert outcome.code == 130 and "Traceback" not in outcome.err
    assert outcome.error_lines[-1] == "interrupted; rerun the same command (it starts afresh)"


def _earlier_report(out: Path, inputs) -> None:
    """What an earlier run leaves (only its marks, the content does not matter here)."""
    settings = {"reference": str(inputs[1]), "proteins": ["villin"]}
    (out / "settings.json").write_text(json.dumps(settings))
    (out / "metrics.csv").write_text("section,metric\n")
    (out / "proteins" / "villin").mkdir(parents=True)
    (out / "proteins" / "villin" / "results.json").write_text("{}")


def test_second_run_into_the_same_report_is_refused_and_clears_nothing(starmd, inputs, tmp_path):
    _earlier_report(tmp_path, inputs)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with output_lock(tmp_path / "evaluate.lock", "evaluate"):
        outcome = starmd(*_args(inputs, tmp_path))
    assert_one_error_line(outcome, str(tmp_path / "evaluate.lock"), "another `starmd evaluate`")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_corrupt_input_trajectory_is_one_line(starmd, inputs, tmp_path):
    generated = tmp_path / "gen"
    shutil.copytree(inputs[0], generated)
    xtc = generated / "villin_R1.xtc"
    xtc.write_bytes(xtc.read_bytes()[: xtc.stat().st_size // 2 + 5])
    outcome = starmd(*_args((generated, inputs[1]), tmp_path / "out"))
    assert_one_error_line(outcome, str(xtc))


def test_hand_edited_earlier_report_is_refused_and_kept(starmd, inputs, tmp_path):
    _earlier_report(tmp_path, inputs)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"edited": True}))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    outcome = starmd(*_args(inputs, tmp_path))
    assert_one_error_line(outcome, str(tmp_path), "not a previous evaluate output")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_read_only_output_folder_is_one_line(starmd, disk, inputs, tmp_path):
    disk(tmp_path, error=errno.EROFS)
    outcome = starmd(*_args(inputs, tmp_path))
    assert_one_error_line(outcome, str(tmp_path), "read-only file system")


def test_output_folder_vanishing_mid_run_is_one_line(starmd, monkeypatch, inputs, tmp_path):
    out = tmp_path / "out"
    real_evaluate_protein = api.evaluate_protein

    def score_then_remove(job):
        result = real_evaluate_protein(job)
        shutil.rmtree(out)
        return result

    monkeypatch.setattr(api, "evaluate_protein", score_then_remove)
    outcome = starmd(*_args(inputs, out))
    assert_one_error_line(outcome, str(out), "no such file or directory")
