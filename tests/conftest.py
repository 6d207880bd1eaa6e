"""Shared fixtures: bundled real structures and a quiet, single-threaded torch."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.faults import disk, starmd  # noqa: F401  (fixtures of the fault matrix)

torch.set_num_threads(1)
# keep IGSO3 tables out of the user's cache directory during tests
os.environ.setdefault("STARMD_CACHE_DIR", tempfile.mkdtemp(prefix="starmd-test-cache-"))
warnings.filterwarnings("ignore", message="Unlikely unit cell vectors")

ASSETS = Path(str(resources.files("starmd") / "assets"))
STRUCTURES = ASSETS / "structures"


@contextlib.contextmanager
def recording_network_calls(model):
    """Record, in call order, what a rollout's passes through ``model`` (a ``StarDenoiser``)
    encode into the cache (``clean`` tokens), denoise (``noisy`` tokens) and predict
    (``outputs``), by wrapping its three rollout entry points for the duration."""
    calls = SimpleNamespace(clean=[], noisy=[], outputs=[])
    real = model.append_clean, model.denoise, model.append_and_denoise

    def append(cache, cond, tokens):
        calls.clean.append(tokens)
        return real[0](cache, cond, tokens)

    def denoise(cache, cond, tokens):
        out = real[1](cache, cond, tokens)
        calls.noisy.append(tokens)
        calls.outputs.append(out)
        return out

    def merged(cache, cond, clean_tokens, tokens):  # a frame's first step, encoding the last
        out = real[2](cache, cond, clean_tokens, tokens)
        calls.clean.append(clean_tokens)
        calls.noisy.append(tokens)
        calls.outputs.append(out)
        return out

    model.append_clean, model.denoise, model.append_and_denoise = append, denoise, merged
    try:
        yield calls
    finally:
        model.append_clean, model.denoise, model.append_and_denoise = real


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
