"""The ``starmd`` command line: a thin layer over the package's functions.

Heavy libraries (torch, OpenMM, mdtraj) are imported inside each command so that ``starmd --help``
stays fast. Errors that are the user's to fix (:class:`starmd.errors.StarmdError`) print one line
and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from starmd import __version__
from starmd.evaluate.cli import evaluate_command  # typer-only imports, stays light
from starmd.simulate.cli import corpus_app, simulate_command

app = typer.Typer(
    name="starmd",
    help="Generate long protein MD with STAR-MD; simulate reference MD, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"starmd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _state["debug"] = debug


data_app = typer.Typer(help="Fetch MD datasets (ATLAS).", no_args_is_help=True)
app.add_typer(data_app, name="data")

app.command("simulate")(simulate_command)
app.add_typer(corpus_app, name="corpus")
app.command("evaluate")(evaluate_command)


def _progress():
    """A rich progress bar on stderr (quiet when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


@app.command()
def inspect(
    structure: Path = typer.Argument(..., help="PDB or mmCIF file (first model is used)."),
    chain: list[str] = typer.Option(None, "--chain", help="Keep only this chain (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check whether a structure works with starmd before running anything.

    Reports chains, residues, sequence, chain breaks, what is stripped (water, ions, ligands,
    hydrogens), residue-name variants mapped (HIE->HIS, MSE->MET), missing side-chain atoms,
    and the RMSD of the frames + torsions round trip (idealized geometry is the only loss).

    Example: starmd inspect protein.pdb --chain A
    """
    import json

    from starmd.structure.inspect import inspect_structure

    report = inspect_structure(structure, chain or None)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{structure}", show_header=False)
    table.add_row("residues", str(report["n_residues"]))
    table.add_row("chains", ", ".join(f"{c['id']} ({c['residues']})" for c in report["chains"]))
    table.add_row("sequence", report["sequence"])
    table.add_row("heavy atoms", str(report["heavy_atoms"]))
    table.add_row("chain breaks", ", ".join(report["chain_breaks"]) or "none")
    stripped = ", ".join(f"{k} x{v}" for k, v in report["stripped_residues"].items())
    table.add_row("stripped", (stripped or "nothing") + f"; {report['hydrogens_stripped']} H")
    mapped = ", ".join(f"{k} x{v}" for k, v in report["mapped_residue_names"].items())
    table.add_row("renamed", mapped or "none")
    missing = "; ".join(
        f"{m['residue']}: {' '.join(m['atoms'])}" for m in report["missing_side_chain_atoms"]
    )
    table.add_row("missing side-chain atoms", missing or "none")
    table.add_row(
        "round trip RMSD",
        f"backbone {report['round_trip_backbone_rmsd_A']:.3f} A, "
        f"all heavy atoms {report['round_trip_heavy_atom_rmsd_A']:.3f} A",
    )
    Console().print(table)
    if report["chain_breaks"]:
        typer.secho("note: chain breaks are kept as breaks, never bridged", fg=typer.colors.YELLOW)


@app.command()
def prepare(
    input_dir: Path = typer.Argument(
        ...,
        help="MD folder: ATLAS layout (NAME.pdb + NAME_prod_R<i>_fit.xtc), or one folder per "
        "protein, or NAME.pdb with NAME*.xtc/.dcd.",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Output dataset folder."),
    split_file: list[Path] = typer.Option(
        None,
        "--split-file",
        help="CSV with name,split columns, or MDGen-style NAME_train.csv/_val.csv/_test.csv "
        "(repeatable). Default: a deterministic hash split by protein name.",
    ),
    fractions: str = typer.Option(
        "0.8,0.1,0.1", help="train,val,test fractions of the hash split."
    ),
    dt_ps: float = typer.Option(
        None, "--dt-ps", help="Saved interval in ps (default: from time stamps or metadata)."
    ),
    stride: int = typer.Option(1, help="Keep every n-th frame."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset in OUT."),
) -> None:
    """Convert MD trajectories into a training dataset of frames + torsions.

    Solvent, ions, ligands and hydrogens are stripped; every frame becomes residue frames
    (quaternion + CA position, Angstrom) and 7 torsions, written to chunked zarr arrays with an
    index.csv (name, replica, frames, residues, dt_ps, split). Splits are by protein.

    Example: starmd prepare corpus/md -o data/corpus
    """
    from starmd.data.prepare import prepare as run_prepare
    from starmd.errors import StarmdInputError

    try:
        parts = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise StarmdInputError(f"--fractions must be three non-negative numbers, got {fractions!r}")
    with _progress() as bar:
        tasks: dict[str, int] = {}

        def report(description: str, done: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=None, info="frames")
            bar.update(tasks[description], completed=done)

        rows = run_prepare(
            input_dir,
            out,
            split_files=split_file or (),
            fractions=parts,
            dt_ps=dt_ps,
            stride=stride,
            overwrite=overwrite,
            progress=report,
        )
    by_split: dict[str, int] = {}
    for r in rows:
        by_split[r.split] = by_split.get(r.split, 0) + r.frames
    proteins = len({r.name for r in rows})
    typer.echo(
        f"wrote {out}: {proteins} proteins, {len(rows)} replicas, "
        + ", ".join(f"{k} {v} frames" for k, v in sorted(by_split.items()))
    )


@data_app.command("atlas-download")
def atlas_download(
    names: list[str] = typer.Argument(..., help="ATLAS entries, PDB id + chain (e.g. 16pk_A)."),
    dest: Path = typer.Option(..., "--dest", help="Folder receiving one sub-folder per entry."),
    base_url: str = typer.Option(
        None, "--base-url", help="Server root (default: the ATLAS site, or $STARMD_ATLAS_URL)."
    ),
) -> None:
    """Download ATLAS MD entries (PDB + 3 x 100 ns protein-only XTC) in the layout prepare reads.

    Entries already present are skipped; an interrupted download leaves nothing half-written.

    Example: starmd data atlas-download 16pk_A 1k5n_A --dest atlas/ ; starmd prepare atlas/ -o data/
    """
    from starmd.data.atlas import download_entry

    with _progress() as bar:
        for name in names:
            task = bar.add_task(name, total=None, info="bytes")

            def report(done: int, total: int | None, task: int = task) -> None:
                bar.update(task, completed=done, total=total)

            folder = download_entry(name, dest, base_url=base_url, progress=report)
            bar.update(task, info=f"-> {folder}")


@app.command()
def train(
    data: Path = typer.Argument(..., help="Prepared dataset folder (from `starmd prepare`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (checkpoints, logs, model)."),
    config: Path = typer.Option(None, "--config", help="YAML config (see configs/)."),
    set_: list[str] = typer.Option(
        None, "--set", help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable)."
    ),
    devices: str = typer.Option(None, help="Devices per node (Lightning), e.g. 1, 8, auto."),
    num_nodes: int = typer.Option(None, "--num-nodes", help="Number of nodes."),
    strategy: str = typer.Option(None, help="auto, ddp, ddp_spawn, fsdp, ..."),
    precision: str = typer.Option(None, help="32-true, bf16-mixed (GPU), ..."),
    accelerator: str = typer.Option(None, help="auto, cpu, gpu."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    max_epochs: int = typer.Option(None, "--max-epochs", help="Stop after this many epochs."),
    max_time: str = typer.Option(
        None, "--max-time", help="Stop after this wall time, DD:HH:MM:SS (e.g. 00:02:00:00)."
    ),
    resume: str = typer.Option(
        None, "--resume", help="Checkpoint to continue from exactly, or 'last'."
    ),
    fast_dev_run: bool = typer.Option(False, "--fast-dev-run", help="One batch per loop (smoke)."),
    init: Path = typer.Option(
        None,
        "--init",
        help="Start from these weights (model.safetensors or a bundled name), fresh optimizer.",
    ),
    distill_from: Path = typer.Option(
        None,
        "--distill-from",
        help="Distil this model's (a file or a bundled name) many-step sampler into a few-step "
        "student (starts from its weights; see configs/distill_cpu.yaml).",
    ),
) -> None:
    """Train the STAR-MD denoiser on a prepared dataset (one CPU up to many GPUs/nodes).

    Writes RUN/config.yaml, RUN/checkpoints/{last,best}.ckpt (exact resume: optimizer,
    scheduler, step, EMA), RUN/logs/ (CSV; TensorBoard if installed) and RUN/model.safetensors
    (EMA weights + config) for `starmd generate --model`.

    Example: starmd train data/corpus -o runs/exp1 --config configs/small_cpu.yaml
    Multi-GPU: starmd train data/atlas -o runs/big --set model.preset=base --devices 8
    --num-nodes 4 --strategy ddp --precision bf16-mixed
    Few-step student: starmd train data/corpus -o runs/fast --config configs/distill_cpu.yaml
    --distill-from runs/exp1/model.safetensors
    """
    from starmd.modelfile.config import TrainConfig
    from starmd.train.run import train as run_train

    cfg = TrainConfig.from_yaml(config, set_ or [])
    if distill_from is not None:
        from starmd.modelfile import resolve_model

        cfg.distill.teacher = str(resolve_model(distill_from))  # a path or a bundled name
    flags = {
        "devices": _parse_devices(devices) if devices is not None else None,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "precision": precision,
        "accelerator": accelerator,
        "max_steps": max_steps,
        "max_epochs": max_epochs,
        "max_time": max_time,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(cfg.trainer, key, value)
    model = run_train(data, out, cfg, resume=resume, fast_dev_run=fast_dev_run, init=init)
    typer.echo(f"model: {model}")


def _parse_devices(value: str):
    return int(value) if value.isdigit() else value


@app.command()
def generate(
    structure: Path = typer.Argument(..., help="PDB or mmCIF file: frame 0 of the trajectory."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    frames: int = typer.Option(100, help="Frames per trajectory, frame 0 (the input) included."),
    dt: str = typer.Option(
        None,
        help="Physical time between frames, with a unit: 10ps, 1ns (default: the model's "
        "recommended time step, see its card).",
    ),
    replicas: int = typer.Option(1, help="Independent trajectories, generated as one batch."),
    seed: int = typer.Option(0, help="Random seed (same seed, same settings: same output)."),
    steps: int = typer.Option(
        None,
        help="Reverse-diffusion steps per frame, speed vs quality (default: the model's; 1-2 "
        "for a distilled few-step model, see `starmd train --distill-from`).",
    ),
    context: int = typer.Option(
        7, help="Past frames kept in the KV cache (memory stays flat); 0 = full history."
    ),
    sink: bool = typer.Option(True, help="Always keep frame 0 (the input) in the cache."),
    sampler: str = typer.Option(
        None,
        help="ddpm (exact posterior steps), ddim (deterministic), dpm2 (ddim + second-order "
        "multistep correction, DPM-Solver++(2M); for few steps), sde (Euler-Maruyama of the "
        "reverse SDE, as in the paper; needs many steps), ode (probability flow), cm "
        "(consistency-style steps of a distilled model: the last prediction, at a moderate "
        "noise level, is the frame). Default: the model's.",
    ),
    schedule_rho: float = typer.Option(
        3.0, help="Spacing of the denoising times: 1 = linear, larger = more steps at low noise."
    ),
    model: Path = typer.Option(
        None,
        help="Model file (RUN/model.safetensors or a .ckpt) or a bundled model's name: "
        "starmd-small (default), starmd-small-fast (distilled, 1-2 steps).",
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1."),
    chain: list[str] = typer.Option(None, "--chain", help="Keep only this chain (repeatable)."),
    chunk: int = typer.Option(50, help="Frames written per chunk (commit interval)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in OUT."),
    overwrite: bool = typer.Option(False, help="Replace existing trajectories in OUT."),
    stop_on_failure: bool = typer.Option(
        False, help="End a replica at its first NaN, CA-CA break or clash."
    ),
    shard: str = typer.Option(
        None, help="With a list: run only shard i of n (i from 0), e.g. $SLURM_ARRAY_TASK_ID/8."
    ),
    workers: int = typer.Option(1, help="With a list: proteins generated in parallel processes."),
    threads: int = typer.Option(
        None,
        min=1,
        help="CPU threads per generating process (default: all cores, divided among --workers).",
    ),
) -> None:
    """Generate long trajectories from one structure by autoregressive rollout.

    STRUCTURE may also be a folder of structures or a CSV (name,structure): each protein then
    goes to OUT/NAME/, optionally split over job-array tasks with --shard i/n.

    Writes OUT/NAME.pdb (topology), OUT/NAME_R<i>.xtc (time stamps in ps, superposed on frame
    0) and OUT/NAME.json (settings, seed, speed, per-replica health: NaN frames, CA-CA breaks,
    clashes). Open with: mdtraj.load("OUT/NAME_R1.xtc", top="OUT/NAME.pdb"), or in PyMOL/VMD.

    Example: starmd generate protein.pdb -o out/ --frames 1000 --dt 1ns --replicas 3
    """
    from starmd import fanout
    from starmd.sample.generate import GenerationSettings
    from starmd.sample.generate import generate as run_generate
    from starmd.units import format_ps, parse_duration_ps

    dt_ps = parse_duration_ps(dt) if dt is not None else None
    settings = GenerationSettings(
        frames=frames,
        dt_ps=dt_ps,
        replicas=replicas,
        seed=seed,
        steps=steps,
        context=context or None,
        sink=sink,
        sampler=sampler,
        schedule_rho=schedule_rho,
        chunk=chunk,
        stop_on_failure=stop_on_failure,
        chains=list(chain or []),
    )
    if fanout.is_list(structure):
        _generate_list(
            structure, out, settings, model, device, resume, overwrite, shard, workers, threads
        )
        return
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    warning = fanout.busy_cpu_warning(torch.get_num_threads())
    if warning:
        typer.echo(warning, err=True)
    with _progress() as bar:
        task = bar.add_task("generating", total=frames, info="")

        def report(info: dict) -> None:
            rate = info["new_frames"] / max(info["elapsed_s"], 1e-9)
            ns_per_s = rate * replicas * info["dt_ps"] / 1000
            bar.update(
                task,
                completed=info["frame"] + 1,
                info=f"{format_ps((info['frame']) * info['dt_ps'])} | {ns_per_s:.3g} ns/s | "
                f"flagged {info['flagged']}",
            )

        sidecar = run_generate(
            structure,
            out,
            settings,
            model=model,
            device=device,
            resume=resume,
            overwrite=overwrite,
            progress=report,
        )
    typer.echo(
        f"wrote {out}/{sidecar['name']}.pdb + {len(sidecar['files']['trajectories'])} XTC: "
        f"{sidecar['frames_written']} frames at {format_ps(sidecar['dt_ps'])}, "
        f"{sidecar['simulated_ns_per_wall_s']} simulated ns per wall-second"
    )


def _generate_list(
    source, out, settings, model, device, resume, overwrite, shard, workers, threads=None
):
    """Generate for every protein of a folder/CSV (this shard), one sub-folder each; each of
    the ``workers`` processes uses ``threads`` CPU threads (default: its share of the CPUs
    this process may use)."""
    from functools import partial

    from starmd import fanout
    from starmd.sample.generate import generate_job

    jobs = fanout.shard(fanout.read_jobs(source), *fanout.parse_shard(shard))
    if threads is None and workers > 1 and len(jobs) > 1:  # else one process: torch's default
        threads = max(1, fanout.usable_cpus() // min(workers, len(jobs)))
    task_fn = partial(
        generate_job,
        out_root=str(out),
        settings=settings,
        model=None if model is None else str(model),
        device=device,
        resume=resume,
        overwrite=overwrite,
        threads=threads,
    )
    with _progress() as bar:
        task = bar.add_task("proteins", total=len(jobs), info="")

        def done(job, result, error):
            info = f"{job.name}: " + (
                f"failed ({error})" if error else f"{result['simulated_ns_per_wall_s']} ns/s"
            )
            bar.update(task, advance=1, info=info)

        failures = fanout.run_jobs(jobs, task_fn, workers=workers, on_done=done)
    typer.echo(f"generated {len(jobs) - len(failures)} of {len(jobs)} proteins into {out}/")
    fanout.check_failures(failures, len(jobs))


@app.command()
def bench(
    out: Path = typer.Option(Path("bench_out"), "-o", "--out", help="Folder for bench.md/json."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes: a smoke run in ~1 minute."),
    sections: str = typer.Option(
        "speed,memory,scaling,quality,train",
        help="Comma-separated: speed, memory, scaling, quality, train.",
    ),
    model: Path = typer.Option(
        None,
        help="Model file or bundled name (default: the bundled model; else an untrained one, "
        "timing only).",
    ),
    structure: Path = typer.Option(
        None, help="Protein for speed/memory/quality (default: a ~50-residue corpus test protein)."
    ),
    reference: Path = typer.Option(
        None, help="Reference MD folder (ATLAS layout) for the quality section."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    threads: int = typer.Option(1, help="CPU threads for both starmd and OpenMM."),
    dt: str = typer.Option(None, help="Time step (default: the model's recommended one)."),
    steps: int = typer.Option(None, help="Denoising steps (default: the model's)."),
    steps_list: str = typer.Option(
        None, "--quality-steps", help="Steps compared in the quality section, e.g. 2,5,10,20."
    ),
    sizes: str = typer.Option(
        None, help="Residue counts for the scaling section, e.g. 50,100,200,500,1000."
    ),
    memory_frames: str = typer.Option(
        None, "--memory-frames", help="Trajectory lengths for the memory section."
    ),
    speed_replicas: str = typer.Option(
        None,
        "--speed-replicas",
        help="Replica batch sizes for the speed section (default 1,8; quick 1,2); ns/s counts all.",
    ),
    speed_models: str = typer.Option(
        None,
        "--speed-models",
        help="More models (files or bundled names) timed in the speed section against the same "
        "OpenMM run, each at its own defaults, e.g. starmd-small-fast.",
    ),
) -> None:
    """Measure speed vs OpenMM, memory vs trajectory length, cost vs size, quality vs steps
    and training throughput, side by side on this machine; writes OUT/bench.md + bench.json.

    Example: starmd bench -o bench_out --threads 1
    Two models side by side: starmd bench --sections speed --speed-models starmd-small-fast
    Quality: starmd bench --sections quality --structure corpus/md/2wqg/2wqg.pdb
    --reference corpus/md
    """
    from starmd.bench import BenchSettings, run_bench
    from starmd.errors import StarmdInputError
    from starmd.units import parse_duration_ps

    def ints(option: str, text: str | None, minimum: int = 1) -> tuple[int, ...] | None:
        if text is None:
            return None
        try:
            values = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise StarmdInputError(f"{option} {text!r}: expected integers, e.g. 50,100") from None
        if not values or any(v < minimum for v in values):
            raise StarmdInputError(f"{option} {text!r}: every value must be at least {minimum}")
        return values

    settings = BenchSettings(
        out_dir=out,
        quick=quick,
        device=device,
        model=model,
        structure=structure,
        reference=reference,
        threads=threads,
        sections=tuple(s.strip() for s in sections.split(",") if s.strip()),
        dt_ps=parse_duration_ps(dt) if dt else None,
        steps=steps,
        speed_models=tuple(m.strip() for m in (speed_models or "").split(",") if m.strip()),
    )
    for name, value in (
        ("quality_steps", ints("--quality-steps", steps_list, minimum=1)),
        ("sizes", ints("--sizes", sizes)),
        ("memory_frames", ints("--memory-frames", memory_frames, minimum=2)),
        ("speed_replicas", ints("--speed-replicas", speed_replicas)),
    ):
        if value:
            setattr(settings, name, value)
    run_bench(settings, log=typer.echo)
    typer.echo((out / "bench.md").read_text())
    typer.echo(f"wrote {out}/bench.md and {out}/bench.json")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "-o", "--out", help="Output folder."),
    model: Path = typer.Option(
        None,
        help="Model file or bundled name to generate with (default: the bundled model, when "
        "installed).",
    ),
    frames: int = typer.Option(200, help="Frames to generate (at the model's time step)."),
    steps: int = typer.Option(None, help="Reverse-diffusion steps per frame (default: model's)."),
    seed: int = typer.Option(0, help="Random seed of the generation."),
    baselines: str = typer.Option(
        "replica,static,anm", help="Baselines to evaluate: replica, static, anm."
    ),
) -> None:
    """Run starmd end to end on the bundled protein and its real MD.

    Inspects the structure, prepares the MD into a dataset, rebuilds every frame from frames +
    torsions, generates a trajectory with the model (if one is available), and evaluates it
    and the baselines (MD replica 2, static, elastic network) against replica 1: prints the headline
    metrics and writes OUT/report/report.html.

    Example: starmd demo -o demo_out
    """
    from starmd.demo import run_demo

    chosen = tuple(b.strip() for b in baselines.split(",") if b.strip())
    run_demo(
        out, model=model, frames=frames, steps=steps, seed=seed, baselines=chosen, log=typer.echo
    )
    typer.echo(f"done: outputs in {out}/ (summary.json, report/report.html)")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``starmd`` console script."""
    from starmd.errors import StarmdError

    try:
        app(args=argv, standalone_mode=False)
    except StarmdError as err:
        if _state["debug"]:
            raise
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except Exception as exc:  # usage errors arrive here in non-standalone mode
        try:
            from click import exceptions as click_errors
        except ImportError:  # typer >= 0.20 vendors its own copy of click
            from typer._click import exceptions as click_errors

        if isinstance(exc, click_errors.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
