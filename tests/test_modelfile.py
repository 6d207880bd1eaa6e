"""The model file: one resolver behind every command that takes a model, one error text."""

import pytest
import torch

from starmd.errors import StarmdCheckpointError, StarmdInputError
from starmd.model import StarDenoiser
from starmd.modelfile import (
    BUNDLED_MODELS,
    average_models,
    installed_default_model,
    load_model,
    read_config,
    resolve_model,
    save_model,
)
from tests.conftest import ASSETS, STRUCTURES
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from starmd.data.prepare import prepare

    root = tmp_path_factory.mktemp("data")
    prepare(ASSETS / "demo" / "1am7", root, fractions=(1, 0, 0))
    return root


def error_line(code: int, err: str) -> str:
    """The error a command ended with (a progress bar may have been drawn before it)."""
    assert code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def entry_points(model: str, dataset, tmp_path) -> dict[str, list[str]]:
    """Every command that names a model, with ``model`` in its model option."""
    out = str(tmp_path / "out")
    return {
        "generate": ["generate", str(STRUCTURES / "1vii.pdb"), "-o", out, "--model", model],
        "demo": ["demo", "-o", out, "--model", model],
        "bench --model": ["bench", "-o", out, "--sections", "speed", "--model", model],
        "bench --speed-models": ["bench", "-o", out, "--speed-models", model],
        "train --init": ["train", str(dataset), "-o", out, "--init", model],
        "train --distill-from": ["train", str(dataset), "-o", out, "--distill-from", model],
    }


def test_every_entry_point_says_the_same_for_a_missing_model_file(dataset, tmp_path, capsys):
    missing = str(tmp_path / "nope.safetensors")
    for name, args in entry_points(missing, dataset, tmp_path).items():
        assert error_line(*run_cli(args, capsys)[::2]) == f"error: {missing}: model file not found"
        assert not (tmp_path / "out" / "model.safetensors").exists(), name


def test_every_entry_point_says_the_same_for_a_bundled_name_not_installed(
    dataset, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(BUNDLED_MODELS, "starmd-absent", "assets/models/absent.safetensors")
    expected = (
        "error: the bundled model starmd-absent is not installed; "
        "pass --model RUN/model.safetensors"
    )
    for args in entry_points("starmd-absent", dataset, tmp_path).values():
        assert error_line(*run_cli(args, capsys)[::2]) == expected


def test_a_bundled_name_resolves_to_the_installed_file():
    path = resolve_model("starmd-small-fast")
    assert path.name == "starmd-small-fast.safetensors" and path.is_file()
    assert installed_default_model() == resolve_model(None)


def test_read_config_is_the_config_load_model_sees():
    path = resolve_model("starmd-small")
    assert read_config(path) == load_model(path).config


def test_a_file_that_is_not_a_model_is_named_in_the_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(StarmdCheckpointError, match="bad.safetensors: unreadable model file"):
        read_config(bad)


def _perturbed_copy(source, out, seed: int):
    """``source``'s network with every weight moved by a seeded random step, as a model file."""
    loaded = load_model(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return save_model(loaded.model, loaded.config, out)


def test_average_models_is_the_parameterwise_weighted_mean(tiny_model_path, tmp_path):
    a = _perturbed_copy(tiny_model_path, tmp_path / "a.safetensors", 1)
    b = _perturbed_copy(tiny_model_path, tmp_path / "b.safetensors", 2)
    sa, sb = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    soup = average_models([a, b], [1.0, 3.0]).model.state_dict()
    checked = 0
    for key, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * sa[key] + 0.75 * sb[key])
            checked += 1
    assert checked > 10
    # a file averaged with itself is itself; equal weights by default
    same = average_models([a, a]).model.state_dict()
    assert all(torch.equal(same[k], sa[k]) for k in sa)
    assert read_config(a) == average_models([a, b]).config


def test_average_models_refuses_networks_that_differ(tiny_model_path, tmp_path):
    loaded = load_model(tiny_model_path)
    other = load_model(tiny_model_path)
    other.config.model.overrides = dict(other.config.model.overrides or {}, n_blocks=1)
    smaller = StarDenoiser(other.config.denoiser())
    path = save_model(smaller, other.config, tmp_path / "smaller.safetensors")
    with pytest.raises(StarmdCheckpointError, match="network differs"):
        average_models([tiny_model_path, path])
    with pytest.raises(StarmdInputError, match="two or more"):
        average_models([tiny_model_path])
    with pytest.raises(StarmdInputError, match="one non-negative weight"):
        average_models([tiny_model_path, tiny_model_path], [1.0, -1.0])
    assert loaded.config.model.overrides != other.config.model.overrides
