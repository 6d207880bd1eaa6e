"""``starmd evaluate``: the command-line wrapper of :func:`starmd.evaluate.evaluate`.

Only typer and the standard library are imported at module level; the evaluation stack is
imported when the command runs, so ``starmd --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate_command(
    gen_dir: Path = typer.Argument(
        None,
        help="Generated trajectories ({name}.pdb + {name}_R{i}.xtc); omit to score baselines only.",
    ),
    reference: Path = typer.Option(
        None,
        "--reference",
        help="Reference MD folder (ATLAS layout: {name}_prod_R{i}_fit.xtc); required.",
    ),
    reference_short: Path = typer.Option(
        None, "-r", hidden=True, help="Old spelling of --reference (-r is --replicas elsewhere)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder to write."),
    baselines: str = typer.Option(
        "replica,static,anm",
        "--baselines",
        help="Comma-separated baselines: replica, static, anm; '' for none.",
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Proteins evaluated in parallel."),
    extra: list[str] = typer.Option(
        [],
        "--extra",
        help="Another method to score, LABEL=FOLDER in the generated layout (repeatable).",
    ),
    label: str = typer.Option("model", "--label", help="Column label of GEN_DIR."),
    protein: list[str] = typer.Option(
        [], "--protein", help="Evaluate only this protein (repeatable)."
    ),
    lag_ps: float = typer.Option(
        None,
        "--lag-ps",
        help="Lag of tICA, VAMP-2 and MSM in ps (default: one frame of the common step).",
    ),
    ensemble_frames: int = typer.Option(
        250, "--ensemble-frames", help="Frames subsampled for pairwise RMSD, PCA W2 and SASA."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of subsets and ANM samples."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots into the report."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Use a non-empty OUT that is not an earlier report (evaluate's own files in it are "
        "replaced; an earlier report is always replaced, never merged).",
    ),
) -> None:
    """Score generated trajectories and baselines against reference MD; write a report.

    Writes per-protein JSON/NPZ, metrics.csv and metrics.md (median over proteins, one column
    per method), PNG plots and a self-contained report.html.

    Example:

        starmd evaluate samples/ --reference atlas_md/ -o report/ --baselines replica,anm -j 4
    """
    from starmd.errors import StarmdInputError
    from starmd.evaluate import evaluate

    if reference_short is not None:
        typer.echo("note: -r for --reference is deprecated (-r means --replicas in simulate and "
                   "generate); use --reference", err=True)  # fmt: skip
        reference = reference if reference is not None else reference_short
    if reference is None:
        raise StarmdInputError("evaluate: --reference MD_DIR is required")

    extras = {}
    for item in extra:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise StarmdInputError(f"--extra: expected LABEL=FOLDER, got '{item}'")
        extras[name] = Path(folder)
    chosen = tuple(b.strip() for b in baselines.split(",") if b.strip())
    evaluate(
        gen_dir,
        reference,
        out,
        baselines=chosen,
        extra=extras,
        workers=workers,
        gen_label=label,
        proteins=protein or None,
        lag_ps=lag_ps,
        ensemble_frames=ensemble_frames,
        seed=seed,
        plots=plots,
        overwrite=overwrite,
    )
    typer.echo((out / "metrics.md").read_text())
    typer.echo(f"report: {out / 'report.html'}")
