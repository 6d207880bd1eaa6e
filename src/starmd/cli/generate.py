"""``starmd generate``: the command-line wrapper of :func:`starmd.sample.generate.generate`, for
one structure or a list of them (:mod:`starmd.cli.lists`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from starmd.cli.common import progress_bar


def generate(
    structure: Path = typer.Argument(..., help="PDB or mmCIF file: frame 0 of the trajectory."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    frames: int = typer.Option(100, help="Frames per trajectory, frame 0 (the input) included."),
    dt: str = typer.Option(
        None,
        help="Physical time between frames, with a unit: 10ps, 1ns (default: the model's "
        "recommended time step, see its card).",
    ),
    replicas: int = typer.Option(
        1, "--replicas", "-r", help="Independent trajectories, generated as one batch."
    ),
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
        "multistep correction, DPM-Solver++(2M); for few steps), dpm2sde (the same on "
        "ancestral steps, DPM-Solver++(2M) SDE: wider ensembles, noisier torsions), sde "
        "(Euler-Maruyama of the reverse SDE, as in the paper; needs many steps), ode "
        "(probability flow), cm (consistency-style steps of a distilled model: the last "
        "prediction, at a moderate noise level, is the frame). Default: the model's.",
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
    force: bool = typer.Option(
        False,
        help="Allow a --dt far outside the model's trained time steps (below 1 ps or above "
        "100x its longest); milder departures only warn.",
    ),
    stop_on_failure: bool = typer.Option(
        False, help="End a replica at its first NaN, CA-CA break or clash."
    ),
    refine: bool = typer.Option(
        True,
        "--refine/--no-refine",
        help="Refine each generated frame (peptide bonds, angles, omega, clashes, Ramachandran "
        "outliers; restrained to the prediction) before it is cached, and polish the written "
        "atoms (see --polish). On by default: CA+AA-valid frames 0% -> 97-98% (starmd-small, "
        "validation and test proteins) at ~3-4x the time per frame; --no-refine writes "
        "the raw network output. The sidecar reports raw, refined and written checks.",
    ),
    polish: bool = typer.Option(
        True,
        "--polish/--no-polish",
        help="With --refine: also polish the written heavy atoms (clashes and Ramachandran "
        "outliers removed by small Cartesian moves that keep bond lengths, angles, chirality "
        "and planarity; the rollout continues from the refined frames). --no-polish: frames "
        "keep a heavy-atom clash in almost every frame.",
    ),
    compile_network: bool = typer.Option(
        False,
        "--compile",
        help="Compile the network with torch.compile for long rollouts: ~15-25% less network "
        "time per frame on a CPU thread, after a one-off compile of ~10-40 s per protein (needs "
        "a C++ compiler, g++). Same trajectories to float rounding, not bit for bit.",
    ),
    reanchor_every: int = typer.Option(
        0,
        min=0,
        help="Every N frames, condition each replica on a new structure drawn as the model was "
        "trained (the input with probability 0.5 for starmd-small, else a random frame of the "
        "last --reanchor-span) and re-encode the cache: more long-lag travel, but on the "
        "validation proteins worse torsion, top-PC and contact rows (docs/ablations.md, "
        '"Re-anchoring"). 0 (default): always the input.',
    ),
    reanchor_span: str = typer.Option(
        "2ns", help="With --reanchor-every: how far back the random frame may lie."
    ),
    step_scale: float = typer.Option(
        None,
        help="Scale each residue's rigid move from the previous frame by this factor (before "
        "refinement): a calibration of a network whose steps are shorter than MD's, not a "
        'sample of its distribution (docs/ablations.md, "The step scale"). Default: the '
        "model's (starmd-small 1.5) with refinement; with --no-refine 1 (a scaled move "
        "stretches the chain, the refinement restores it); 1 = the network's own steps.",
    ),
    shard: str = typer.Option(
        None, help="With a list: run only shard i of n (i from 0), e.g. $SLURM_ARRAY_TASK_ID/8."
    ),
    workers: int = typer.Option(
        1, "--workers", "-j", help="With a list: proteins generated in parallel processes."
    ),
    threads: int = typer.Option(
        None,
        min=1,
        help="CPU threads per generating process (default: all cores, divided among --workers).",
    ),
    relax: bool = typer.Option(
        False,
        "--relax",
        help="Then relax every frame by a restrained OpenMM minimization (implicit solvent) into "
        "OUT/NAME_R<i>.relaxed.xtc; the raw trajectory is kept (see `starmd relax`).",
    ),
    relax_workers: int = typer.Option(1, min=1, help="With --relax: processes that minimize."),
) -> None:
    """Generate long trajectories from one structure by autoregressive rollout.

    STRUCTURE may also be a folder of structures or a CSV (name,structure): each protein then
    goes to OUT/NAME/, optionally split over job-array tasks with --shard i/n.

    Writes OUT/NAME.pdb (topology), OUT/NAME_R<i>.xtc (time stamps in ps, superposed on frame
    0) and OUT/NAME.json (settings, seed, speed, per-replica health: NaN frames, CA-CA breaks,
    clashes; the input's SHA-256 and what was stripped from it), and ends with a summary of the
    same. Open with: mdtraj.load("OUT/NAME_R1.xtc", top="OUT/NAME.pdb"), or in PyMOL/VMD.

    With --relax, each trajectory is then relaxed (restrained energy minimization, see
    `starmd relax`) into OUT/NAME_R<i>.relaxed.xtc, same atoms and frames as the raw one.

    Example: starmd generate protein.pdb -o out/ --frames 1000 --dt 100ps --replicas 3
    A long rollout, network compiled: starmd generate protein.pdb -o out/ --frames 20000
    --model starmd-small-fast --compile
    """
    from starmd.cli import lists
    from starmd.errors import StarmdInputError
    from starmd.sample.generate import GenerationSettings
    from starmd.sample.generate import generate as run_generate
    from starmd.sample.summary import run_summary
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
        refine=refine,
        polish=polish,
        compile=compile_network,
        reanchor_every=reanchor_every,
        reanchor_span_ps=parse_duration_ps(reanchor_span, "--reanchor-span"),
        step_scale=step_scale,
    )
    if relax:
        from starmd.simulate.relax import check_openmm

        check_openmm()
    if lists.is_list(structure):
        if relax:
            raise StarmdInputError(
                f"{structure}: --relax takes one structure; relax a list's outputs with "
                "`starmd relax OUT/NAME/NAME_R1.xtc --top OUT/NAME/NAME.pdb`"
            )
        generate_list(
            structure,
            out,
            settings,
            model,
            device,
            resume,
            overwrite,
            shard,
            workers,
            threads,
            force,
        )
        return
    import torch

    from starmd.cli.common import log_to_stderr

    # domain warnings and a first run's compile notice
    log_to_stderr("starmd.sample.generate", propagate=True)
    if threads is not None:
        torch.set_num_threads(threads)
    warning = lists.busy_cpu_warning(torch.get_num_threads())
    if warning:
        typer.echo(warning, err=True)
    # The bar starts with the first frame, so that the model's domain warnings and any input
    # error come first, on lines of their own.
    with contextlib.ExitStack() as stack:
        bars: list = []

        def report(info: dict) -> None:
            if not bars:
                bar = stack.enter_context(progress_bar())
                bars.append((bar, bar.add_task("generating", total=frames, info="")))
            bar, task = bars[0]
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
            force=force,
        )
    typer.echo("\n".join(run_summary(sidecar, str(out))))
    if relax:
        from starmd.cli.relax import relax_generated

        relax_generated(out, sidecar, relax_workers)


def generate_list(
    source,
    out,
    settings,
    model,
    device,
    resume,
    overwrite,
    shard,
    workers,
    threads=None,
    force=False,
):
    """Generate for every protein of a folder/CSV (this shard), one sub-folder each; each of
    the ``workers`` processes uses ``threads`` CPU threads (default: its share of the CPUs
    this process may use)."""
    from functools import partial

    from starmd.cli import lists
    from starmd.sample.generate import generate_job
    from starmd.workers import run_jobs

    jobs = lists.shard(lists.read_jobs(source), *lists.parse_shard(shard))
    if threads is None and workers > 1 and len(jobs) > 1:  # else one process: torch's default
        threads = max(1, lists.usable_cpus() // min(workers, len(jobs)))
    task_fn = partial(
        generate_job,
        out_root=str(out),
        settings=settings,
        model=None if model is None else str(model),
        device=device,
        resume=resume,
        overwrite=overwrite,
        threads=threads,
        force=force,
    )
    with progress_bar() as bar:
        task = bar.add_task("proteins", total=len(jobs), info="")

        def done(job, result, error):
            info = f"{job.name}: " + (
                f"failed ({error})" if error else f"{result['simulated_ns_per_wall_s']} ns/s"
            )
            bar.update(task, advance=1, info=info)

        failures = run_jobs(task_fn, jobs, workers, on_failure="record", on_done=done)
    typer.echo(f"generated {len(jobs) - len(failures)} of {len(jobs)} proteins into {out}/")
    lists.check_failures(failures, len(jobs))
