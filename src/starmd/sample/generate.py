"""``starmd generate``: structure in, long trajectory out (PDB topology + one XTC per replica).

Outputs in ``out_dir``: ``{name}.pdb`` (heavy-atom topology: real residue names, chain ids and
numbers; frame 0), ``{name}_R{i}.xtc`` (i = 1..replicas, time stamps in ps, every frame
superposed on frame 0 by CA) and ``{name}.json`` (model, settings, seed, wall time, speed,
health counts, flagged frames).

Frames are written in chunks: each chunk is encoded as XTC and appended to the replica's file
(XTC frames are self-contained, so concatenation is a valid XTC), then ``{name}.progress.json``
records the committed frames and byte lengths, atomically. An interrupted run therefore leaves
valid, shorter trajectories, and ``resume=True`` truncates to the last commit, re-encodes the
cached history from the written frames and continues with the same random sequence.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from starmd import __version__
from starmd.diffusion.sampler import SAMPLERS
from starmd.errors import StarmdInputError, located
from starmd.modelfile import LoadedModel, load_model, resolve_model
from starmd.sample.rollout import ProteinInput, Rollout, RolloutSettings, protein_input
from starmd.structure import geometry
from starmd.structure.checks import ca_health
from starmd.structure.io import (
    NM_TO_ANGSTROM,
    atomic_write,
    build_topology,
    load_structure,
)
from starmd.structure.protein import Protein
from starmd.structure.rigid import Rigid
from starmd.structure.superpose import superpose

MAX_FLAGGED = 200
ATOM_BATCH = 16
"""Frames whose heavy atoms are rebuilt in one call (0.13 vs 0.59 ms per frame for 48 residues
at 10 vs 1); bounded so that large proteins keep flat memory."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StarmdInputError(f"--device {device}: CUDA is not available on this machine")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise StarmdInputError(f"--device {device!r}: {exc}") from exc


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 16 * 2**30


def estimate_step_bytes(loaded: LoadedModel, n_residues: int, replicas: int, context: int) -> int:
    """A conservative estimate of one denoising step's peak memory: per-frame pair features
    and IPA logits (L x min(L, pair_neighbours) terms, a few live copies per block) for the two
    frame groups of a rollout's first step per frame (the previous frame's cache encoding runs
    with it), attention over the cache, and the one-off L x L distance matrices of the
    neighbour lists and the elastic prior."""
    cfg = loaded.model.config
    partners = min(n_residues, cfg.pair_neighbours or n_residues)
    groups = 2
    pair = groups * n_residues * partners * (cfg.c_z * 6 + cfg.ipa_heads * 4 + cfg.n_rbf * 2)
    attention = groups * n_residues**2 * (context + 3) * cfg.n_heads * 2
    distances = 4 * n_residues**2 * 2  # a few float64 L x L matrices, in float32 units
    return int(4 * replicas * (pair + attention + distances) * 2)


@dataclass
class GenerationSettings:
    """Everything that determines a generated trajectory (recorded in the sidecar)."""

    frames: int
    dt_ps: float | None = None
    """None: the model's recommended time step (``sampling.dt_ps`` of its config)."""
    replicas: int = 1
    seed: int = 0
    steps: int | None = None
    """None: the model's recommended number of denoising steps."""
    context: int | None = 7
    sink: bool = True
    sampler: str | None = None
    """None: the model's recommended sampler."""
    schedule_rho: float = 3.0
    """Spacing of the denoising times (1 = linear in tau; larger = more steps at low noise)."""
    chunk: int = 50
    stop_on_failure: bool = False
    chains: list[str] = field(default_factory=list)


def _input_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _xtc_bytes(xyz_nm: np.ndarray, time_ps: np.ndarray, first_step: int) -> bytes:
    from mdtraj.formats import XTCTrajectoryFile

    fd, tmp = tempfile.mkstemp(suffix=".xtc")
    os.close(fd)
    try:
        with XTCTrajectoryFile(tmp, "w") as fh:
            steps = np.arange(first_step, first_step + len(xyz_nm), dtype=np.int32)
            fh.write(xyz_nm.astype(np.float32), time=time_ps.astype(np.float32), step=steps)
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


