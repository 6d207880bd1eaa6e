"""`kernels.on_disk`: whether a compiled loop's first call will compile it (the notice that
`starmd generate` prints before a first run's compile)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from starmd.structure.kernels import on_disk


def _dispatcher(index_path) -> SimpleNamespace:
    cache_file = SimpleNamespace(_index_path=index_path)
    return SimpleNamespace(_cache=SimpleNamespace(_cache_file=cache_file))


def test_on_disk_reads_the_cache_index(tmp_path):
    present = tmp_path / "f.nbi"
    present.write_bytes(b"")
    assert on_disk(_dispatcher(present))
    assert not on_disk(_dispatcher(present), _dispatcher(tmp_path / "missing.nbi"))
    assert on_disk(object())  # not readable (another numba): assumed cached, nothing said


def test_on_disk_follows_numbas_cache_folder(tmp_path):
    """A real compiled loop: not on disk in an empty cache folder; on disk once called there."""
    code = (
        "import numpy as np; from starmd.structure.kernels import on_disk, cross; "
        "before = on_disk(cross); cross(1.0, 0.0, 0.0, 0.0, 1.0, 0.0); "
        "print(before, on_disk(cross))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.split() == ["False", "True"], run.stderr
