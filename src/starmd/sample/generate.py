"""``starmd generate``: structure in, long trajectory out (PDB topology + one XTC per replica).

Outputs in ``out_dir``: ``{name}.pdb`` (heavy-atom topology: real residue names, chain ids and
numbers; frame 0), ``{name}_R{i}.xtc`` (i = 1..replicas, time stamps in ps, every frame
superposed on frame 0 by CA) and ``{name}.json`` (model, settings, seed, wall time, speed,
health counts, flagged frames; the input: its full SHA-256, what was stripped from it and the
alternate locations kept, :func:`starmd.structure.provenance.input_record`; with refinement its
cost and the raw and refined frames' checks, :class:`~starmd.sample.refine.RefinementLedger`).
The files are written in committed chunks by :mod:`starmd.sample.writer`, so an interrupted run
leaves valid, shorter trajectories and ``resume=True`` continues it from the rollout state saved
with the last chunk: the resumed files are byte for byte those of an uninterrupted run.
``{name}.lock`` is held while a run writes, so a second run into the same outputs is refused
(:mod:`starmd.outputs`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from starmd import __version__
from starmd.diffusion.sampler import SAMPLERS
from starmd.errors import StarmdInputError, located
from starmd.machine import machine_info
from starmd.modelfile import LoadedModel, load_model, resolve_model
from starmd.modelfile.config import TrainConfig
from starmd.outputs import locked_by
from starmd.sample.domain import check_domain
from starmd.sample.refine import RefinementLedger, RefineSettings
from starmd.sample.rollout import Reanchor, Rollout, RolloutSettings, protein_input
from starmd.sample.writer import TrajectoryWriter, open_outputs, restore_history
from starmd.structure import geometry
from starmd.structure.checks import ca_health
from starmd.structure.io import load_structure, write_atomically
from starmd.structure.polish import PolishSettings
from starmd.structure.protein import Protein
from starmd.structure.provenance import file_sha256, input_record
from starmd.structure.rigid import Rigid

log = logging.getLogger(__name__)

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
    refine: bool = True
    """Refine every generated frame before it is cached and written (:mod:`.refine`: peptide
    bonds, omega, Ramachandran outliers, by rigid residue moves), then polish the written heavy
    atoms (``polish``). On by default: on the validation proteins it takes the headline CA+AA
    validity of starmd-small from 0% to 97-98% of frames, at 3-4 times the time of a raw
    frame (docs/model_card.md, "Rollout refinement"); False writes the network's raw output."""
    polish: bool = True
    """With ``refine``: polish the written heavy atoms (:mod:`starmd.structure.polish`: van der
    Waals clashes and Ramachandran outliers removed by small Cartesian moves that keep the
    covalent geometry). Only the written frames are polished; the rollout continues from the
    refined frames."""
    compile: bool = False
    """Run the network through ``torch.compile`` (Inductor) over a static KV cache: ~15-25%
    less network time per frame on a CPU thread after a one-off compile of ~10-40 s per protein
    (:meth:`~starmd.model.denoiser.StarDenoiser.compile_rollout`); equal to the eager rollout to
    float rounding (not bit for bit, so a long trajectory drifts apart from the eager one)."""
    reanchor_every: int = 0
    """Every N frames, condition the rollout on a new structure per replica, drawn as the model
    was trained (the input with probability ``1 - data.input_from_trajectory``, else a random
    frame of the last ``reanchor_span_ps``), and re-encode the cache under it
    (:class:`~starmd.sample.rollout.Reanchor`): a lever against the pull towards the input
    structure. 0 (default): always the input."""
    reanchor_span_ps: float = 2000.0
    """How far back (ps) a re-anchoring's random frame may lie; 2 ns by default, about the
    length of the training replicas the conditioning frames were drawn from."""
    step_scale: float | None = None
    """Scale each residue's rigid move from the previous frame by this factor before
    refinement (:meth:`~starmd.sample.rollout.Rollout.scale_step`): a calibration of the
    network's too-short steps, not a sample of its distribution. None: the model's
    recommended value (``sampling.step_scale``) with ``refine``, 1 without: a scaled move
    stretches the chain (C-alpha breaks in ~40% of unrefined frames at 1.5) and the refinement
    is what restores it, so ``refine=False`` writes the network's own steps unless a scale is
    given."""