class _Writer:
    """Buffers frames per replica and commits chunks to the XTC files + progress file."""

    def __init__(
        self,
        out_dir: Path,
        name: str,
        protein: Protein,
        atom_mask: np.ndarray,
        replicas: int,
        progress_state: dict,
    ):
        self.out_dir = out_dir
        self.name = name
        self.atom_mask = atom_mask
        self.topology, self.slots = build_topology(protein, atom_mask)
        self.ca_columns = np.flatnonzero(self.slots[:, 1] == 1)
        self.reference: np.ndarray | None = None
        self.buffers: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(replicas)]
        self.state = progress_state
        self.progress_path = out_dir / f"{name}.progress.json"

    def path(self, replica: int) -> Path:
        return self.out_dir / f"{self.name}_R{replica + 1}.xtc"

    def xyz_nm(self, positions: np.ndarray) -> np.ndarray:
        """``(L, 15, 3)`` Angstrom -> ``(n_atoms, 3)`` nm, superposed on frame 0 by CA."""
        xyz = positions[self.slots[:, 0], self.slots[:, 1]] / NM_TO_ANGSTROM
        if self.reference is None:
            self.reference = xyz
            return xyz
        return superpose(xyz[None], self.reference, self.ca_columns)[0]

    def add(self, replica: int, t: int, positions: np.ndarray) -> None:
        self.buffers[replica].append((t, self.xyz_nm(positions)))

    def commit(self, dt_ps: float) -> None:
        for r, buffer in enumerate(self.buffers):
            if not buffer:
                continue
            steps = np.array([t for t, _ in buffer])
            data = _xtc_bytes(np.stack([x for _, x in buffer]), steps * dt_ps, int(steps[0]))
            path = self.path(r)
            with open(path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self.state["replicas"][r]["frames"] = int(steps[-1]) + 1
            self.state["replicas"][r]["bytes"] = path.stat().st_size
            buffer.clear()
        text = json.dumps(self.state, indent=1)
        atomic_write(self.progress_path, lambda tmp: Path(tmp).write_text(text))


def generate(
    structure: str | Path,
    out_dir: str | Path,
    settings: GenerationSettings,
    *,
    model: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Generate ``settings.replicas`` trajectories of ``settings.frames`` frames from a structure.

    Returns the sidecar dict (also written to ``{name}.json``). ``progress(info)`` is called
    after every frame with ``frame``, ``frames``, ``elapsed_s``, ``flagged``.
    """
    t_start = time.perf_counter()
    structure = Path(structure)
    out_dir = Path(out_dir)
    _validate(settings)
    protein, positions = load_structure(structure, settings.chains or None)
    name = protein.name
    model_path = resolve_model(model)
    torch_device = resolve_device(device)
    loaded = load_model(model_path, torch_device)
    settings = with_model_defaults(settings, loaded.config)
    _validate(settings)
    context = settings.context if settings.context is not None else settings.frames
    need = estimate_step_bytes(loaded, protein.n_residues, settings.replicas, context)
    have = available_memory_bytes(torch_device)
    if need > 0.8 * have:
        raise StarmdInputError(
            located(
                structure,
                f"{protein.n_residues} residues x {settings.replicas} replicas "
                f"need about {need / 2**30:.1f} GiB per step, more than the "
                f"{have / 2**30:.1f} GiB available; use fewer replicas or residues (--chain)",
            )
        )
    time_to_model = time.perf_counter() - t_start

    rollout_settings = RolloutSettings(
        steps=settings.steps,
        context=settings.context,
        sink=settings.sink,
        sampler=settings.sampler,
        schedule_rho=settings.schedule_rho,
    )
    inputs = protein_input(
        protein, positions, settings.dt_ps, settings.replicas, device=torch_device
    )
    rollout = Rollout(loaded, inputs, rollout_settings, seed=settings.seed)
    atom_mask = geometry.rebuilt_atom_mask(
        torch.from_numpy(protein.aatype), torch.from_numpy(protein.oxt_mask)
    ).numpy()
    identity = {
        "structure_sha256": _input_digest(structure),
        "model": str(model_path),
        "settings": asdict(settings),
    }
    state = _open_outputs(out_dir, name, settings.replicas, identity, resume, overwrite)
    writer = _Writer(out_dir, name, protein, atom_mask, settings.replicas, state)
    start = min(r["frames"] for r in state["replicas"])
    health = state.setdefault(
        "health",
        [
            {"nan_frames": 0, "break_frames": 0, "clash_frames": 0, "stopped_at": None}
            for _ in range(settings.replicas)
        ],
    )
    flagged: list = state.setdefault("flagged", [])
    state.setdefault("n_flagged", len(flagged))  # progress files written before the count
    if start == 0:
        frame0 = rollout.atoms(inputs.init_frames, inputs.init_torsions)[0].cpu().numpy()
        pdb = writer.topology
        import mdtraj

        xyz0 = writer.xyz_nm(frame0)
        traj0 = mdtraj.Trajectory(xyz0[None].astype(np.float32), pdb)
        atomic_write(out_dir / f"{name}.pdb", lambda tmp: traj0.save_pdb(tmp))
    else:
        _restore_history(rollout, writer, protein, start, settings)

    linked = torch.from_numpy(protein.linked_prev).to(torch_device)
    t_loop = time.perf_counter()
    frames_done = 0
    input_frames = 1 if start == 0 else 0  # frame 0 is written, not generated: no speed credit
    pending: list[tuple[int, Rigid, torch.Tensor, list[int]]] = []  # frames awaiting atoms

    def write_pending() -> None:
        """Rebuild the pending frames' atoms in one call (cheaper than frame by frame) and
        hand them to the writer."""
        if not pending:
            return
        frames = Rigid.stack([p[1] for p in pending], dim=0)
        atoms = rollout.atoms(frames, torch.stack([p[2] for p in pending])).cpu().numpy()
        for i, (t, _, _, replicas) in enumerate(pending):
            for r in replicas:
                writer.add(r, t, atoms[i, r])
        pending.clear()

    for t, frames, torsions in rollout.states(settings.frames):
        if t < start:
            continue
        checks = ca_health(frames.trans.float(), linked)  # CA = frame origin
        keep = []
        for r in range(settings.replicas):
            if health[r]["stopped_at"] is not None:
                continue
            problems = [k for k in ("nan", "breaks", "clashes") if bool(checks[k][r])]
            if problems:
                health[r]["nan_frames"] += int("nan" in problems)
                health[r]["break_frames"] += int("breaks" in problems)
                health[r]["clash_frames"] += int("clashes" in problems)
                state["n_flagged"] += 1
                if len(flagged) < MAX_FLAGGED:  # the first ones listed, all of them counted
                    flagged.append({"replica": r + 1, "frame": t, "problems": problems})
                if settings.stop_on_failure:
                    health[r]["stopped_at"] = t
                    continue
            keep.append(r)
        pending.append((t, frames, torsions, keep))
        frames_done += 1
        if len(pending) >= ATOM_BATCH:
            write_pending()
        if (t + 1) % settings.chunk == 0 or t + 1 == settings.frames:
            write_pending()
            writer.commit(settings.dt_ps)
        if progress:
            progress(
                {
                    "frame": t,
                    "frames": settings.frames,
                    "elapsed_s": time.perf_counter() - t_loop,
                    "flagged": state["n_flagged"],
                    "dt_ps": settings.dt_ps,
                    "new_frames": max(0, frames_done - input_frames),
                }
            )
        if all(h["stopped_at"] is not None for h in health):
            break
    write_pending()
    writer.commit(settings.dt_ps)
    loop_s = time.perf_counter() - t_loop
    generated = (frames_done - input_frames) * settings.replicas
    sidecar = {
        "starmd_version": __version__,
        "structure": str(structure),
        "name": name,
        "model": str(model_path),
        "model_config": loaded.config.to_dict(),
        "settings": asdict(settings),
        "dt_ps": settings.dt_ps,
        "device": str(torch_device),
        "threads": torch.get_num_threads(),
        "residues": protein.n_residues,
        "files": {
            "topology": f"{name}.pdb",
            "trajectories": [writer.path(r).name for r in range(settings.replicas)],
        },
        "frames_written": [r["frames"] for r in state["replicas"]],
        "time_to_model_s": round(time_to_model, 3),
        "wall_s": round(time.perf_counter() - t_start, 3),
        "rollout_s": round(loop_s, 3),
        "frames_per_s": round(generated / loop_s, 4) if loop_s > 0 else None,
        "simulated_ns_per_wall_s": round(generated * settings.dt_ps / 1000 / loop_s, 6)
        if loop_s > 0
        else None,
        "health": health,
        "flagged_count": state["n_flagged"],
        "flagged_frames": flagged,
        "resumed_from_frame": start if start > 0 else None,
    }
    text = json.dumps(sidecar, indent=2)
    atomic_write(out_dir / f"{name}.json", lambda tmp: Path(tmp).write_text(text))
    (out_dir / f"{name}.progress.json").unlink(missing_ok=True)
    return sidecar


def generate_job(
    job,
    out_root: str,
    settings: GenerationSettings,
    model: str | None,
    device: str,
    resume: bool,
    overwrite: bool,
    threads: int | None = None,
) -> dict:
    """One protein of a list (:mod:`starmd.fanout`): generate into ``out_root/{job.name}``.

    With ``resume``, a rerun (e.g. a requeued array task) continues an interrupted protein,
    skips a finished one (returning its sidecar) and starts the others afresh. ``threads``
    sets this process's torch CPU threads (parallel workers would otherwise each take every
    core).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    out_dir = Path(out_root) / job.name
    if resume:
        interrupted = list(out_dir.glob("*.progress.json"))
        finished = [p for p in out_dir.glob("*.json") if not p.name.endswith(".progress.json")]
        if not interrupted and finished:
            return json.loads(finished[0].read_text())
        resume = bool(interrupted)
    return generate(
        job.structure,
        out_dir,
        settings,
        model=model,
        device=device,
        resume=resume,
        overwrite=overwrite,
    )


def with_model_defaults(settings: GenerationSettings, config) -> GenerationSettings:
    """Fill the settings left as None from the model's recommended sampling defaults."""
    sampling = config.sampling
    return replace(
        settings,
        dt_ps=settings.dt_ps
        if settings.dt_ps is not None
        else (sampling.dt_ps or float(max(config.data.dt_ps))),
        steps=settings.steps if settings.steps is not None else sampling.steps,
        sampler=settings.sampler if settings.sampler is not None else sampling.sampler,
    )


def _validate(settings: GenerationSettings) -> None:
    """Check the settings given so far (None values are filled from the model later)."""
    if settings.frames < 2:
        raise StarmdInputError(
            f"--frames must be >= 2 (frame 0 is the input), got {settings.frames}"
        )
    if settings.dt_ps is not None and settings.dt_ps <= 0:
        raise StarmdInputError(f"--dt must be > 0, got {settings.dt_ps} ps")
    if settings.replicas < 1:
        raise StarmdInputError(f"--replicas must be >= 1, got {settings.replicas}")
    if settings.sampler is not None and settings.sampler not in SAMPLERS:
        raise StarmdInputError(
            f"--sampler must be one of {', '.join(SAMPLERS)}, got {settings.sampler!r}"
        )
    if settings.steps is not None and settings.steps < 1:
        raise StarmdInputError(f"--steps must be >= 1, got {settings.steps}")
    if settings.context is not None and settings.context < 1:
        raise StarmdInputError(f"--context must be >= 1, got {settings.context}")
    if settings.schedule_rho <= 0:
        raise StarmdInputError(f"--schedule-rho must be > 0, got {settings.schedule_rho}")
    if settings.chunk < 1:
        raise StarmdInputError(f"chunk must be >= 1, got {settings.chunk}")


def _open_outputs(
    out_dir: Path, name: str, replicas: int, identity: dict, resume: bool, overwrite: bool
) -> dict:
    progress_path = out_dir / f"{name}.progress.json"
    existing = [out_dir / f"{name}_R{r + 1}.xtc" for r in range(replicas)]
    if resume and progress_path.exists():
        state = json.loads(progress_path.read_text())
        if state.get("identity") != identity:
            raise StarmdInputError(
                located(
                    progress_path,
                    "was written with other settings, model or structure; cannot resume",
                )
            )
        for r, path in enumerate(existing):
            committed = state["replicas"][r]["bytes"]
            with open(path, "r+b") as fh:
                fh.truncate(committed)
        return state
    if resume:
        raise StarmdInputError(located(progress_path, "nothing to resume (no progress file)"))
    if any(p.exists() for p in existing) and not overwrite:
        raise StarmdInputError(located(existing[0], "exists; pass --overwrite or --resume"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in existing:
            path.write_bytes(b"")
    except OSError as exc:
        raise StarmdInputError(located(out_dir, f"cannot write output ({exc.strerror})")) from exc
    return {"identity": identity, "replicas": [{"frames": 0, "bytes": 0} for _ in range(replicas)]}


def _restore_history(
    rollout: Rollout, writer: _Writer, protein: Protein, start: int, settings: GenerationSettings
) -> None:
    """Re-encode the cached history (frame 0 and the last ``context`` frames) from the files."""
    import mdtraj

    if any(r["frames"] != start for r in writer.state["replicas"]):
        raise StarmdInputError("replicas were stopped at different frames; resume not possible")
    inputs: ProteinInput = rollout.inputs
    frame0 = rollout.atoms(inputs.init_frames, inputs.init_torsions)[0].cpu().numpy()
    writer.xyz_nm(frame0)  # sets the superposition reference
    rollout.push_clean(0, inputs.init_frames, inputs.init_torsions)
    context = settings.context if settings.context is not None else start
    first = max(1, start - context)
    positions = []
    for r in range(settings.replicas):
        traj = mdtraj.load(str(writer.path(r)), top=writer.topology)
        xyz = traj.xyz[first:start] * NM_TO_ANGSTROM
        pos = np.zeros((len(xyz), *inputs.cond.aatype.shape[1:], 15, 3))
        pos[:, writer.slots[:, 0], writer.slots[:, 1]] = xyz
        positions.append(pos)
    stacked = torch.from_numpy(np.stack(positions, 1))  # (T, B, L, 15, 3)
    cond = inputs.cond
    aatype = torch.from_numpy(protein.aatype)
    atom_mask = torch.from_numpy(writer.atom_mask)
    linked = torch.from_numpy(protein.linked_prev)
    dtype, device = inputs.init_torsions.dtype, inputs.init_torsions.device
    for k, t in enumerate(range(first, start)):
        pos = stacked[k] - inputs.centre.double().cpu()[:, None, None]
        frames = geometry.atoms_to_frames(pos)
        torsions, _ = geometry.atoms_to_torsions(pos, aatype, atom_mask, linked)
        rollout.push_clean(
            t,
            Rigid(frames.rots.to(device, dtype), frames.trans.to(device, dtype)),
            torch.where(cond.torsion_mask, torsions.to(device, dtype), 0.0),
        )
