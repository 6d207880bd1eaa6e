"""The Python API: ``starmd.load_model``, ``starmd.generate`` and ``starmd.evaluate``.

The same functions the command line wraps, with the same settings and the same errors
(:class:`starmd.errors.StarmdError` subclasses, one line naming the file and the problem); the
top-level names are imported lazily by :mod:`starmd`, so ``import starmd`` stays fast. The
reference page is ``docs/api.md``.

Example::

    import starmd

    model = starmd.load_model("starmd-small")          # or a path to model.safetensors / .ckpt
    result = starmd.generate("protein.pdb", frames=200, dt="50ps", replicas=2, model=model)
    traj = result.trajectories[0]                      # mdtraj.Trajectory, replica 1
    print(traj.n_frames, result.sidecar["flagged_count"])
    result.save("out/")                                # protein.pdb + protein_R1.xtc ... + .json
    table = starmd.evaluate("out/", reference="md/", out_dir="report/")
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from starmd.errors import StarmdInputError
from starmd.modelfile import LoadedModel
from starmd.units import parse_duration_ps


def load_model(name_or_path: str | Path | None = None, device: str = "cpu") -> LoadedModel:
    """Load a bundled model by name (``"starmd-small"``, the default, or ``"starmd-small-fast"``)
    or a model file (``RUN/model.safetensors`` or a training ``.ckpt``).

    Returns a :class:`~starmd.modelfile.LoadedModel` (``.model``: the denoiser, ``.config``:
    its training configuration and sampling defaults) to pass as ``model=`` to
    :func:`generate`, so that many proteins share one load.

    Raises:
        StarmdInputError: an unknown name; StarmdCheckpointError: a missing or corrupt file.

    Example::

        model = starmd.load_model("starmd-small-fast")
        model.config.sampling.dt_ps   # its recommended time step, ps
    """
    from starmd.modelfile import load_model as load_file
    from starmd.modelfile import resolve_model
    from starmd.sample.generate import resolve_device

    return load_file(resolve_model(name_or_path), resolve_device(device))


@dataclass
class GenerationResult:
    """What :func:`generate` returns.

    Attributes:
        trajectories: one ``mdtraj.Trajectory`` per replica (frame 0 = the input structure,
            heavy atoms with the input's residue names, chains and numbers; time in ps;
            coordinates in nm, as mdtraj keeps them, at the XTC's 0.001 nm precision).
        sidecar: the run's record (settings, model, speed, health, flagged frames, input),
            as written to ``{name}.json``.
        out_dir: where the files are, or None when nothing was written.
    """

    trajectories: list
    sidecar: dict
    out_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.sidecar["name"]

    def save(self, out_dir: str | Path) -> Path:
        """Write ``{name}.pdb`` (frame 0), ``{name}_R{i}.xtc`` and ``{name}.json`` into
        ``out_dir`` (created), the layout ``starmd evaluate`` reads; returns ``out_dir``."""
        from starmd.structure.io import atomic_write, write_atomically

        out_dir = Path(out_dir)
        topology = self.trajectories[0][0]
        atomic_write(out_dir / f"{self.name}.pdb", lambda tmp: topology.save_pdb(tmp))
        for r, trajectory in enumerate(self.trajectories):
            path = out_dir / f"{self.name}_R{r + 1}.xtc"
            atomic_write(path, lambda tmp, t=trajectory: t.save_xtc(tmp))
        write_atomically(out_dir / f"{self.name}.json", json.dumps(self.sidecar, indent=2))
        return out_dir


def generate(
    structure: str | Path,
    *,
    frames: int = 100,
    dt: str | float | None = None,
    replicas: int = 1,
    seed: int = 0,
    model: str | Path | LoadedModel | None = None,
    out_dir: str | Path | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    context: int | None = 7,
    sink: bool = True,
    chains: Sequence[str] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[dict], None] | None = None,
    **settings: Any,
) -> GenerationResult:
    """Generate ``replicas`` trajectories of ``frames`` frames (frame 0 = the input) from a
    structure file, as ``starmd generate`` does, and return them in memory.

    Args:
        structure: PDB, mmCIF or another format mdtraj reads (first model; water, ions,
            ligands and hydrogens are stripped, and recorded in ``sidecar["input"]``).
        frames: frames per trajectory, frame 0 included.
        dt: time between frames: a string with a unit (``"50ps"``, ``"0.1ns"``) or a number
            of picoseconds; None = the model's recommended step.
        replicas: independent trajectories, generated as one batch (replica ``r`` does not
            depend on how many there are).
        seed: random seed (same seed and settings: the same trajectories).
        model: a bundled model's name, a model file, or a :func:`load_model` result
            (default: ``starmd-small``).
        out_dir: also keep the files (``{name}.pdb``, ``{name}_R{i}.xtc``, ``{name}.json``)
            there; None writes them to a temporary folder that is removed.
        steps, sampler: denoising steps per frame and sampler (None = the model's defaults).
        context: past frames in the KV cache (None = the full history); ``sink`` keeps frame 0.
        chains: keep only these chain ids.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        overwrite, resume: replace, or continue, an earlier run in ``out_dir``.
        force: allow a ``dt`` far outside the model's trained range.
        progress: called after every frame with ``frame``, ``frames``, ``elapsed_s``,
            ``flagged``.
        **settings: any other field of :class:`starmd.sample.generate.GenerationSettings`,
            under its own name: ``refine=True``, ``schedule_rho``, ``chunk``,
            ``stop_on_failure`` (the same settings as the command line's flags).

    Returns:
        :class:`GenerationResult`: ``.trajectories`` (one ``mdtraj.Trajectory`` per replica),
        ``.sidecar``, ``.save(out_dir)``.

    Raises:
        StarmdInputError: unreadable or unmodellable structure, bad settings (an unknown
            keyword included), existing output without ``overwrite``/``resume``;
            StarmdCheckpointError: a bad model file.

    Example::

        result = starmd.generate("1vii.pdb", frames=100, dt="50ps", replicas=2)
        traj = result.trajectories[0]
        traj.superpose(traj, 0)   # any mdtraj analysis from here
    """
    from starmd.sample.generate import GenerationSettings
    from starmd.sample.generate import generate as run

    known = {f.name for f in fields(GenerationSettings)} - {"dt_ps"}  # spelled dt here
    unknown = sorted(set(settings) - known)
    if unknown:
        raise StarmdInputError(
            f"starmd.generate: unknown setting(s) {', '.join(unknown)}; "
            f"known: dt, {', '.join(sorted(known))}"
        )
    settings = GenerationSettings(
        frames=frames,
        dt_ps=parse_duration_ps(dt) if isinstance(dt, str) else dt,
        replicas=replicas,
        seed=seed,
        steps=steps,
        context=context,
        sink=sink,
        sampler=sampler,
        chains=list(chains or []),
        **settings,
    )
    options = dict(model=model, device=device, progress=progress, force=force)
    if out_dir is not None:
        sidecar = run(structure, out_dir, settings, resume=resume, overwrite=overwrite, **options)
        return GenerationResult(_load_trajectories(Path(out_dir), sidecar), sidecar, Path(out_dir))
    with tempfile.TemporaryDirectory(prefix="starmd-") as scratch:
        sidecar = run(structure, scratch, settings, **options)
        return GenerationResult(_load_trajectories(Path(scratch), sidecar), sidecar)


def _load_trajectories(out_dir: Path, sidecar: dict) -> list:
    import mdtraj

    topology = str(out_dir / sidecar["files"]["topology"])
    return [
        mdtraj.load(str(out_dir / name), top=topology) for name in sidecar["files"]["trajectories"]
    ]
