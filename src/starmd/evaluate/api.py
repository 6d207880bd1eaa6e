"""``evaluate``: score generated trajectories, baselines and user folders against reference MD."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from starmd.errors import StarmdInputError, located
from starmd.evaluate.ensemble import ENSEMBLE_FRAMES
from starmd.evaluate.protein import ProteinJob, evaluate_protein
from starmd.evaluate.report import MetricsTable, aggregate, write_html
from starmd.evaluate.trajectories import discover_proteins

BASELINES = ("replica", "static", "anm")


def plan_jobs(
    gen_dir: str | Path | None,
    reference_dir: str | Path,
    out_dir: str | Path,
    *,
    baselines: Sequence[str] = BASELINES,
    extra: Mapping[str, str | Path] | None = None,
    gen_label: str = "model",
    proteins: Sequence[str] | None = None,
    lag_ps: float | None = None,
    ensemble_frames: int = ENSEMBLE_FRAMES,
    seed: int = 0,
    plots: bool = True,
) -> list[ProteinJob]:
    """One job per protein; see :func:`evaluate` for the arguments.

    Raises:
        StarmdInputError: unknown baseline, a generated protein without reference MD, a
            requested protein found nowhere, or a user folder label that clashes.
    """
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise StarmdInputError(
            f"--baselines: unknown baseline(s) {sorted(unknown)}; choose from {list(BASELINES)}"
        )
    reference = discover_proteins(reference_dir, "reference")
    sources: dict[str, dict] = {}
    if gen_dir is not None:
        sources[gen_label] = discover_proteins(gen_dir, "generated")
    for label, folder in (extra or {}).items():
        if label in sources or label in ("md_reference", "md_replica", *BASELINES):
            raise StarmdInputError(located(folder, f"method label '{label}' is already used"))
        sources[label] = discover_proteins(folder, "generated")
    if proteins is not None:
        names = list(proteins)
    elif gen_dir is not None:
        names = list(sources[gen_label])
    else:
        names = list(reference)
    for name in names:
        if name not in reference:
            where = (
                sources[gen_label][name].pdb
                if gen_dir is not None and name in sources[gen_label]
                else name
            )
            raise StarmdInputError(
                located(where, f"no reference MD for protein '{name}' in {reference_dir}")
            )
    jobs = []
    for name in names:
        methods = {label: found[name] for label, found in sources.items() if name in found}
        jobs.append(
            ProteinJob(
                name=name,
                reference=reference[name],
                methods=methods,
                baselines=tuple(baselines),
                out_dir=Path(out_dir) / "proteins" / name,
                lag_ps=lag_ps,
                ensemble_frames=ensemble_frames,
                seed=seed,
                plots=plots,
            )
        )
    return jobs


def evaluate(
    gen_dir: str | Path | None,
    reference_dir: str | Path,
    out_dir: str | Path,
    *,
    baselines: Sequence[str] = BASELINES,
    extra: Mapping[str, str | Path] | None = None,
    workers: int = 1,
    gen_label: str = "model",
    proteins: Sequence[str] | None = None,
    lag_ps: float | None = None,
    ensemble_frames: int = ENSEMBLE_FRAMES,
    seed: int = 0,
    plots: bool = True,
    progress: bool = True,
) -> MetricsTable:
    """Evaluate generated trajectories against reference MD, with baselines, and write a report.

    Args:
        gen_dir: generated output (``{name}.pdb`` + ``{name}_R{i}.xtc``, top level or one
            sub-folder per protein); None scores only the baselines and ``extra``.
        reference_dir: reference MD in the ATLAS layout (``{name}_prod_R{i}_fit.xtc``).
        out_dir: report folder (created).
        baselines: any of ``"replica"`` (MD replica 2 as the oracle, held out of the
            reference), ``"static"`` (initial structure), ``"anm"`` (elastic network).
        extra: more methods, label -> folder in the generated layout (e.g. another generator).
        workers: proteins scored in parallel (processes).
        gen_label: column label of ``gen_dir``.
        proteins: restrict to these protein names (default: those of ``gen_dir``, else all
            reference proteins).
        lag_ps: lag of tICA, VAMP-2 and the MSM (ps), rounded to the common time step;
            default one frame of the coarser of model and MD time steps.
        ensemble_frames: frames subsampled (seed) for pairwise RMSD, PCA W2 and SASA.
        seed: RNG seed of the subsets and of the ANM samples.
        plots: write PNG plots and embed them in the HTML report.
        progress: show a progress bar over proteins.

    Writes:
        ``out_dir/proteins/{name}/results.json`` + ``arrays.npz`` + ``plots/*.png``,
        ``out_dir/metrics.csv``, ``out_dir/metrics.md``, ``out_dir/report.html``,
        ``out_dir/settings.json``.

    Returns:
        the aggregated table (median over proteins, one column per method).

    Raises:
        StarmdInputError: missing folders or reference, mismatched proteins, bad options.
    """
    if workers < 1:
        raise StarmdInputError(f"--workers: must be >= 1, got {workers}")
    jobs = plan_jobs(
        gen_dir, reference_dir, out_dir, baselines=baselines, extra=extra, gen_label=gen_label,
        proteins=proteins, lag_ps=lag_ps, ensemble_frames=ensemble_frames, seed=seed, plots=plots,
    )  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _run_jobs(jobs, workers, progress)
    table = aggregate(out_dir)
    settings = {
        "generated": str(gen_dir) if gen_dir is not None else "(none)",
        "reference": str(reference_dir),
        "baselines": ",".join(baselines),
        "extra": {k: str(v) for k, v in (extra or {}).items()},
        "proteins": [j.name for j in jobs],
        "lag_ps": "one frame of the common time step" if lag_ps is None else lag_ps,
        "ensemble_frames": ensemble_frames,
        "seed": seed,
    }
    (out_dir / "settings.json").write_text(json.dumps(settings, indent=1))
    (out_dir / "metrics.md").write_text(table.to_markdown() + "\n")
    table.write_csv(out_dir / "metrics.csv")
    write_html(table, out_dir, settings)
    return table


def _run_jobs(jobs: list[ProteinJob], workers: int, progress: bool) -> None:
    """Score every protein, ``workers`` at a time; the first failure stops the run."""
    from rich.progress import Progress

    from starmd.workers import run_jobs

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating proteins", total=len(jobs))
        run_jobs(
            evaluate_protein,
            jobs,
            workers,
            on_failure="raise",
            on_done=lambda job, result, error: bar.advance(task),
        )
