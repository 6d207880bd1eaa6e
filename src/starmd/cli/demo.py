"""``starmd demo``: the command-line wrapper of :func:`starmd.demo.run_demo`."""

from __future__ import annotations

from pathlib import Path

import typer


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
