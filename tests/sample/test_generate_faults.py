"""Fault matrix, `starmd generate` row (docs/faults.md): disk full, kill, Ctrl-C, a second
run, corrupt resume state, an unwritable or vanished output folder."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import time

import mdtraj
import numpy as np
import pytest

from starmd.outputs import output_lock
from starmd.sample.generate import GenerationSettings, generate
from tests.conftest import STRUCTURES
from tests.faults import assert_one_error_line

VILLIN = STRUCTURES / "1vii.pdb"
FRAMES, CHUNK = 10, 3


def _args(out, model, *extra):
    return [
        "generate", VILLIN, "-o", out, "--model", model, "--frames", FRAMES, "--dt", "100ps",
        "--steps", 2, "--context", 3, "--chunk", CHUNK, "--seed", 1, "--device", "cpu", *extra,
    ]  # fmt: skip


def _stop_after_first_chunk(starmd, tiny_model_path, tmp_path, monkeypatch) -> None:
    """Run generate into ``tmp_path`` and interrupt it (Ctrl-C) right after its first commit."""
    from starmd.sample import writer

    real_commit = writer.TrajectoryWriter.commit

    def interrupt_after_first_commit(self, *args, **kwargs):
        real_commit(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer.TrajectoryWriter, "commit", interrupt_after_first_commit)
    starmd(*_args(tmp_path, tiny_model_path))
    monkeypatch.undo()


@pytest.fixture(scope="module")
def reference(tiny_model_path, tmp_path_factory):
    """The uninterrupted run every faulty run must end up equal to."""
    out = tmp_path_factory.mktemp("reference")
    settings = GenerationSettings(
        frames=FRAMES, dt_ps=100.0, steps=2, context=3, chunk=CHUNK, seed=1
    )
    generate(VILLIN, out, settings, model=tiny_model_path, device="cpu")
    return out


def _frames(out):
    return mdtraj.load(str(out / "1vii_R1.xtc"), top=str(out / "1vii.pdb"))


def test_disk_full_leaves_committed_chunks_readable_and_resume_is_exact(
    starmd, disk, tiny_model_path, reference, tmp_path
):
    """The issue's case: the disk fills up in the middle of a chunk's append."""
    full = reference / "1vii_R1.xtc"
    xtc = tmp_path / "1vii_R1.xtc"
    limited = disk(xtc, free=full.stat().st_size // 2)
    outcome = starmd(*_args(tmp_path, tiny_model_path))
    assert limited.writes_refused == 1
    assert_one_error_line(outcome, str(xtc), "no space left on device", "--resume")
    written = _frames(tmp_path)  # readable: the partial chunk was cut off
    assert 0 < written.n_frames < FRAMES and written.n_frames % CHUNK == 0
    np.testing.assert_array_equal(written.xyz, _frames(reference).xyz[: written.n_frames])

    limited.free = None  # space freed
    assert starmd(*_args(tmp_path, tiny_model_path, "--resume")).code == 0
    assert xtc.read_bytes() == full.read_bytes()


def test_disk_full_while_saving_the_progress_record_keeps_the_last_commit(
    starmd, disk, tiny_model_path, reference, tmp_path
):
    progress = tmp_path / "1vii.progress.json"
    limited = disk(tmp_path, free=None)
    committed = {}

    def fill_after_first_commit(path, *args, **kwargs):
        if path == progress and progress.exists() and not committed:
            committed["record"] = progress.read_text()
            limited.free = 0
        return real_write(path, *args, **kwargs)

    import starmd.sample.writer as writer_module

    real_write = writer_module.write_atomically
    writer_module.write_atomically = fill_after_first_commit
    try:
        outcome = starmd(*_args(tmp_path, tiny_model_path))
    finally:
        writer_module.write_atomically = real_write
    assert_one_error_line(outcome, "no space left on device")
    assert progress.read_text() == committed["record"]  # the old record, whole
    assert not list(tmp_path.glob(".1vii.progress*"))  # no temporary file left behind
    limited.free = None
    assert starmd(*_args(tmp_path, tiny_model_path, "--resume")).code == 0
    assert (tmp_path / "1vii_R1.xtc").read_bytes() == (reference / "1vii_R1.xtc").read_bytes()


def test_kill_at_a_random_commit_then_resume_gives_the_same_bytes(
    starmd, tiny_model_path, reference, tmp_path
):
    """Killed at commit 1 or 2 of 3; while it is stopped there, a second run is refused."""
    command = [sys.executable, "-m", "starmd.cli", *map(str, _args(tmp_path, tiny_model_path))]
    child = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    progress = tmp_path / "1vii.progress.json"
    kill_after = np.random.default_rng().integers(1, FRAMES // CHUNK)  # commits 1..2 of 3
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        try:
            frames = json.loads(progress.read_text())["replicas"][0]["frames"]
        except (OSError, ValueError, KeyError):
            frames = 0
        if frames >= kill_after * CHUNK:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGSTOP)  # holds its lock, cannot finish meanwhile
    second = starmd(*_args(tmp_path, tiny_model_path, "--resume"))
    assert_one_error_line(second, f"another `starmd generate` (pid {child.pid})")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert progress.exists(), "the run should have been killed before its end"
    assert _frames(tmp_path).n_frames >= CHUNK  # what was committed is readable
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "1vii_R1.xtc").read_bytes() == (reference / "1vii_R1.xtc").read_bytes()


def test_ctrl_c_prints_one_line_saying_how_to_resume(
    starmd, tiny_model_path, tmp_path, monkeypatch
):
    from starmd.sample import writer

    real_commit = writer.TrajectoryWriter.commit

    def interrupt_after_first_commit(self, *args, **kwargs):
        real_commit(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer.TrajectoryWriter, "commit", interrupt_after_first_commit)
    outcome = starmd(*_args(tmp_path, tiny_model_path))
    assert outcome.code == 130
    assert outcome.error_lines[-1].startswith("interrupted")
    assert "--resume" in outcome.error_lines[-1] and "Traceback" not in outcome.err
    assert _frames(tmp_path).n_frames == CHUNK


def test_second_run_into_the_same_outputs_is_refused(starmd, tiny_model_path, tmp_path):
    lock = tmp_path / "1vii.lock"
    with output_lock(lock, "generate"):
        outcome = starmd(*_args(tmp_path, tiny_model_path, "--resume"))
        assert_one_error_line(outcome, str(lock), "another `starmd generate`")
        assert not (tmp_path / "1vii_R1.xtc").exists()  # nothing written beside the holder
    assert starmd(*_args(tmp_path, tiny_model_path)).code == 0  # lock released


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda text: text[: len(text) // 2], "corrupt progress record"),
        (lambda text: text.replace('"bytes": ', '"bytes": -'), "corrupt progress record"),
    ],
    ids=["truncated", "hand-edited"],
)
def test_corrupt_progress_record_is_one_line_and_nothing_is_overwritten(
    starmd, tiny_model_path, tmp_path, monkeypatch, edit, problem
):
    _stop_after_first_chunk(starmd, tiny_model_path, tmp_path, monkeypatch)
    progress = tmp_path / "1vii.progress.json"
    progress.write_text(edit(progress.read_text()))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    outcome = starmd(*_args(tmp_path, tiny_model_path, "--resume"))
    assert_one_error_line(outcome, str(progress), problem)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_corrupt_rollout_state_is_one_line(starmd, tiny_model_path, tmp_path, monkeypatch):
    _stop_after_first_chunk(starmd, tiny_model_path, tmp_path, monkeypatch)
    (state,) = tmp_path.glob("1vii.rollout.*.pt")
    state.write_bytes(state.read_bytes()[:100])
    outcome = starmd(*_args(tmp_path, tiny_model_path, "--resume"))
    assert_one_error_line(outcome, str(state), "unreadable rollout state")
    assert _frames(tmp_path).n_frames == CHUNK


def test_read_only_output_folder_is_one_line(starmd, disk, tiny_model_path, tmp_path):
    disk(tmp_path, error=errno.EROFS)
    outcome = starmd(*_args(tmp_path, tiny_model_path))
    assert_one_error_line(outcome, str(tmp_path), "read-only file system")


def test_output_folder_vanishing_mid_run_is_one_line(
    starmd, tiny_model_path, tmp_path, monkeypatch
):
    from starmd.sample import writer

    out = tmp_path / "out"
    real_commit = writer.TrajectoryWriter.commit

    def remove_folder_after_first_commit(self, *args, **kwargs):
        real_commit(self, *args, **kwargs)
        shutil.rmtree(out, ignore_errors=True)

    monkeypatch.setattr(writer.TrajectoryWriter, "commit", remove_folder_after_first_commit)
    outcome = starmd(*_args(out, tiny_model_path))
    assert_one_error_line(outcome, str(out), "no such file or directory")


def _user_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _user_namespaces(), reason="needs unshare and user namespaces")
def test_disk_full_on_a_real_small_file_system(tiny_model_path, reference, tmp_path):
    """The issue's case on a real 1 MB tmpfs (mounted in a user namespace): the first commit
    fits (topology, 0.67 MB rollout state, one chunk), the second does not; after the mount is
    enlarged (space freed), --resume finishes with the bytes of an uninterrupted run."""
    small, failed, resumed = tmp_path / "small", tmp_path / "failed", tmp_path / "resumed"
    small.mkdir()
    generate_ = " ".join(
        [sys.executable, "-m", "starmd.cli", *map(str, _args(small, tiny_model_path))]
    )
    script = (
        f"mount -t tmpfs -o size=1000k tmpfs {small} || exit 99\n"
        f"{generate_} 2> {tmp_path}/stderr; echo $? > {tmp_path}/code\n"
        f"cp -a {small}/. {failed}/\n"
        f"mount -o remount,size=20m {small} && {generate_} --resume && cp -a {small}/. {resumed}/\n"
    )
    failed.mkdir()
    resumed.mkdir()
    run = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "code").read_text().strip() == "1"
    errors = [line for line in (tmp_path / "stderr").read_text().splitlines() if "error" in line]
    assert len(errors) == 1 and "no space left on device" in errors[0], errors
    assert "Traceback" not in (tmp_path / "stderr").read_text()
    kept = _frames(failed)
    assert 0 < kept.n_frames < FRAMES
    assert (resumed / "1vii_R1.xtc").read_bytes() == (reference / "1vii_R1.xtc").read_bytes()
