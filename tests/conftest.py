"""Shared fixtures: bundled real structures and a quiet, single-threaded torch."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Unlikely unit cell vectors")

ASSETS = Path(str(resources.files("starmd") / "assets"))
STRUCTURES = ASSETS / "structures"


@pytest.fixture(scope="session")
def structures_dir() -> Path:
    return STRUCTURES
