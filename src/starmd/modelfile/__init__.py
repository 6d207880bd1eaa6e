"""The model file: what a trained denoiser is saved as, and the one way every command finds it.

A model file is one ``safetensors`` file holding the EMA weights of a
:class:`~starmd.model.StarDenoiser` and, in its metadata, the format tag :data:`FORMAT` and the
full :class:`~starmd.modelfile.config.TrainConfig` (network, diffusion, sampling defaults); a
Lightning ``.ckpt`` of a run is read too (its EMA weights). This module sits below both
``train/`` (which writes model files) and ``sample/`` (which reads them), so neither imports the
other.

Every entry point that takes a model (``generate --model``, ``demo --model``, ``bench --model``
and ``--speed-models``, ``train --init`` and ``--distill-from``) names it through
:func:`resolve_model`: a bundled model's name or a path, with one error text for a file that is
not there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from starmd.diffusion.se3_diffuser import SE3TorusDiffuser
from starmd.diffusion.settings import build_diffuser
from starmd.errors import StarmdCheckpointError, StarmdInputError, located
from starmd.model import StarDenoiser
from starmd.modelfile.config import TrainConfig

FORMAT = "starmd-model-1"
"""The ``format`` entry of a model file's metadata."""
BUNDLED_MODELS = {
    "starmd-small": "assets/models/starmd-small.safetensors",
    "starmd-small-fast": "assets/models/starmd-small-fast.safetensors",
}
"""Models shipped in the package, by the name ``--model`` accepts (docs/model_card.md)."""
DEFAULT_MODEL = "starmd-small"


@dataclass
class LoadedModel:
    """A denoiser ready for sampling, with the configuration (and diffusion) it was trained
    with."""

    model: StarDenoiser
    config: TrainConfig
    source: str

    @property
    def diffuser(self) -> SE3TorusDiffuser:
        return build_diffuser(self.config.diffusion)

    def to(self, device: str | torch.device) -> LoadedModel:
        """This model with its weights on ``device`` (itself if they are there already)."""
        target = torch.device(device)
        weights = next(self.model.parameters(), None)
        if weights is None or weights.device == target:
            return self
        return LoadedModel(self.model.to(target), self.config, self.source)


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Where the bundled model ``name`` is installed (the file may be absent)."""
    return Path(str(resources.files("starmd") / BUNDLED_MODELS[name]))


def installed_default_model() -> Path | None:
    """The bundled default model's file, or None where it is not installed."""
    path = bundled_model_path()
    return path if path.exists() else None


def resolve_model(model: str | Path | None) -> Path:
    """The model file a user named: None = the bundled default, a bundled model's name
    (``starmd-small``, ``starmd-small-fast``; a file of that name in the working directory
    wins), or a path.

    Raises:
        StarmdCheckpointError: ``"PATH: model file not found"``.
        StarmdInputError: a bundled model that is not installed.
    """
    if model is not None and (str(model) not in BUNDLED_MODELS or Path(model).exists()):
        path = Path(model)
        if not path.exists():
            raise StarmdCheckpointError(located(path, "model file not found"))
        return path
    name = DEFAULT_MODEL if model is None else str(model)
    path = bundled_model_path(name)
    if not path.exists():
        raise StarmdInputError(
            f"the bundled model {name} is not installed; pass --model RUN/model.safetensors"
        )
    return path


def save_model(model: StarDenoiser, config: TrainConfig, path: str | Path) -> Path:
    """Write ``model``'s weights and ``config`` as one model file (atomic); returns ``path``."""
    from safetensors.torch import save_file

    from starmd.structure.io import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(config.to_dict())}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def average_models(paths: list[str | Path], weights: list[float] | None = None) -> LoadedModel:
    """The weight average of model files of one architecture (a "model soup": several
    fine-tunes of the same starting weights averaged parameter by parameter), with the first
    file's configuration (its sampling defaults included).

    Args:
        paths: two or more model files (or ``.ckpt``) whose networks have the same layout.
        weights: one non-negative weight per file (normalised to sum 1); default equal.

    Raises:
        StarmdCheckpointError: unreadable file, or files whose networks differ (another
            configuration of the network, or other parameter names or shapes).
        StarmdInputError: fewer than two files, or weights that do not fit them.
    """
    if len(paths) < 2:
        raise StarmdInputError(f"averaging needs two or more model files, got {len(paths)}")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths) or min(weights) < 0 or sum(weights) <= 0:
        raise StarmdInputError(
            f"need one non-negative weight per model file ({len(paths)}), summing above 0; "
            f"got {weights}"
        )
    loaded = [load_model(p) for p in paths]
    first = loaded[0]
    layout = first.config.denoiser(str(paths[0]))
    names = {k: v.shape for k, v in first.model.state_dict().items()}
    for path, other in zip(paths[1:], loaded[1:], strict=True):
        other_names = {k: v.shape for k, v in other.model.state_dict().items()}
        if other.config.denoiser(str(path)) != layout or other_names != names:
            raise StarmdCheckpointError(
                located(Path(path), f"network differs from {paths[0]}'s; cannot average them")
            )
    total = sum(weights)
    states = [m.model.state_dict() for m in loaded]
    averaged = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            averaged[key] = sum(w / total * s[key] for w, s in zip(weights, states, strict=True))
        elif all(torch.equal(value, s[key]) for s in states[1:]):
            averaged[key] = value  # integer buffers (indices, tables) shared by every file
        else:
            raise StarmdCheckpointError(
                f"{key} is an integer buffer that differs between the model files; "
                "cannot average them"
            )
    first.model.load_state_dict(averaged)
    return first


def read_config(path: str | Path) -> TrainConfig:
    """The configuration saved in a model file, without building the network (a ``.ckpt`` is
    read whole).

    Raises:
        StarmdCheckpointError: missing, corrupt or not a starmd model file.
    """
    return _read(Path(path), weights=False)[0]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file (``model.safetensors``) or a Lightning ``.ckpt`` (its EMA weights).

    Raises:
        StarmdCheckpointError: missing, corrupt or incompatible file.
    """
    path = Path(path)
    config, state = _read(path, weights=True)
    model = StarDenoiser(config.denoiser(str(path)))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise StarmdCheckpointError(
            located(path, f"weights do not match the model configuration ({first})")
        ) from exc
    return LoadedModel(model.to(device).eval(), config, str(path))


def _read(path: Path, weights: bool) -> tuple[TrainConfig, dict[str, Any]]:
    """The config of a model file and (with ``weights``) its state dict."""
    if not path.exists():
        raise StarmdCheckpointError(located(path, "model file not found"))
    try:
        if path.suffix == ".ckpt":
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            config = TrainConfig.from_dict(ckpt["hyper_parameters"]["config"], str(path))
            state = {
                k[len("ema.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("ema.")
            }
            return config, state
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise StarmdCheckpointError(
                    located(path, f"not a starmd model (format {metadata.get('format')!r})")
                )
            config = TrainConfig.from_dict(json.loads(metadata["config"]), str(path))
            state = {k: fh.get_tensor(k) for k in fh.keys()} if weights else {}
        return config, state
    except StarmdCheckpointError:
        raise
    except Exception as exc:
        raise StarmdCheckpointError(located(path, f"unreadable model file ({exc})")) from exc
