"""starmd: long protein MD trajectories from a causal spatio-temporal SE(3) diffusion model.

Units: lengths are Angstrom in every starmd array (mdtraj's nanometres are converted at the I/O
boundary), angles are radians, physical time is picoseconds (``dt_ps``).

The pipeline, one sub-package per stage: ``structure`` -> ``data`` -> ``diffusion``/``model`` ->
``modelfile`` (the saved model, shared by the next two) -> ``train``/``sample`` -> ``evaluate``;
``simulate`` runs reference MD with OpenMM; ``cli`` holds every command.
"""

__version__ = "0.1.0"
