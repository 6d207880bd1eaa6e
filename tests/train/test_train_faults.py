"""Fault matrix, `starmd train` row (docs/faults.md): disk full while saving a checkpoint,
kill and Ctrl-C then `--resume last` (same weights as an uninterrupted run), a second run into
the same folder, a corrupt checkpoint or dataset, an unwritable or vanished run folder."""

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
import torch

from starmd.modelfile import load_model
from starmd.modelfile.config import TrainConfig
from starmd.outputs import output_lock
from starmd.train.module import StarMDModule
from starmd.train.run import train
from tests.faults import assert_one_error_line
from tests.train.conftest import TINY

EPOCHS = 2  # 2 optimizer steps per epoch (4 windows, batch 2)


def _args(data: Path, run: Path, *extra, epochs: int = EPOCHS) -> list:
    sets = [item for value in TINY for item in ("--set", value)]
    return ["train", data, "-o", run, *sets, "--max-epochs", epochs, *extra]


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory) -> Path:
    """An uninterrupted run: its run folder."""
    run = tmp_path_factory.mktemp("reference")
    train(tiny_dataset, run, TrainConfig.from_yaml(None, TINY + [f"trainer.max_epochs={EPOCHS}"]),
          progress=False)  # fmt: skip
    return run


def assert_same_weights(run: Path, reference: Path) -> None:
    ours = load_model(run / "model.safetensors").model.state_dict()
    theirs = load_model(reference / "model.safetensors").model.state_dict()
    for (name, a), b in zip(ours.items(), theirs.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


@pytest.fixture
def keep_sigint():
    """Lightning ignores SIGINT after a Ctrl-C; give this process its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def _at_step(monkeypatch, step: int, action) -> None:
    """Run ``action()`` before optimizer step ``step`` (from 0): step 2 is epoch 2's first."""
    real_step = StarMDModule.training_step
    calls = []

    def training_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == step + 1:
            action()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(StarMDModule, "training_step", training_step)


def _interrupt():
    raise KeyboardInterrupt


def _epoch_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]


def test_disk_full_while_checkpointing_keeps_the_last_one_and_resume_is_exact(
    starmd, disk, tiny_dataset, reference, tmp_path
):
    size = (reference / "checkpoints" / "last.ckpt").stat().st_size
    limited = disk(tmp_path / "checkpoints", free=size * 3 // 2)  # one checkpoint fits
    outcome = starmd(*_args(tiny_dataset, tmp_path))
    assert limited.writes_refused == 1
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert_one_error_line(outcome, str(last), "no space left on device", "--resume last")
    assert _epoch_of(last) == 0  # epoch 1's checkpoint, whole
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no temporary left
    limited.free = None
    assert starmd(*_args(tiny_dataset, tmp_path, "--resume", "last")).code == 0
    assert_same_weights(tmp_path, reference)


def test_ctrl_c_says_resume_last_and_the_resumed_run_is_exact(
    starmd, monkeypatch, keep_sigint, tiny_dataset, reference, tmp_path
):
    _at_step(monkeypatch, 2, _interrupt)
    outcome = starmd(*_args(tiny_dataset, tmp_path))
    assert outcome.code == 130 and "Traceback" not in outcome.err
    assert outcome.error_lines[-1] == (
        "interrupted; rerun with --resume last to continue from the last saved checkpoint"
    )
    monkeypatch.undo()
    assert starmd(*_args(tiny_dataset, tmp_path, "--resume", "last")).code == 0
    assert_same_weights(tmp_path, reference)


@pytest.mark.slow
def test_kill_at_a_random_point_then_resume_gives_the_same_weights(tiny_dataset, tmp_path):
    epochs = 4
    whole = tmp_path / "whole"
    config = TrainConfig.from_yaml(None, TINY + [f"trainer.max_epochs={epochs}"])
    train(tiny_dataset, whole, config, progress=False)
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "starmd.cli",
        *map(str, _args(tiny_dataset, run, epochs=epochs)),
    ]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None and not last.exists():
        time.sleep(0.005)
    first, start = last.stat().st_mtime_ns, time.time()
    while time.time() < deadline and child.poll() is None and last.stat().st_mtime_ns == first:
        time.sleep(0.005)
    epoch_s = time.time() - start  # the second epoch's length: scale the kill to this machine
    time.sleep(np.random.default_rng().uniform(0, epoch_s))  # somewhere in the third epoch
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _epoch_of(last) < epochs - 1, "the run should have been killed before its end"
    resumed = subprocess.run([*command, "--resume", "last"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(run, whole)


def test_second_run_into_the_same_folder_is_refused(starmd, tiny_dataset, tmp_path):
    lock = tmp_path / "train.lock"
    with output_lock(lock, "train"):
        outcome = starmd(*_args(tiny_dataset, tmp_path))
    assert_one_error_line(outcome, str(lock), "another `starmd train`")
    assert not (tmp_path / "config.yaml").exists()


def test_start_weights_that_do_not_fit_leave_no_config_behind(starmd, tiny_dataset, tmp_path):
    """The configuration is written once it has built a module and its start weights fit."""
    run = tmp_path / "run"
    outcome = starmd(*_args(tiny_dataset, run, "--init", "starmd-small"))
    assert_one_error_line(outcome, "starmd-small", "weights do not fit this configuration")
    assert not (run / "config.yaml").exists()


@pytest.mark.parametrize("damage", ["truncated", "byte-changed"])
def test_corrupt_checkpoint_is_one_line_and_stays_as_it_is(
    starmd, tiny_dataset, reference, tmp_path, damage
):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    last = run / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    outcome = starmd(*_args(tiny_dataset, run, "--resume", "last"))
    assert_one_error_line(outcome, str(last), "corrupt or truncated checkpoint")
    assert last.read_bytes() == bytes(data)


@pytest.mark.parametrize("damage", ["chunk-deleted", "chunk-truncated"])
def test_corrupt_dataset_store_is_one_line(starmd, tiny_dataset, tmp_path, damage):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    chunks = sorted((data / "dataset.zarr").glob("proteins/*/R1/frames/c/*/0/0"))
    assert len(chunks) > 1
    if damage == "chunk-deleted":  # zarr would read it as zeros
        for chunk in chunks:
            chunk.unlink()
    else:
        for chunk in chunks:
            chunk.write_bytes(chunk.read_bytes()[:10])
    outcome = starmd(*_args(data, tmp_path / "run"))
    assert_one_error_line(outcome, str(data / "dataset.zarr"), "corrupt dataset")


def test_read_only_run_folder_is_one_line(starmd, disk, tiny_dataset, tmp_path):
    disk(tmp_path, error=errno.EROFS)
    outcome = starmd(*_args(tiny_dataset, tmp_path))
    assert_one_error_line(outcome, str(tmp_path), "read-only file system")


def test_run_folder_under_a_file_says_to_fix_the_path_not_to_resume(starmd, tiny_dataset, tmp_path):
    (tmp_path / "file").write_text("")
    run = tmp_path / "file" / "run"
    line = assert_one_error_line(starmd(*_args(tiny_dataset, run)), str(run), "check the path")
    assert "--resume" not in line


def test_run_folder_vanishing_mid_run_is_one_line(starmd, monkeypatch, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    _at_step(monkeypatch, 2, lambda: shutil.rmtree(run))
    outcome = starmd(*_args(tiny_dataset, run))
    assert_one_error_line(outcome, str(run), "run folder removed while training")
