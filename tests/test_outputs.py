"""starmd.outputs: one writer per output, stale locks never block, failed writes name a file."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from starmd.errors import StarmdBusyError
from starmd.outputs import locked_by, naming_file, output_lock, try_lock


def test_a_held_lock_refuses_a_second_holder_with_its_pid(tmp_path):
    lock = tmp_path / "out" / "run.lock"
    with output_lock(lock, "generate"):
        assert lock.read_text().strip().isdigit()
        with pytest.raises(StarmdBusyError, match=r"run.lock: another `starmd generate` \(pid \d+"):
            with output_lock(lock, "generate"):
                pass
    assert not lock.exists() and not lock.parent.exists()  # the folder it made, left empty
    with output_lock(lock, "generate"):  # released
        (lock.parent / "result").write_text("")
    assert [p.name for p in lock.parent.iterdir()] == ["result"]


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    lock = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from starmd.outputs import try_lock
            with try_lock(Path({str(lock)!r})) as acquired:
                print(acquired, flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "True"
    with try_lock(lock) as acquired:
        assert not acquired  # held by the other process
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.exists()  # left behind by the killed holder: stale
    with try_lock(lock) as acquired:
        assert acquired


def test_a_lock_file_removed_by_its_last_holder_is_not_shared(tmp_path):
    lock = tmp_path / "run.lock"
    stale = open(lock, "a+")  # opened before the holder below removes the file
    with try_lock(lock) as first:
        assert first
    with try_lock(lock) as second:
        assert second and lock.exists()
        import fcntl

        fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode: nobody's lock
        with try_lock(lock) as third:
            assert not third
    stale.close()


def test_locked_by_takes_the_lock_its_arguments_name(tmp_path):
    @locked_by(lambda call: tmp_path / f"{call['name']}.lock", "demo")
    def run(name: str, value: int = 1) -> bool:
        return (tmp_path / f"{name}.lock").exists() and value == 1

    assert run("a")
    with output_lock(tmp_path / "b.lock", "demo"), pytest.raises(StarmdBusyError):
        run(name="b")
    assert run("b")


def test_naming_file_fills_only_a_missing_name():
    assert naming_file(OSError(28, "No space left on device"), "out.xtc").filename == "out.xtc"
    named = FileNotFoundError(2, "No such file or directory", "a.json")
    assert naming_file(named, "out.xtc").filename == "a.json"
    assert str(naming_file(OSError("disk full"), "out.xtc")) == "disk full"
