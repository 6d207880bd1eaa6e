"""``starmd bench``: speed, memory and quality figures, measured side by side in one run.

Sections (each a list of rows in ``bench.json`` and a table in ``bench.md``):

- ``machine``: CPU model, cores, torch version, device, threads.
- ``speed``: simulated ns per wall-second of ``starmd generate`` (default sampler settings) and
  of ``starmd simulate --protocol implicit`` on the same protein with the same threads, and
  their ratio over the whole generation loop (``ratio``) and from frame 11 on
  (``steady_ratio``, a long rollout's rate); the model load (time to first frame) is reported
  separately. One row per replica batch size (``speed_replicas``): with R > 1 the figures count
  all R trajectories.
- ``memory``: peak memory of ``starmd generate`` for growing numbers of frames (each run in a
  fresh process: peak RSS on CPU, peak allocated on CUDA). Denoising steps do not change the
  memory, so these runs use 2 steps (the minimum) to keep the 10,000-frame run short.
- ``scaling``: time per generated frame and peak memory vs residues, on synthetic proteins made
  of copies of a real structure (separate chains), with the fitted log-log exponent.

With ``attention_neighbours=K`` the memory and scaling sections run the model twice, side by
side: as it is, and with its joint attention across frames restricted to ``K`` neighbours
(``DenoiserConfig.attention_neighbours``; the same weights, so the cost is what the option
costs whatever it was trained with).
- ``quality``: for a protein with reference MD, key metrics (coverage JSD, RMSF r, validity)
  of generated trajectories vs the number of denoising steps.
- ``train``: training throughput (frames and tokens per second) per preset.

The child process of each generation run is :mod:`starmd.bench.child`, the tables
:mod:`starmd.bench.report`. Without a trained model (none bundled, no ``--model``) the timing
sections use a randomly initialised model of the bundled configuration (same cost,
meaningless output) and say so; the quality section needs a trained model and is skipped
otherwise.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from starmd.bench.child import run_child
from starmd.bench.report import SECTIONS, STEADY_FROM, markdown
from starmd.errors import StarmdError, StarmdInputError
from starmd.machine import machine_info
from starmd.outputs import locked_by

log = logging.getLogger("starmd.bench")

SPEED_FRAMES = 200
"""Frames per speed run (the first is the input): enough that the rate over the whole loop is
that of a long rollout within a few per cent, and the time of the first frames does not
dominate it."""
"""One line per run of a section (each takes seconds to minutes)."""


@dataclass
class BenchSettings:
    """What ``starmd bench`` measures and how long it takes (``quick`` shrinks every size)."""

    out_dir: Path
    quick: bool = False
    device: str = "auto"
    model: Path | None = None
    structure: Path | None = None
    reference: Path | None = None
    threads: int = 1
    sections: Sequence[str] = SECTIONS
    dt_ps: float | None = None
    steps: int | None = None
    seed: int = 0
    speed_replicas: Sequence[int] = (1, 8)
    speed_models: Sequence[str] = ()
    speed_repeats: int | None = None  # None: 3 (quick: 1)
    memory_frames: Sequence[int] = (100, 1_000, 10_000)
    sizes: Sequence[int] = (50, 100, 200, 500, 1_000)
    quality_steps: Sequence[int] = (2, 5, 10, 20, 50)
    quality_frames: int = 200
    train_presets: Sequence[str] = ("tiny", "small")
    attention_neighbours: int | None = None
    compile: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise StarmdInputError(
                f"--sections: unknown {', '.join(unknown)} (choose from {', '.join(SECTIONS)})"
            )
        if self.attention_neighbours is not None and self.attention_neighbours < 1:
            raise StarmdInputError(
                f"--attention-neighbours {self.attention_neighbours}: must be at least 1"
            )
        if self.speed_repeats is None:
            self.speed_repeats = 1 if self.quick else 3
        if self.speed_repeats < 1:
            raise StarmdInputError(f"--speed-repeats {self.speed_repeats}: must be at least 1")
        if self.quick:
            self.speed_replicas = (1, 2)
            self.memory_frames = (10, 40)
            self.sizes = (30, 60)
            self.quality_steps = (2, 5)
            self.quality_frames = 10
            self.train_presets = ("tiny",)


def default_structure() -> Path:
    """A ~50-residue test protein of the bundled corpus (never trained on)."""
    from starmd.simulate.corpus import load_manifest

    entries = [e for e in load_manifest() if e.split == "test"]
    entry = min(entries, key=lambda e: abs(e.residues - 50))
    return Path(entry.structure)


def untrained_model(path: Path, preset: str = "small") -> Path:
    """A randomly initialised model file of ``preset`` (timing only: same cost as trained)."""
    from starmd.modelfile.config import TrainConfig
    from starmd.train.module import StarMDModule
    from starmd.train.run import export_model

    return export_model(StarMDModule(TrainConfig.from_yaml(None, [f"model.preset={preset}"])), path)


def with_attention_neighbours(model: Path, k: int, path: Path) -> Path:
    """A copy of model file ``model`` whose joint attention across frames sees ``k``
    neighbours (same weights: ``attention_neighbours`` has no parameters)."""
    from starmd.modelfile import load_model, save_model

    loaded = load_model(model)
    config = copy.deepcopy(loaded.config)
    config.model.overrides["attention_neighbours"] = k
    config.model.denoiser(str(model))  # validates the override
    return save_model(loaded.model, config, path)


def attention_variants(settings: BenchSettings, model: Path, work: Path) -> list[tuple[str, Path]]:
    """``(label, model file)`` per attention variant the memory and scaling sections time:
    the model as it is, and with ``settings.attention_neighbours`` when set."""
    from starmd.modelfile import read_config

    own = read_config(model).model.denoiser(str(model)).attention_neighbours
    variants = [("all" if own is None else str(own), model)]
    k = settings.attention_neighbours
    if k is not None:
        path = work / f"{model.stem}-neighbours{k}.safetensors"
        if not path.exists():
            with_attention_neighbours(model, k, path)
        variants.append((str(k), path))
    return variants


def _generation(
    settings: BenchSettings,
    model: Path,
    structure: Path,
    work: Path,
    defaults: dict[str, Any],
    *,
    frames: int,
    steps: int | None = None,
    replicas: int = 1,
    steady_from: int | None = None,
    refine: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """One generation run in a fresh process, at the default dt/context (and steps unless
    given); returns its sidecar figures, peak memory and output folder (and, with
    ``steady_from``, the mean time per frame of frames ``steady_from ..``)."""
    dt_ps, context = defaults["dt_ps"], defaults["context"]
    steps = steps or defaults["steps"]
    out = Path(tempfile.mkdtemp(dir=work))
    payload = {
        "structure": str(structure),
        "out_dir": str(out),
        "model": str(model),
        "device": settings.device,
        "threads": settings.threads,
        "steady_from": steady_from,
        "settings": {
            "frames": frames,
            "dt_ps": dt_ps,
            "steps": steps,
            "context": context,
            "replicas": replicas,
            "seed": settings.seed,
            "refine": refine,
            "compile": compile,
        },
    }
    log.info(
        "  %s: %d frames x %d replica(s) of %s, %s steps ...",
        model.stem, frames, replicas, structure.name, steps,
    )  # fmt: skip
    started = time.perf_counter()
    result = run_child(payload, settings.threads)
    log.info("  ... %.1f s (%s frames/s)", time.perf_counter() - started, result["frames_per_s"])
    result["out_dir"] = str(out)
    return result


def bench_speed(
    settings: BenchSettings, model: Path, structure: Path, work: Path, defaults: dict[str, Any]
) -> list[dict[str, Any]]:
    """starmd generate vs OpenMM implicit-solvent MD on one protein, same threads.

    One row per model (``model``, then ``settings.speed_models``, each at its own default dt
    and steps) and replica count in ``settings.speed_replicas``, all against one OpenMM
    reference: R independent trajectories generated as one batch; frames/s and ns per
    wall-second count all R trajectories together (aggregate sampling throughput). OpenMM runs
    twice, before and after the models (``md_ns_per_day_before`` / ``_after``); ``ratio`` uses
    their pooled speed (``md_ns_per_day``). Generation runs at ``generate``'s defaults
    (refinement and atom polish on: ``refine_ms_per_frame`` and ``polish_ms_per_frame`` are
    their shares of each frame's time); one more row per model, one trajectory, writes the raw
    network output (``generate --no-refine``); with ``settings.compile`` one more per model,
    one trajectory at the defaults, runs the network through ``torch.compile`` (``generate
    --compile``: its compile time is inside ``ratio``, not ``steady_ratio``).

    Each configuration runs ``settings.speed_repeats`` times, interleaved (all configurations
    once, then again), each in a fresh process: on a shared 2-core machine the same run's
    network time varies by about 10% from one process to the next. A row is the median run
    (:func:`_median_run`); ``ratio_min`` / ``ratio_max`` give the spread over the repeats.
    """
    from starmd.modelfile import resolve_model

    frames = 4 if settings.quick else SPEED_FRAMES
    steady_from = None if settings.quick else STEADY_FROM
    models = [(model, defaults)]
    for other in settings.speed_models:
        path = resolve_model(other)
        models.append((path, model_defaults(path, settings)))
    runs = [(r, True, False) for r in settings.speed_replicas] + [(1, False, False)]
    if settings.compile:
        runs.append((1, True, True))
    # OpenMM runs twice, before and after the models, and the ratio uses their pooled speed, so
    # that a change of the machine's load or clock during the models' runs is shared by both.
    md_ps = 1.0 if settings.quick else 20.0
    md_platform = "CUDA" if settings.device.startswith("cuda") else "CPU"
    md_before = _openmm_ns_per_day(settings, structure, work / "md_before", md_ps, md_platform)
    configurations = [
        (path, chosen, r, refine, compiled)
        for path, chosen in models
        for r, refine, compiled in runs
    ]
    # every configuration once, then again: a drift of the machine's speed is shared by all
    repeats: list[list[dict[str, Any]]] = [[] for _ in configurations]
    for _ in range(settings.speed_repeats):
        for k, (path, chosen, r, refine, compiled) in enumerate(configurations):
            repeats[k].append(
                _generation(
                    settings,
                    path,
                    structure,
                    work,
                    chosen,
                    frames=frames,
                    replicas=r,
                    refine=refine,
                    compile=compiled,
                    steady_from=steady_from,
                )
            )
    gens = [(*c, *_median_run(runs_of)) for c, runs_of in zip(configurations, repeats, strict=True)]
    md_after = _openmm_ns_per_day(settings, structure, work / "md_after", md_ps, md_platform)
    # equal simulated lengths: total ns over total time is the harmonic mean of the two speeds
    md_ns_per_day = 2.0 / (1.0 / md_before + 1.0 / md_after)
    md_ns_per_s = md_ns_per_day / 86400.0
    return [
        {
            "protein": structure.stem,
            "residues": gen["residues"],
            "model": path.stem,
            "dt_ps": chosen["dt_ps"],
            "steps": chosen["steps"],
            "sampler": chosen["sampler"],
            "replicas": replicas,
            "refine": refine,
            "compile": compiled,
            "frames": frames - 1,
            "starmd_frames_per_s": gen["frames_per_s"],
            "starmd_ns_per_wall_s": gen["ns_per_wall_s"],
            "steady_frames_per_s": _steady_rate(gen, replicas),
            "refine_ms_per_frame": gen["refine_ms_per_frame"],
            "polish_ms_per_frame": gen.get("polish_ms_per_frame"),
            "starmd_model_load_s": gen["time_to_model_s"],
            "starmd_first_frame_s": gen["first_frame_s"],
            "md_platform": md_platform,
            "md_ps": 2 * md_ps,
            "md_ns_per_day": round(md_ns_per_day, 2),
            "md_ns_per_day_before": round(md_before, 2),
            "md_ns_per_day_after": round(md_after, 2),
            "md_ns_per_wall_s": md_ns_per_s,
            "ratio": round(gen["ns_per_wall_s"] / md_ns_per_s, 1) if md_ns_per_s > 0 else None,
            "steady_ratio": _steady_ratio(gen, replicas, chosen["dt_ps"], md_ns_per_s),
            "repeats": len(spread),
            "ratio_min": round(min(spread) / md_ns_per_s, 1) if md_ns_per_s > 0 else None,
            "ratio_max": round(max(spread) / md_ns_per_s, 1) if md_ns_per_s > 0 else None,
        }
        for path, chosen, replicas, refine, compiled, gen, spread in gens
    ]


def _median_run(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[float]]:
    """The repeat whose speed (ns per wall-second) is the median (the lower of the middle two
    for an even count: the conservative one), reported whole so that its columns belong to
    one run, and every repeat's speed."""
    speeds = [run["ns_per_wall_s"] for run in runs]
    order = sorted(range(len(runs)), key=lambda k: speeds[k])
    return runs[order[(len(runs) - 1) // 2]], speeds


def _openmm_ns_per_day(
    settings: BenchSettings, structure: Path, out: Path, md_ps: float, platform: str
) -> float:
    """ns/day of ``md_ps`` of OpenMM implicit-solvent MD of ``structure`` (after 1 ps of
    equilibration, which is not timed), one replica, the bench's threads."""
    from starmd.simulate.engine import simulate

    log.info("  OpenMM %s: %g ps of implicit MD of %s ...", platform, md_ps, structure.name)
    metadata = simulate(
        structure,
        out,
        ns=md_ps / 1000.0,
        replicas=1,
        save_every_ps=1.0,
        equilibrate_ps=1.0,
        chunk_frames=max(1, int(md_ps) // 2),
        platform=platform,
        threads=settings.threads,
        progress=False,
    )
    speed = float(metadata["replicas"][0]["ns_per_day"])
    if not speed > 0:
        raise StarmdError(f"OpenMM reference run in {out} reported no speed ({speed} ns/day)")
    return speed


def _steady_rate(gen: dict[str, Any], replicas: int) -> float | None:
    """Frames per second (all replicas) from frame :data:`STEADY_FROM` on: the rate of a long
    rollout, once the cache window is full."""
    per_frame = gen.get("steady_s_per_frame")
    return round(replicas / per_frame, 4) if per_frame else None


def _steady_ratio(
    gen: dict[str, Any], replicas: int, dt_ps: float, md_ns_per_s: float
) -> float | None:
    rate = _steady_rate(gen, replicas)
    if rate is None or md_ns_per_s <= 0:
        return None
    return round(rate * dt_ps / 1000.0 / md_ns_per_s, 1)


def model_defaults(model: Path, settings: BenchSettings) -> dict[str, Any]:
    """The generation settings a model runs at by default (``--dt``/``--steps`` override)."""
    from starmd.modelfile import read_config
    from starmd.sample.generate import GenerationSettings, with_model_defaults

    chosen = with_model_defaults(
        GenerationSettings(frames=2, dt_ps=settings.dt_ps, steps=settings.steps),
        read_config(model),
    )
    return {
        "dt_ps": chosen.dt_ps,
        "steps": chosen.steps,
        "sampler": chosen.sampler,
        "context": chosen.context,
    }


def bench_memory(
    settings: BenchSettings, model: Path, structure: Path, work: Path, defaults: dict[str, Any]
) -> list[dict[str, Any]]:
    """Peak memory of generation for growing trajectory lengths (fresh process each), per
    attention variant (:func:`attention_variants`)."""
    rows = []
    for attention, variant in attention_variants(settings, model, work):
        first = len(rows)
        for frames in settings.memory_frames:
            gen = _generation(settings, variant, structure, work, defaults, frames=frames, steps=2)
            rows.append(
                {
                    "attention": attention,
                    "frames": frames,
                    "residues": gen["residues"],
                    "steps": 2,
                    "peak_rss_mb": gen["peak_rss_mb"],
                    "cuda_peak_mb": gen["cuda_peak_mb"],
                    "rollout_s": gen["rollout_s"],
                    "nan_frames": gen["nan_frames"],
                }
            )
        key = "cuda_peak_mb" if rows[first]["cuda_peak_mb"] is not None else "peak_rss_mb"
        for row in rows[first:]:
            row["vs_first"] = round(row[key] / rows[first][key], 3)
    return rows


def synthetic_structure(source: Path, residues: int, path: Path) -> Path:
    """``residues`` residues of copies of ``source`` as separate chains on a grid, 80 A apart
    (real residue geometry; the last copy is cut short). Written as PDB."""
    from starmd.structure.io import load_structure, save_structure
    from starmd.structure.protein import Protein

    protein, positions = load_structure(source)
    n = protein.n_residues
    copies = math.ceil(residues / n)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    if copies > len(letters):
        raise StarmdInputError(f"{residues} residues: too many copies of {source.name}")
    side = math.ceil(copies ** (1 / 3))
    parts_pos, aatype, chains, numbers, linked, mask = [], [], [], [], [], []
    centre = positions[:, 1].mean(0)
    for c in range(copies):
        take = min(n, residues - c * n)
        offset = 80.0 * np.array([c % side, (c // side) % side, c // side**2])
        parts_pos.append(positions[:take] - centre + offset)
        aatype.append(protein.aatype[:take])
        chains += [letters[c]] * take
        numbers.append(protein.residue_numbers[:take])
        link = protein.linked_prev[:take].copy()
        link[0] = False
        linked.append(link)
        mask.append(protein.atom_mask[:take])
    synthetic = Protein(
        name=f"synthetic{residues}",
        aatype=np.concatenate(aatype),
        chain_ids=tuple(chains),
        residue_numbers=np.concatenate(numbers),
        linked_prev=np.concatenate(linked),
        atom_mask=np.concatenate(mask),
    )
    return save_structure(path, synthetic, np.concatenate(parts_pos), synthetic.atom_mask)


def bench_scaling(
    settings: BenchSettings, model: Path, structure: Path, work: Path, defaults: dict[str, Any]
) -> list[dict[str, Any]]:
    """Time per generated frame and peak memory vs protein size, per attention variant
    (:func:`attention_variants`; sizes interleaved, so both see the same machine load), with
    each variant's log-log exponent.

    The time is the steady state: the mean over the frames generated once the KV cache holds
    its full context (the joint attention then sees every cached frame), 3 frames after it.
    """
    context = defaults["context"] or 0
    steady_from, extra = context + 2, 3
    variants = attention_variants(settings, model, work)
    rows = []
    for size in settings.sizes:
        path = synthetic_structure(structure, size, work / f"synthetic{size}.pdb")
        for attention, variant in variants:
            gen = _generation(
                settings,
                variant,
                path,
                work,
                defaults,
                frames=steady_from + extra,
                steps=defaults["steps"],
                steady_from=steady_from,
            )
            rows.append(
                {
                    "attention": attention,
                    "residues": size,
                    "steps": defaults["steps"],
                    "context": context,
                    "s_per_frame": round(gen["steady_s_per_frame"], 4),
                    "peak_rss_mb": gen["peak_rss_mb"],
                    "cuda_peak_mb": gen["cuda_peak_mb"],
                }
            )
    for attention, _ in variants:
        own = [r for r in rows if r["attention"] == attention]
        if len(own) >= 2:
            x = np.log([r["residues"] for r in own])
            y = np.log([r["s_per_frame"] for r in own])
            exponent = float(np.polyfit(x, y, 1)[0])
            for row in own:
                row["time_exponent"] = round(exponent, 3)
    return rows


def bench_quality(
    settings: BenchSettings, model: Path, structure: Path, work: Path, defaults: dict[str, Any]
) -> list[dict[str, Any]]:
    """Coverage JSD, RMSF r and validity (CA-only and CA+AA) vs denoising steps against MD."""
    from starmd.evaluate.api import evaluate

    if settings.reference is None:
        raise StarmdInputError("the quality section needs --reference (a folder of MD)")
    name = structure.stem
    rows = []
    for steps in settings.quality_steps:
        gen = _generation(
            settings, model, structure, work, defaults, frames=settings.quality_frames, steps=steps
        )
        log.info("  evaluating the %d-step trajectory against the MD ...", steps)
        table = evaluate(
            gen["out_dir"],
            settings.reference,
            work / f"eval_{steps}",
            baselines=(),
            proteins=[name],
            plots=False,
            progress=False,
        )
        method = "model"
        row = {"steps": steps, "frames": settings.quality_frames, "s_per_frame": None}
        row["s_per_frame"] = round(gen["rollout_s"] / max(1, settings.quality_frames - 1), 4)
        for key in (
            "coverage_jsd",
            "rmsf_r",
            "validity_ca_pct",
            "validity_pct",
            "rmsd_to_initial_final",
        ):
            value = table.values.get(key, {}).get(method, float("nan"))
            row[key] = None if not np.isfinite(value) else round(float(value), 4)
        rows.append(row)
    return rows


def bench_train(settings: BenchSettings) -> list[dict[str, Any]]:
    """Training steps per second on windows of the bundled demo MD, per preset."""
    from starmd.train.throughput import measure

    device = _torch_device(settings.device)
    log.info("  training steps of presets %s ...", ", ".join(settings.train_presets))
    return [
        measure(p, window=8, crop=64, batch=4 if device == "cpu" else 32, steps=3, device=device)
        for p in settings.train_presets
    ]


def _torch_device(device: str) -> str:
    from starmd.sample.generate import resolve_device

    return str(resolve_device(device))


@locked_by(lambda call: Path(call["settings"].out_dir) / "bench.lock", "bench")
def run_bench(
    settings: BenchSettings, log: Callable[[str], None] = lambda _msg: None
) -> dict[str, Any]:
    """Run the selected sections; writes ``bench.json`` and ``bench.md`` in ``out_dir``
    (atomically, after every section, so an interrupted run leaves the finished sections),
    holding ``out_dir/bench.lock`` (a second bench into the same folder is refused)."""
    import torch

    from starmd.modelfile import installed_default_model, resolve_model

    settings.device = _torch_device(settings.device)
    torch.set_num_threads(settings.threads)
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="starmd-bench-"))
    structure = Path(settings.structure) if settings.structure else default_structure()
    model = resolve_model(settings.model) if settings.model else installed_default_model()
    trained = model is not None
    if model is None:
        model = untrained_model(work / "untrained-small.safetensors")
    defaults = model_defaults(model, settings)
    results: dict[str, Any] = {
        "machine": machine_info(settings.device),
        "model": str(model) if trained else "untrained 'small' model (timing only)",
        "defaults": defaults,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(settings).items()
            if k != "extra"
        },
        "sections": {},
    }
    try:
        _run_sections(settings, results, model, trained, structure, work, defaults, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _run_sections(settings, results, model, trained, structure, work, defaults, log) -> None:
    from starmd.structure.io import atomic_write

    functions = {
        "speed": bench_speed,
        "memory": bench_memory,
        "scaling": bench_scaling,
        "quality": bench_quality,
    }
    out_dir = Path(settings.out_dir)
    for section in settings.sections:
        started = time.perf_counter()
        log(f"bench: {section} ...")
        if section == "quality" and (not trained or settings.reference is None):
            rows = "needs a trained model" if not trained else "needs --reference MD"
        elif section == "train":
            rows = bench_train(settings)
        else:
            rows = functions[section](settings, model, structure, work, defaults)
        results["sections"][section] = rows
        log(f"bench: {section} done in {time.perf_counter() - started:.0f} s")
        if not out_dir.is_dir():  # the writer would recreate it, without the sections before
            raise FileNotFoundError(
                errno.ENOENT, "output folder removed while bench was running", str(out_dir)
            )
        text = json.dumps(results, indent=2, default=str)
        atomic_write(out_dir / "bench.json", lambda tmp, t=text: Path(tmp).write_text(t))
        md = markdown(results)
        atomic_write(out_dir / "bench.md", lambda tmp, t=md: Path(tmp).write_text(t))
