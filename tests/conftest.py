"""Shared fixtures: bundled real structures and a quiet, single-threaded torch."""

from __future__ import annotations

import os
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch

from tests.faults import disk, starmd  # noqa: F401  (fixtures of the fault matrix)

torch.set_num_threads(1)
# keep IGSO3 tables out of the user's cache directory during tests
os.environ.setdefault("STARMD_CACHE_DIR", tempfile.mkdtemp(prefix="starmd-test-cache-"))
warnings.filterwarnings("ignore", message="Unlikely unit cell vectors")

ASSETS = Path(str(resources.files("starmd") / "assets"))
STRUCTURES = ASSETS / "structures"


@pytest.fixture(scope="session")
def structures_dir() -> Path:
    return STRUCTURES


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """An untrained tiny model with randomized gates, exported like a trained one."""
    from starmd.modelfile.config import TrainConfig
    from starmd.train.module import StarMDModule
    from starmd.train.run import export_model

    torch.manual_seed(0)
    module = StarMDModule(TrainConfig.from_yaml(None, ["model.preset=tiny"]))
    with torch.no_grad():
        for p in module.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return export_model(module, tmp_path_factory.mktemp("model") / "tiny.safetensors")
