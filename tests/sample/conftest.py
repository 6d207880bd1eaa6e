import pytest
import torch

from starmd.train.config import TrainConfig
from starmd.train.module import StarMDModule
from starmd.train.run import export_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """An untrained tiny model with randomized gates, exported like a trained one."""
    torch.manual_seed(0)
    module = StarMDModule(TrainConfig.from_yaml(None, ["model.preset=tiny"]))
    with torch.no_grad():
        for p in module.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return export_model(module, tmp_path_factory.mktemp("model") / "tiny.safetensors")
