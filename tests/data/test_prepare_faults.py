"""Fault matrix, `starmd prepare` row (docs/faults.md): disk full, kill, Ctrl-C, a second run,
a corrupt input, an unwritable or vanished output folder. The commit point is the rename of the
finished store: an interruption leaves no half-written dataset."""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from starmd.data import prepare as prepare_module
from starmd.data.prepare import prepare
from starmd.outputs import output_lock
from tests.conftest import ASSETS
from tests.faults import assert_one_error_line

MD = ASSETS / "demo" / "1am7"


def _store_files(out: Path) -> dict[str, bytes]:
    """The dataset's bytes: the zarr store and the index (prepare.json holds a wall time)."""
    root = out / "dataset.zarr"
    files = {str(p.relative_to(out)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return {**files, "index.csv": (out / "index.csv").read_bytes()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    prepare(MD, out, fractions=(1, 0, 0))
    return out


def _args(out: Path, *extra) -> list:
    return ["prepare", MD, "-o", out, "--fractions", "1,0,0", *extra]


def _nothing_half_written(out: Path) -> None:
    assert not (out / "dataset.zarr").exists()
    assert not (out / "dataset.zarr.partial").exists()


def test_disk_full_leaves_no_half_dataset_and_the_rerun_is_exact(starmd, disk, reference, tmp_path):
    limited = disk(tmp_path, free=20_000)  # the store takes about 0.3 MB
    outcome = starmd(*_args(tmp_path))
    assert limited.writes_refused == 1
    assert_one_error_line(outcome, "dataset.zarr.partial", "no space left on device", "rerun")
    _nothing_half_written(tmp_path)  # and its space is free again
    limited.free = None
    assert starmd(*_args(tmp_path)).code == 0
    assert _store_files(tmp_path) == _store_files(reference)


def test_kill_at_a_random_point_then_rerun_gives_the_same_dataset(reference, tmp_path):
    command = [sys.executable, "-m", "starmd.cli", *map(str, _args(tmp_path))]
    child = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "dataset.zarr.partial").exists():
        time.sleep(0.005)
    time.sleep(np.random.default_rng().uniform(0, 0.3))  # somewhere in the conversion
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "dataset.zarr").exists() or (tmp_path / "index.csv").exists()
    rerun = subprocess.run(command, capture_output=True, text=True)
    if (tmp_path / "dataset.zarr").exists() and rerun.returncode != 0:  # killed after the commit
        assert "exists; pass --overwrite" in rerun.stderr
    else:
        assert rerun.returncode == 0, rerun.stderr
    assert _store_files(tmp_path) == _store_files(reference)


def test_ctrl_c_removes_the_partial_store_and_says_rerun(starmd, monkeypatch, tmp_path):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "_convert_replica", interrupt)
    outcome = starmd(*_args(tmp_path))
    assert outcome.code == 130 and "Traceback" not in outcome.err
    assert outcome.error_lines[-1].startswith("interrupted; rerun the same command")
    _nothing_half_written(tmp_path)


def test_second_prepare_into_the_same_folder_is_refused(starmd, tmp_path):
    lock = tmp_path / "prepare.lock"
    with output_lock(lock, "prepare"):
        outcome = starmd(*_args(tmp_path))
    assert_one_error_line(outcome, str(lock), "another `starmd prepare`")
    _nothing_half_written(tmp_path)


def test_corrupt_input_is_one_line_and_the_dataset_it_would_replace_survives(
    starmd, reference, tmp_path
):
    md = tmp_path / "md"
    shutil.copytree(MD, md)
    xtc = md / "1am7_prod_R1_fit.xtc"
    xtc.write_bytes(xtc.read_bytes()[: xtc.stat().st_size // 2 + 7])
    out = tmp_path / "data"
    shutil.copytree(reference, out)
    before = _store_files(out)
    outcome = starmd("prepare", md, "-o", out, "--fractions", "1,0,0", "--overwrite")
    assert_one_error_line(outcome, str(xtc))
    assert _store_files(out) == before
    assert not (out / "dataset.zarr.partial").exists()


def test_read_only_output_folder_is_one_line(starmd, disk, tmp_path):
    disk(tmp_path, error=errno.EROFS)
    outcome = starmd(*_args(tmp_path))
    assert_one_error_line(outcome, str(tmp_path), "cannot write output", "read-only file system")


def test_output_folder_vanishing_mid_run_is_one_line(starmd, monkeypatch, tmp_path):
    out = tmp_path / "data"
    real_convert = prepare_module._convert_replica

    def convert_then_remove(*args, **kwargs):
        row = real_convert(*args, **kwargs)
        shutil.rmtree(out)
        return row

    monkeypatch.setattr(prepare_module, "_convert_replica", convert_then_remove)
    outcome = starmd(*_args(out))
    assert_one_error_line(outcome, "dataset.zarr.partial", "removed while prepare was writing")
    _nothing_half_written(out)