@locked_by(lambda call: Path(call["out_dir"]) / f"{Path(call['structure']).stem}.lock", "generate")
def generate(
    structure: str | Path,
    out_dir: str | Path,
    settings: GenerationSettings,
    *,
    model: str | Path | LoadedModel | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[dict], None] | None = None,
    force: bool = False,
) -> dict:
    """Generate ``settings.replicas`` trajectories of ``settings.frames`` frames from a structure.

    Returns the sidecar dict (also written to ``{name}.json``). ``progress(info)`` is called
    after every frame with ``frame``, ``frames``, ``elapsed_s``, ``flagged``. A request outside
    the model's training domain is logged as a warning and recorded in the sidecar
    (``domain_warnings``); ``force`` allows time steps that are otherwise refused
    (:func:`starmd.sample.domain.check_domain`).
    """
    t_start = time.perf_counter()
    structure, out_dir = Path(structure), Path(out_dir)
    _validate(settings)
    protein, positions = load_structure(structure, settings.chains or None)
    torch_device = resolve_device(device)
    if isinstance(model, LoadedModel):  # loaded once by the caller (starmd.load_model)
        loaded, model_path = model.to(torch_device), Path(model.source)
    else:
        model_path = resolve_model(model)
        loaded = load_model(model_path, torch_device)
    settings = with_model_defaults(settings, loaded.config)
    _validate(settings)
    domain_warnings = check_domain(protein, settings.dt_ps, loaded.config, force)
    for warning in domain_warnings:
        log.warning("%s: %s", structure, warning)
    _check_memory(structure, protein, loaded, settings, torch_device)
    time_to_model = time.perf_counter() - t_start

    inputs = protein_input(
        protein, positions, settings.dt_ps, settings.replicas, device=torch_device
    )
    rollout_settings = _rollout_settings(settings, loaded.config, model_path)
    rollout = Rollout(loaded, inputs, rollout_settings, seed=settings.seed)
    source = input_record(structure, settings.chains or None)
    identity = {
        "structure_sha256": source["sha256"],
        "model": str(model_path),
        "settings": asdict(settings),
    }
    name = protein.name
    state = open_outputs(out_dir, name, settings.replicas, identity, resume, overwrite)
    atom_mask = geometry.rebuilt_atom_mask(
        torch.from_numpy(protein.aatype), torch.from_numpy(protein.oxt_mask)
    ).numpy()
    polish_settings = PolishSettings() if settings.refine and settings.polish else None
    writer = TrajectoryWriter(
        out_dir, name, protein, atom_mask, settings.replicas, state, polish_settings
    )
    start = min(r["frames"] for r in state["replicas"])
    screen = _HealthScreen(state, settings.replicas, settings.stop_on_failure)
    ledger = None
    if settings.refine:
        top = rollout.refine_topology
        bonds, rama = int(top.bonded.sum()), int(top.rama.sum())
        ledger = RefinementLedger(state, settings.replicas, bonds, rama)
    refine_s = rollout.refine_s
    resumed_exactly = None
    _announce_compiling(settings.refine)
    if settings.compile:
        log.info("--compile: the first frames compile the network (torch.compile; ~10-40 s) ...")
    frame0 = rollout.atoms(inputs.init_frames, inputs.init_torsions)[0].cpu().numpy()
    check_frame0 = ledger is not None and polish_settings is not None
    written0 = writer.written(frame0[None]) if start == 0 or check_frame0 else None
    if ledger is not None:  # load the compiled checks now: set-up, not the loop's time
        rollout.prepare_refinement()
    if torch_device.type == "cpu":  # the diffusion's compiled loops too (prior, noise, bases)
        from starmd.diffusion.kernels import prepare

        prepare()
        if check_frame0:
            ledger.prepare_written(written0, writer.topology)
    if start == 0:
        writer.write_topology(written0[0])
    else:
        resumed_exactly = restore_history(
            rollout, writer, protein, start, settings.replicas, settings.context
        )

    linked = torch.from_numpy(protein.linked_prev).to(torch_device)
    t_loop = time.perf_counter()
    frames_done = 0
    input_frames = 1 if start == 0 else 0  # frame 0 is written, not generated: no speed credit
    pending = _PendingAtoms(rollout, writer, ledger)
    for t, frames, torsions in rollout.states(settings.frames):
        if t < start:
            continue
        if ledger is not None and t > 0:  # the refinement's checks of this frame hold its CA's
            keep = screen(t, rollout.refined.checks)
        else:
            keep = screen(t, ca_health(frames.trans.float(), linked))  # CA = frame origin
        if ledger is not None and t > 0:
            ledger.add(rollout.refined, keep, rollout.refine_s - refine_s)
            refine_s = rollout.refine_s
        if t == 0:  # the input frame, as already written for the topology file
            for r in keep:
                writer.add(r, 0, written0[0])
        else:
            pending.add(t, frames, torsions, keep)
        frames_done += 1
        if len(pending.frames) >= ATOM_BATCH:
            pending.write()
        if (t + 1) % settings.chunk == 0 or t + 1 == settings.frames:
            pending.write()
            writer.commit(settings.dt_ps, rollout.state_dict())
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
        if screen.all_stopped:
            break
    pending.write()
    writer.commit(settings.dt_ps)
    loop_s = time.perf_counter() - t_loop
    generated = (frames_done - input_frames) * settings.replicas
    sidecar = {
        "starmd_version": __version__,
        "structure": str(structure),
        "input": source,
        "name": name,
        "model": str(model_path),
        "model_sha256": file_sha256(model_path) if model_path.is_file() else None,
        "model_config": loaded.config.to_dict(),
        "settings": asdict(settings),
        "dt_ps": settings.dt_ps,
        "device": str(torch_device),
        "threads": torch.get_num_threads(),
        "machine": machine_info(str(torch_device), md_engine=False),
        "residues": protein.n_residues,
        "domain_warnings": domain_warnings,
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
        "health": screen.health,
        "refinement": ledger.summary() if ledger is not None else None,
        "flagged_count": state["n_flagged"],
        "flagged_frames": screen.flagged,
        "resumed_from_frame": start if start > 0 else None,
        "resumed_exactly": resumed_exactly,
    }
    write_atomically(out_dir / f"{name}.json", json.dumps(sidecar, indent=2))
    writer.finish()
    return sidecar


