"""``evaluate``: score generated trajectories, baselines and user folders against reference MD."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from starmd.errors import StarmdInputError, located
from starmd.evaluate.ensemble import ENSEMBLE_FRAMES
from starmd.evaluate.headline import Headline, generation_provenance, readable_settings
from starmd.evaluate.protein import ProteinJob, evaluate_protein
from starmd.evaluate.report import MetricsTable, aggregate, load_results, write_html
from starmd.evaluate.trajectories import discover_proteins
from starmd.outputs import output_lock
from starmd.structure.io import write_atomically

BASELINES = ("replica", "static", "anm")
# Everything evaluate writes at the top of its output folder; a rerun replaces exactly these.
OWNED_OUTPUTS = ("proteins", "metrics.csv", "metrics.md", "report.html", "settings.json")
LOCK = "evaluate.lock"
"""Held in the output folder while a run writes it: a second evaluate into it is refused."""


def is_previous_output(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds an earlier evaluate report: its ``settings.json``, written
    before the proteins are scored, so that an interrupted run's folder is recognized too."""
    try:
        settings = json.loads((out_dir / "settings.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and {"reference", "proteins"} <= set(settings)


def prepare_output(
    out_dir: str | Path, inputs: Sequence[str | Path], overwrite: bool = False
) -> Path:
    """Make ``out_dir`` ready for a fresh report, so that no result of an earlier run survives.

    An empty or missing folder is used as is; an earlier evaluate report, or any folder when
    ``overwrite``, has evaluate's own outputs (:data:`OWNED_OUTPUTS`) removed and keeps
    everything else.

    Raises:
        StarmdInputError: ``out_dir`` is a file, is (or would clear) an input folder, or is a
            non-empty folder that is not an earlier report and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StarmdInputError(located(out_dir, "exists and is not a folder"))
    cleared = [out_dir.resolve() / name for name in OWNED_OUTPUTS]
    for folder in inputs:
        source = Path(folder).resolve()
        if source == out_dir.resolve() or any(source.is_relative_to(c) for c in cleared):
            raise StarmdInputError(
                located(out_dir, f"is an input folder of this evaluation ({folder}); "
                "choose another --out")
            )  # fmt: skip
    if out_dir.is_dir() and any(p.name != LOCK for p in out_dir.iterdir()):
        if not overwrite and not is_previous_output(out_dir):
            raise StarmdInputError(
                located(out_dir, "is not empty and not a previous evaluate output; pass "
                "--overwrite to replace evaluate's files in it, or choose another --out")
            )  # fmt: skip
        for path in cleared:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


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
    overwrite: bool = False,
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
        overwrite: allow a non-empty ``out_dir`` that is not an earlier evaluate report
            (evaluate's own outputs in it are replaced, other files kept). An earlier report
            is always replaced: results of different runs are never mixed.

    Writes:
        ``out_dir/proteins/{name}/results.json`` + ``arrays.npz`` + ``plots/*.png``,
        ``out_dir/metrics.csv``, ``out_dir/metrics.md`` (headline: model and generation
        settings from the generated sidecars, the reference, a verdict per metric family vs
        the baselines; then the table), ``out_dir/report.html`` (the same, with plots),
        ``out_dir/settings.json`` (first, so that an interrupted run's folder is known as a
        report and the rerun replaces it), each file atomically; ``out_dir/evaluate.lock``
        while the run writes.

    Returns:
        the aggregated table (median over proteins, one column per method).

    Raises:
        StarmdInputError: missing folders or reference, mismatched proteins, bad options, an
            output folder that is not ours without ``overwrite``.
    """
    if workers < 1:
        raise StarmdInputError(f"--workers: must be >= 1, got {workers}")
    jobs = plan_jobs(
        gen_dir, reference_dir, out_dir, baselines=baselines, extra=extra, gen_label=gen_label,
        proteins=proteins, lag_ps=lag_ps, ensemble_frames=ensemble_frames, seed=seed, plots=plots,
    )  # fmt: skip
    inputs = [reference_dir, *([gen_dir] if gen_dir is not None else []), *(extra or {}).values()]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StarmdInputError(located(out_dir, "exists and is not a folder"))
    with output_lock(out_dir / LOCK, "evaluate"):
        out_dir = prepare_output(out_dir, inputs, overwrite)
        settings = {
            "generated": str(gen_dir) if gen_dir is not None else "(none)",
            "reference": str(reference_dir),
            "baselines": ",".join(baselines),
            "extra": {k: str(v) for k, v in (extra or {}).items()},
            "proteins": [j.name for j in jobs],
            "lag_ps": "one frame of the common time step" if lag_ps is None else lag_ps,
            "ensemble_frames": ensemble_frames,
            "seed": seed,
            "generated_with": _provenance(jobs),
        }
        write_atomically(out_dir / "settings.json", json.dumps(settings, indent=1))
        _run_jobs(jobs, workers, progress)
        names = [j.name for j in jobs]
        table = aggregate(out_dir, names)
        headline = Headline.build(table, settings, load_results(out_dir, names))
        write_atomically(
            out_dir / "metrics.md", headline.to_markdown() + "\n\n" + table.to_markdown() + "\n"
        )
        table.write_csv(out_dir / "metrics.csv")
        write_html(table, out_dir, readable_settings(settings), headline.to_html())
    return table


def _provenance(jobs: list[ProteinJob]) -> dict[str, dict[str, str]]:
    """Per loaded method, the model and settings its generation sidecars record."""
    labels = dict.fromkeys(label for job in jobs for label in job.methods)
    found = {
        label: generation_provenance(
            [job.methods[label].sidecar for job in jobs if label in job.methods]
        )
        for label in labels
    }
    return {label: record for label, record in found.items() if record}


def _run_jobs(jobs: list[ProteinJob], workers: int, progress: bool) -> None:
    """Score every protein, ``workers`` at a time; the first failure stops the run. With
    ``progress``, a bar with the elapsed time and one line per protein scored (a protein takes
    seconds to minutes: the bar alone would sit still)."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from starmd.workers import run_jobs

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    started = time.perf_counter()
    with Progress(
        *columns, TimeElapsedColumn(), console=Console(stderr=True), disable=not progress
    ) as bar:
        methods = list(dict.fromkeys(m for job in jobs for m in (*job.methods, *job.baselines)))
        task = bar.add_task(
            f"scoring {len(jobs)} protein(s): {', '.join(methods)} vs MD", total=len(jobs)
        )

        def done(job, result, error) -> None:
            bar.advance(task)
            if progress and error is None:
                bar.console.print(f"{job.name}: scored ({time.perf_counter() - started:.0f} s)")

        run_jobs(evaluate_protein, jobs, workers, on_failure="raise", on_done=done)
