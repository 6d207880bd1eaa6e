"""Shared fixtures: bundled real structures and a quiet, single-threaded torch."""

from __future__ import annotations

import os
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# keep IGSO3 tables out of the user's cache directory during tests
os.environ.setdefault("STARMD_CACHE_DIR", tempfile.mkdtemp(prefix="starmd-test-cache-"))
warnings.filterwarnings("ignore", message="Unlikely unit cell vectors")

ASSETS = Path(str(resources.files("starmd") / "assets"))
STRUCTURES = ASSETS / "structures"


@pytest.fixture(scope="session")
def structures_dir() -> Path:
    return STRUCTURES