def _announce_compiling(refine: bool) -> None:
    """Say so before the set-up compiles the atom rebuild, the diffusion's prior, noise and
    bases, the refinement, polish and checks (the first run after an installation: ~30 s of CPU
    in silence otherwise)."""
    from starmd.diffusion import kernels as diffusion_kernels
    from starmd.evaluate import contacts_kernel
    from starmd.sample import refine_kernel
    from starmd.structure import atoms_kernel, polish_kernel
    from starmd.structure.kernels import on_disk

    loops = [
        atoms_kernel.build_atoms,
        diffusion_kernels.dense_system,
        diffusion_kernels.geodesic,
        diffusion_kernels.igso3_quantiles,
    ]
    if refine:
        loops += [refine_kernel.descend, refine_kernel.place, refine_kernel.backbone_torsions]
        loops += [refine_kernel.checks, polish_kernel.lbfgs, contacts_kernel.close_contacts]
    if not on_disk(*loops):
        log.info("compiling the rebuild/refinement loops (numba; once after installation) ...")


def _rollout_settings(
    settings: GenerationSettings, config: TrainConfig, model_path: Path
) -> RolloutSettings:
    """The rollout's settings (``config``, the model's, and its file name for the error,
    matter only to re-anchoring)."""
    reanchor = None
    if settings.reanchor_every:
        trained = config.data.input_from_trajectory
        if trained == 0.0:
            raise StarmdInputError(
                f"{model_path}: --reanchor-every needs a model trained with conditioning "
                "frames from its trajectories (data.input_from_trajectory > 0); this one "
                "was conditioned on the input structure only"
            )
        reanchor = Reanchor(
            every=settings.reanchor_every,
            span=max(1, round(settings.reanchor_span_ps / settings.dt_ps)),
            input_probability=1.0 - trained,
        )
    return RolloutSettings(
        steps=settings.steps,
        context=settings.context,
        sink=settings.sink,
        sampler=settings.sampler,
        schedule_rho=settings.schedule_rho,
        refine=RefineSettings() if settings.refine else None,
        compile=settings.compile,
        reanchor=reanchor,
        step_scale=settings.step_scale,
    )


def _check_memory(
    structure: Path,
    protein: Protein,
    loaded: LoadedModel,
    settings: GenerationSettings,
    device: torch.device,
) -> None:
    """Refuse a run whose denoising step would not fit in the device's free memory."""
    context = settings.context if settings.context is not None else settings.frames
    need = estimate_step_bytes(loaded, protein.n_residues, settings.replicas, context)
    have = available_memory_bytes(device)
    if need > 0.8 * have:
        raise StarmdInputError(
            located(
                structure,
                f"{protein.n_residues} residues x {settings.replicas} replicas "
                f"need about {need / 2**30:.1f} GiB per step, more than the "
                f"{have / 2**30:.1f} GiB available; use fewer replicas or residues (--chain)",
            )
        )


