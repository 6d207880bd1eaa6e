"""Fault matrix, `starmd bench` row (docs/faults.md): disk full, kill, Ctrl-C, a second run into
the same folder, a corrupt model file, an unwritable or vanished output folder. Bench has no
state to resume: its files are rewritten whole after every section, and a rerun starts afresh.
The cells run the cheapest section (quality without reference MD: skipped, tables written)."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import starmd.bench as bench_module
from starmd.outputs import output_lock
from tests.faults import assert_one_error_line


def _args(out, model, *extra) -> list:
    return ["bench", "-o", out, "--model", model, "--sections", "quality", *extra]


def _tables_whole_or_absent(out) -> None:
    if (out / "bench.json").exists():
        assert json.loads((out / "bench.json").read_text())["sections"]
    assert not [p for p in out.glob(".*") if p.is_file()]  # no temporary file left


def test_disk_full_is_one_line_and_leaves_whole_files(
    starmd, disk, monkeypatch, tiny_model_path, tmp_path
):
    limited = disk(tmp_path, free=None)
    real_markdown = bench_module.markdown

    def fill_disk_after_bench_json(results):
        limited.free = 10
        return real_markdown(results)

    monkeypatch.setattr(bench_module, "markdown", fill_disk_after_bench_json)
    outcome = starmd(*_args(tmp_path, tiny_model_path))
    assert limited.writes_refused == 1
    assert_one_error_line(outcome, str(tmp_path / "bench.md"), "no space left on device", "rerun")
    assert not (tmp_path / "bench.md").exists()
    _tables_whole_or_absent(tmp_path)
    assert (tmp_path / "bench.json").exists()
    monkeypatch.undo()
    limited.free = None
    assert starmd(*_args(tmp_path, tiny_model_path)).code == 0


@pytest.mark.slow
def test_kill_at_a_random_point_leaves_whole_files_and_the_rerun_works(tiny_model_path, tmp_path):
    command = [sys.executable, "-m", "starmd.cli", *map(str, _args(tmp_path, tiny_model_path))]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(np.random.default_rng().uniform(2.0, 6.0))
    child.send_signal(signal.SIGKILL)
    child.wait()
    _tables_whole_or_absent(tmp_path)
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    _tables_whole_or_absent(tmp_path)


def test_ctrl_c_says_rerun(starmd, monkeypatch, tiny_model_path, tmp_path):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_module, "machine_info", interrupt)
    outcome = starmd(*_args(tmp_path, tiny_model_path))
    assert outcome.code == 130 and "Traceback" not in outcome.err
    assert outcome.error_lines[-1] == "interrupted; rerun the same command (it starts afresh)"


def test_second_bench_into_the_same_folder_is_refused(starmd, tiny_model_path, tmp_path):
    lock = tmp_path / "bench.lock"
    with output_lock(lock, "bench"):
        outcome = starmd(*_args(tmp_path, tiny_model_path))
    assert_one_error_line(outcome, str(lock), "another `starmd bench`")
    assert not (tmp_path / "bench.json").exists()


def test_corrupt_model_file_is_one_line(starmd, tiny_model_path, tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(tiny_model_path.read_bytes()[:1000])
    outcome = starmd(*_args(tmp_path / "out", model))
    assert_one_error_line(outcome, str(model), "unreadable model file")
    assert model.stat().st_size == 1000


def test_read_only_output_folder_is_one_line(starmd, disk, tiny_model_path, tmp_path):
    disk(tmp_path, error=errno.EROFS)
    outcome = starmd(*_args(tmp_path, tiny_model_path))
    assert_one_error_line(outcome, str(tmp_path), "read-only file system")


def test_output_folder_vanishing_mid_run_is_one_line(
    starmd, monkeypatch, tiny_model_path, tmp_path
):
    out = tmp_path / "out"
    real_defaults = bench_module.model_defaults

    def defaults_then_remove(*args, **kwargs):
        defaults = real_defaults(*args, **kwargs)
        shutil.rmtree(out)
        return defaults

    monkeypatch.setattr(bench_module, "model_defaults", defaults_then_remove)
    outcome = starmd(*_args(out, tiny_model_path))
    assert_one_error_line(outcome, str(out), "output folder removed while bench was running")
    assert not out.exists()
