"""``starmd fidelity``: the fidelity protocol (:func:`starmd.evaluate.fidelity.run_fidelity`)."""

from __future__ import annotations

from pathlib import Path

import typer


def fidelity(
    reference: Path = typer.Argument(
        ..., help="Reference MD: a corpus folder (ATLAS layout, one sub-folder per protein)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (resumable)."),
    model: list[str] = typer.Option(
        ["starmd-small"],
        "--model",
        "-m",
        help="Model to score: a bundled name or a .safetensors file, optionally LABEL=MODEL "
        "(repeatable; default starmd-small).",
    ),
    split: str = typer.Option("val", "--split", help="Proteins to score: val or test."),
    split_file: Path = typer.Option(
        None, "--split-file", help="CSV with name,split columns (default: the corpus manifest)."
    ),
    seeds: int = typer.Option(2, "--seeds", help="Generation seeds 0..N-1."),
    replicas: int = typer.Option(2, "--replicas", help="Generated replicas per protein and seed."),
    dt_ps: float = typer.Option(
        None, "--dt-ps", help="Generation time step in ps (default: the reference's interval)."
    ),
    steps: int = typer.Option(None, "--steps", help="Denoising steps (default: each model's)."),
    sampler: str = typer.Option(None, "--sampler", help="Sampler (default: each model's)."),
    refine: bool = typer.Option(
        True,
        "--refine/--no-refine",
        help="Generate with rollout refinement and atom polish (generate's default), or "
        "--no-refine for the raw network output; use one OUT folder for each (a rerun "
        "into a folder made with the other is refused).",
    ),
    reanchor_every: int = typer.Option(
        0,
        "--reanchor-every",
        min=0,
        help="Generate with generate's --reanchor-every N (0: off, generate's default).",
    ),
    step_scale: float = typer.Option(
        None, "--step-scale", help="Generate with generate's --step-scale (default: each model's)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Proteins evaluated in parallel."),
    plots: bool = typer.Option(False, "--plots/--no-plots", help="Plots in each seed's report."),
) -> None:
    """Score models against MD, an MD replica, the static structure and an elastic network.

    For every model, seed and protein of the split: generate as long as the reference's replica
    1 at its saved interval, from the reference structure; evaluate each seed (a full report in
    OUT/evaluate/seed{k}); write OUT/fidelity.md with the mean over proteins and a 90% bootstrap
    interval of the rows that converge on short MD (RMSF r, torsion JSDs, short-lag dynamics,
    transient contacts, coverage gap to the MD replica, validity). Rerunning continues where it
    stopped and reuses each label's trajectories; a label whose trajectories another model file
    or other generation settings made is refused (give it a new label or folder). Score test
    proteins once per candidate model; choose settings on val only.

    Example:

        starmd fidelity corpus/md -o fidelity/ -m starmd-small -m starmd-small-fast --seeds 2
    """
    from starmd.cli.common import progress_bar
    from starmd.errors import StarmdInputError
    from starmd.evaluate.fidelity import FidelitySettings, run_fidelity, split_proteins

    if split not in ("val", "test"):
        raise StarmdInputError(f"--split: expected val or test, got '{split}'")
    if seeds < 1 or replicas < 1:
        raise StarmdInputError("--seeds and --replicas must be >= 1")
    models = {}
    for item in model:
        label, sep, path = item.partition("=")
        label, path = (label, path) if sep else (Path(item).stem, item)
        if not label or not path or label in models:
            raise StarmdInputError(f"--model: expected a unique LABEL=MODEL or MODEL, got '{item}'")
        models[label] = path
    given = {"steps": steps, "sampler": sampler, "step_scale": step_scale}
    overrides = {k: v for k, v in given.items() if v is not None}
    overrides["refine"] = refine
    overrides["reanchor_every"] = reanchor_every
    settings = FidelitySettings(models, tuple(range(seeds)), replicas, dt_ps, overrides)
    n_steps = (len(models) * len(split_proteins(reference, split, split_file)) + 1) * seeds
    with progress_bar() as bar:
        task = bar.add_task("fidelity", total=n_steps, info="")
        table = run_fidelity(
            reference, out, settings, split=split, split_file=split_file, workers=workers,
            plots=plots, on_step=lambda what: bar.update(task, advance=1, info=what),
        )  # fmt: skip
    typer.echo((out / "fidelity.md").read_text())
    typer.echo(
        f"wrote {out}/fidelity.md, fidelity.csv, fidelity.json ({len(table.proteins)} proteins)"
    )