class _HealthScreen:
    """Per-replica health counts of the generated frames (kept in the resume record, so a
    resumed run continues them): NaN frames, CA-CA breaks, clashes, the first
    :data:`MAX_FLAGGED` flagged frames listed and all of them counted."""

    def __init__(self, state: dict, replicas: int, stop_on_failure: bool):
        self.state = state
        self.stop_on_failure = stop_on_failure
        self.health = state.setdefault(
            "health",
            [
                {"nan_frames": 0, "break_frames": 0, "clash_frames": 0, "stopped_at": None}
                for _ in range(replicas)
            ],
        )
        self.flagged: list = state.setdefault("flagged", [])
        state.setdefault("n_flagged", len(self.flagged))  # records written before the count

    @property
    def all_stopped(self) -> bool:
        return all(h["stopped_at"] is not None for h in self.health)

    def __call__(self, t: int, checks: dict[str, torch.Tensor]) -> list[int]:
        """Count frame ``t``'s problems (``checks``: per-replica bools of
        :func:`~starmd.structure.checks.ca_health`); returns the replicas to write."""
        keep = []
        for r, health in enumerate(self.health):
            if health["stopped_at"] is not None:
                continue
            problems = [k for k in ("nan", "breaks", "clashes") if bool(checks[k][r])]
            if problems:
                health["nan_frames"] += int("nan" in problems)
                health["break_frames"] += int("breaks" in problems)
                health["clash_frames"] += int("clashes" in problems)
                self.state["n_flagged"] += 1
                if len(self.flagged) < MAX_FLAGGED:
                    self.flagged.append({"replica": r + 1, "frame": t, "problems": problems})
                if self.stop_on_failure:
                    health["stopped_at"] = t
                    continue
            keep.append(r)
        return keep


class _PendingAtoms:
    """Frames awaiting their heavy atoms: rebuilt in one call for many frames (cheaper than
    frame by frame), then handed to the writer."""

    def __init__(
        self, rollout: Rollout, writer: TrajectoryWriter, ledger: RefinementLedger | None = None
    ):
        self.rollout = rollout
        self.writer = writer
        self.ledger = ledger
        self.frames: list[tuple[int, Rigid, torch.Tensor, list[int]]] = []

    def add(self, t: int, frames: Rigid, torsions: torch.Tensor, replicas: list[int]) -> None:
        self.frames.append((t, frames, torsions, replicas))

    def write(self) -> None:
        if not self.frames:
            return
        frames = Rigid.stack([p[1] for p in self.frames], dim=0)
        torsions = torch.stack([p[2] for p in self.frames])
        atoms = self.rollout.atoms(frames, torsions).cpu().numpy()
        kept = [(t, r) for t, _, _, replicas in self.frames for r in replicas]
        index = [(i, r) for i, (_, _, _, replicas) in enumerate(self.frames) for r in replicas]
        if kept:
            rows, columns = zip(*index, strict=True)
            polish_s = self.writer.polish_s
            xyz = self.writer.written(atoms[list(rows), list(columns)])
            for (t, r), frame in zip(kept, xyz, strict=True):
                self.writer.add(r, t, frame)
            generated = [k for k, (t, _) in enumerate(kept) if t > 0]
            if self.ledger is not None and self.writer.polish is not None and generated:
                self.ledger.add_written(
                    [kept[k][1] for k in generated],
                    xyz[generated],
                    self.writer.topology,
                    self.writer.polish_s - polish_s,
                )
        self.frames.clear()


def generate_job(
    job,
    out_root: str,
    settings: GenerationSettings,
    model: str | None,
    device: str,
    resume: bool,
    overwrite: bool,
    threads: int | None = None,
    force: bool = False,
) -> dict:
    """One protein of a list (:mod:`starmd.cli.lists`): generate into ``out_root/{job.name}``.

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
        force=force,
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
        step_scale=settings.step_scale
        if settings.step_scale is not None
        else (sampling.step_scale if settings.refine else 1.0),
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
    if settings.reanchor_every < 0:
        raise StarmdInputError(f"--reanchor-every must be >= 0, got {settings.reanchor_every}")
    if settings.reanchor_every and settings.context is None:
        raise StarmdInputError("--reanchor-every needs a bounded --context (not 0)")
    if settings.step_scale is not None and settings.step_scale <= 0:
        raise StarmdInputError(f"--step-scale must be > 0, got {settings.step_scale}")
    if settings.reanchor_span_ps <= 0:
        raise StarmdInputError(f"--reanchor-span must be > 0, got {settings.reanchor_span_ps} ps")
