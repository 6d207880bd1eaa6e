"""starmd: long protein MD trajectories from a causal spatio-temporal SE(3) diffusion model.

Units: lengths are Angstrom in every starmd array (mdtraj's nanometres are converted at the I/O
boundary), angles are radians, physical time is picoseconds (``dt_ps``).

The pipeline, one sub-package per stage: ``structure`` -> ``data`` -> ``diffusion``/``model`` ->
``modelfile`` (the saved model, shared by the next two) -> ``train``/``sample`` -> ``evaluate``;
``simulate`` runs reference MD with OpenMM; ``cli`` holds every command.

The Python API (docs/api.md), imported on first use so that ``import starmd`` stays fast::

    import starmd

    result = starmd.generate("protein.pdb", frames=200, dt="50ps", replicas=2)
    result.trajectories[0]                  # mdtraj.Trajectory of replica 1
    result.save("out/")
    table = starmd.evaluate("out/", "md/", "report/")   # reference MD in the ATLAS layout
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": "starmd.api",
    "generate": "starmd.api",
    "GenerationResult": "starmd.api",
    "evaluate": None,  # the starmd.evaluate package, callable (see its docstring)
}
__all__ = ["GenerationResult", "__version__", "evaluate", "generate", "load_model"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'starmd' has no attribute {name!r}")
    import importlib

    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f"starmd.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
