"""The fidelity protocol: models vs an MD replica, the static structure and an elastic network on
the validation (or test) proteins of a corpus, over several seeds, with bootstrap intervals over
proteins (docs/metrics.md, "Fidelity protocol").

Short reference MD (ns per replica) does not converge the coverage metrics even for MD itself (a
second replica scores coverage JSD 0.6-0.8 against the first), so the verdict rests on the rows
that do converge on such references: per-target RMSF correlation, backbone and side-chain
torsion distributions, short-lag dynamics, transient contacts; coverage enters only as the gap
to the MD replica's own score. Each generated trajectory starts from the reference's structure
and runs as long as the reference's replica 1, at its saved interval, so that lag-based rows
compare like with like.

Steps, each resumable: generate every (model, seed, protein) into
``OUT/generated/{label}/seed{k}/``; evaluate each seed with every model and the baselines into
``OUT/evaluate/seed{k}/`` (a full ``starmd evaluate`` report); then average each protein's
values over seeds and summarise over proteins: the mean and a percentile-bootstrap 90% interval
(proteins resampled with replacement). With a handful of proteins the interval is wide and
approximate; it says how much the verdict depends on which proteins were drawn, not more.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from starmd.errors import StarmdInputError, located
from starmd.evaluate.report import markdown_cell
from starmd.evaluate.trajectories import ProteinFiles, discover_proteins
from starmd.machine import machine_info
from starmd.structure.io import write_atomically

log = logging.getLogger(__name__)

BASELINE_METHODS = ("md_replica", "static", "anm")
CORPUS_MANIFEST = Path(__file__).resolve().parents[1] / "assets" / "corpus" / "manifest.csv"
BOOTSTRAP_SAMPLES = 2000
INTERVAL = 0.90


@dataclass(frozen=True)
class FidelityRow:
    """One headline row: a per-protein result key (or a derived one) and its direction."""

    key: str
    label: str
    better: str  # "higher", "lower" or "near 1"


ROWS = (
    FidelityRow("rmsf_r", "RMSF per-target r", "higher"),
    FidelityRow("torsion_jsd_backbone", "backbone torsion JSD", "lower"),
    FidelityRow("torsion_jsd_sidechain", "side-chain torsion JSD", "lower"),
    FidelityRow("phi_psi_jsd", "joint (phi, psi) JSD", "lower"),
    FidelityRow("decorrelation_log_ratio", "torsion decorrelation |log10 ratio| to MD", "lower"),
    FidelityRow("rmsd_lag_gap", "RMSD-vs-lag gap (A)", "lower"),
    FidelityRow("autocorr_gap", "top-PC autocorrelation gap", "lower"),
    FidelityRow("transient_contacts_jaccard", "transient contacts Jaccard", "higher"),
    FidelityRow("coverage_jsd_gap", "coverage JSD minus the MD replica's", "lower"),
    FidelityRow("validity_pct", "CA+AA-valid frames (%)", "higher"),
    FidelityRow("pairwise_rmsd_ratio", "pairwise C-alpha RMSD / the MD's", "near 1"),
)


@dataclass(frozen=True)
class FidelitySettings:
    """What the protocol runs.

    Attributes:
        models: column label -> model (a bundled name or a ``.safetensors`` path).
        seeds: generation seeds (each also seeds evaluate's subsets and the ANM samples).
        replicas: generated replicas per protein and seed.
        dt_ps: generation time step; None = each reference's saved interval.
        generation_overrides: extra :class:`~starmd.sample.generate.GenerationSettings` fields
            (``steps``, ``sampler``, ...) for every model; empty = each model's defaults.
    """

    models: Mapping[str, str]
    seeds: Sequence[int] = (0, 1)
    replicas: int = 2
    dt_ps: float | None = None
    generation_overrides: Mapping[str, object] = field(default_factory=dict)


def split_proteins(
    reference_dir: Path, split: str, split_file: Path | None = None
) -> dict[str, ProteinFiles]:
    """The reference proteins of ``split`` (``val`` or ``test``) by a ``name,split`` CSV
    (default: the bundled corpus manifest), in name order.

    Raises:
        StarmdInputError: no protein of the split has reference MD in ``reference_dir``, or
            one has fewer than two replicas (the MD replica baseline needs a second).
    """
    table = Path(split_file) if split_file is not None else CORPUS_MANIFEST
    try:
        with table.open() as handle:
            wanted = {r["name"] for r in csv.DictReader(handle) if r.get("split") == split}
    except (OSError, KeyError) as err:
        raise StarmdInputError(located(table, f"cannot read a name,split table ({err})")) from err
    found = discover_proteins(reference_dir, kind="reference")
    chosen = {name: files for name, files in found.items() if name in wanted}
    if not chosen:
        raise StarmdInputError(
            located(reference_dir, f"has no reference MD for the '{split}' proteins of {table}")
        )
    for name, files in chosen.items():
        if len(files.xtcs) < 2:
            raise StarmdInputError(
                located(files.xtcs[0], f"{name} has one replica; the MD replica baseline needs 2")
            )
    return chosen


def reference_timing(files: ProteinFiles) -> tuple[int, float]:
    """Frames of replica 1 and its saved interval (ps: sidecar ``save_every_ps``, else the XTC
    time stamps)."""
    import mdtraj as md

    with md.formats.XTCTrajectoryFile(str(files.xtcs[0])) as handle:
        n_frames = len(handle)
        _, times, _, _ = handle.read(n_frames=2)
    dt = None
    if files.sidecar is not None:
        dt = json.loads(files.sidecar.read_text()).get("save_every_ps")
    if dt is None and len(times) == 2 and times[1] > times[0]:
        dt = float(times[1] - times[0])
    if dt is None:
        raise StarmdInputError(located(files.xtcs[0], "unknown saved interval (no time stamps)"))
    return n_frames, float(dt)


def _generation_done(
    record: Mapping | None, folder: Path, name: str, frames: int, replicas: int
) -> bool:
    """Whether ``record`` (the sidecar of ``name``, None if absent) says its generation
    finished with ``replicas`` x ``frames`` frames."""
    if record is None or (folder / f"{name}.progress.json").exists():
        return False
    written = record.get("frames_written", [])
    return len(written) == replicas and all(n == frames for n in written)


def _check_reusable(
    record: Mapping | None,
    sidecar: Path,
    label: str,
    model: Path,
    sha256: str,
    wanted: Mapping[str, object],
) -> None:
    """Refuse to reuse the trajectories of a ``sidecar`` (its ``record``, None if absent) if
    another model, or other generation settings (``wanted``: setting -> value, e.g.
    ``refine``, ``steps``, ``dt_ps``), made them.

    A rerun reuses what exists by label; without this check a label given to new weights, or
    a rerun with ``--no-refine`` into the same folder, would silently score the old
    trajectories. Models are compared by the weights' SHA-256 (the file may have moved); a
    sidecar older than that record is compared by the model's path.

    Raises:
        StarmdInputError: the sidecar names another model or another value of a setting.
    """
    if record is None:
        return
    recorded_sha, recorded = record.get("model_sha256"), record.get("model")
    if recorded_sha is not None:
        same = recorded_sha == sha256
    else:
        same = recorded is None or Path(recorded).resolve() == model.resolve()
    if not same:
        raise StarmdInputError(
            located(
                sidecar,
                f"was generated with {recorded}, not with {model} (label '{label}'); give the "
                "new model another label or remove this folder",
            )
        )
    made = record.get("settings", {})
    for key, value in wanted.items():
        if key in made and made[key] != value:
            raise StarmdInputError(
                located(
                    sidecar,
                    f"was generated with {key}={made[key]}, not {key}={value} (label "
                    f"'{label}'); use another output folder for these settings",
                )
            )


def generate_all(
    proteins: Mapping[str, ProteinFiles],
    settings: FidelitySettings,
    out_dir: Path,
    on_protein: Callable[[str], None] | None = None,
) -> dict[tuple[str, int], Path]:
    """Generate every (model, seed, protein) that is not complete yet; continue a run that was
    interrupted (``generate --resume``). Returns (label, seed) -> folder."""
    from starmd.modelfile import resolve_model
    from starmd.sample.generate import GenerationSettings, generate
    from starmd.structure.provenance import file_sha256

    folders = {}
    for label, model in settings.models.items():
        model_path = resolve_model(model)
        sha256 = file_sha256(model_path)
        for seed in settings.seeds:
            folder = out_dir / "generated" / label / f"seed{seed}"
            folders[(label, seed)] = folder
            for name, files in proteins.items():
                frames, md_dt = reference_timing(files)
                dt_ps = settings.dt_ps or md_dt
                sidecar = folder / f"{name}.json"
                record = json.loads(sidecar.read_text()) if sidecar.exists() else None
                wanted = {"dt_ps": dt_ps, **settings.generation_overrides}
                _check_reusable(record, sidecar, label, model_path, sha256, wanted)
                if not _generation_done(record, folder, name, frames, settings.replicas):
                    run = GenerationSettings(
                        frames=frames,
                        dt_ps=dt_ps,
                        replicas=settings.replicas,
                        seed=seed,
                        **dict(settings.generation_overrides),
                    )
                    resume = (folder / f"{name}.progress.json").exists()
                    generate(files.pdb, folder, run, model=model, resume=resume, overwrite=True)
                if on_protein:
                    on_protein(f"{label} seed {seed} {name}")
    return folders


def evaluate_all(
    reference_dir: Path,
    proteins: Sequence[str],
    settings: FidelitySettings,
    folders: Mapping[tuple[str, int], Path],
    out_dir: Path,
    workers: int = 1,
    plots: bool = False,
    on_done: Callable[[str], None] | None = None,
) -> dict[int, Path]:
    """One ``starmd evaluate`` report per seed, every model plus the baselines. Returns
    seed -> report folder."""
    from starmd.evaluate.api import evaluate

    labels = list(settings.models)
    reports = {}
    for seed in settings.seeds:
        report = out_dir / "evaluate" / f"seed{seed}"
        evaluate(
            folders[(labels[0], seed)],
            reference_dir,
            report,
            baselines=("replica", "static", "anm"),
            extra={label: folders[(label, seed)] for label in labels[1:]},
            gen_label=labels[0],
            proteins=list(proteins),
            seed=seed,
            workers=workers,
            plots=plots,
            progress=False,
        )
        reports[seed] = report
        if on_done:
            on_done(f"evaluated seed {seed}")
    return reports


def _row_value(methods: Mapping[str, Mapping], method: str, key: str) -> float:
    """One protein's value of ``key`` for ``method`` (NaN where missing or N/A)."""
    values = methods.get(method, {})
    if key == "coverage_jsd_gap":
        own, replica = values.get("coverage_jsd"), methods.get("md_replica", {}).get("coverage_jsd")
        return np.nan if own is None or replica is None else float(own) - float(replica)
    if key == "pairwise_rmsd_ratio":  # how much the ensemble spreads, relative to the MD's
        own, md = values.get("pairwise_rmsd"), values.get("pairwise_rmsd_md")
        return np.nan if own is None or not md else float(own) / float(md)
    value = values.get(key)
    if key == "tica_corr" and values.get("tica_na"):
        return np.nan
    return np.nan if value is None else float(value)


def seed_values(
    reports: Mapping[int, Path], proteins: Sequence[str], methods: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """method -> row key -> values ``(n_seeds, n_proteins)`` read from each seed's report (NaN
    where missing or N/A)."""
    stacked = {m: {r.key: np.full((len(reports), len(proteins)), np.nan) for r in ROWS}
               for m in methods}  # fmt: skip
    for s, report in enumerate(reports.values()):
        for p, name in enumerate(proteins):
            path = report / "proteins" / name / "results.json"
            found = json.loads(path.read_text())["methods"]
            for method in methods:
                for row in ROWS:
                    stacked[method][row.key][s, p] = _row_value(found, method, row.key)
    return stacked


def _finite_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` of the finite values; NaN where none is."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def per_protein_values(
    stacked: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, dict[str, np.ndarray]]:
    """method -> row key -> values ``(n_proteins,)`` of :func:`seed_values`, each the mean over
    seeds (NaN seeds left out; NaN if every seed is)."""
    return {m: {k: _finite_mean(v, axis=0) for k, v in rows.items()} for m, rows in stacked.items()}


def seed_means(
    stacked: Mapping[str, Mapping[str, np.ndarray]], methods: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """method -> row key -> the mean over proteins of :func:`seed_values` for each seed (NaN
    proteins left out): the seed-to-seed spread that a difference between columns must beat."""
    return {m: {k: [float(x) for x in _finite_mean(v, axis=1)] for k, v in stacked[m].items()}
            for m in methods}  # fmt: skip


def seed_markdown(means: Mapping[str, Mapping[str, list[float]]], seeds: Sequence[int]) -> str:
    """Rows x methods, each cell the per-seed means ``a / b / ...``."""
    order = " / ".join(str(s) for s in seeds)
    lines = ["| row | " + " | ".join(f"{m} (seeds {order})" for m in means) + " |"]
    lines.append("|---" * (len(means) + 1) + "|")
    for row in ROWS:
        cells = [" / ".join("N/A" if np.isnan(v) else f"{v:.3g}" for v in means[m][row.key])
                 for m in means]  # fmt: skip
        lines.append(f"| {markdown_cell(row.label)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bootstrap_mean(
    values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, level: float = INTERVAL, seed: int = 0
) -> tuple[float, float, float, int]:
    """Mean over proteins and its percentile-bootstrap interval.

    Proteins (finite values only) are resampled with replacement ``samples`` times; the interval
    is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means. Returns
    ``(mean, low, high, n)``; NaNs when no value is finite, and ``low == high == mean`` for one.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(finite.mean())
    rng = np.random.default_rng(seed)
    means = finite[rng.integers(0, n, size=(samples, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(low), float(high), n


@dataclass
class FidelityTable:
    """Mean and bootstrap interval of every headline row for every method."""

    methods: list[str]
    proteins: list[str]
    cells: dict[str, dict[str, tuple[float, float, float, int]]]  # key -> method -> stats

    @classmethod
    def build(cls, values: Mapping[str, Mapping[str, np.ndarray]], proteins: Sequence[str]):
        methods = list(values)
        cells = {row.key: {m: bootstrap_mean(values[m][row.key]) for m in methods} for row in ROWS}
        return cls(methods, list(proteins), cells)

    def to_markdown(self) -> str:
        head = "| row | better | " + " | ".join(self.methods) + " |"
        lines = [head, "|---" * (len(self.methods) + 2) + "|"]
        for row in ROWS:
            cells = [_format_cell(self.cells[row.key][m], len(self.proteins)) for m in self.methods]
            lines.append(
                f"| {markdown_cell(row.label)} | {row.better} | " + " | ".join(cells) + " |"
            )
        return "\n".join(lines)

    def to_records(self) -> list[dict]:
        return [
            {"row": row.key, "method": m, "mean": mean, "low": low, "high": high, "proteins": n}
            for row in ROWS
            for m in self.methods
            for mean, low, high, n in [self.cells[row.key][m]]
        ]


def _format_cell(stats: tuple[float, float, float, int], n_proteins: int) -> str:
    mean, low, high, n = stats
    if n == 0:
        return "N/A"
    text = f"{mean:.3g} [{low:.3g}, {high:.3g}]"
    return text if n == n_proteins else f"{text} ({n_proteins - n} N/A)"


def run_fidelity(
    reference_dir: str | Path,
    out_dir: str | Path,
    settings: FidelitySettings,
    *,
    split: str = "val",
    split_file: str | Path | None = None,
    workers: int = 1,
    plots: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> FidelityTable:
    """Run the fidelity protocol and write ``OUT/fidelity.md``, ``fidelity.csv`` (one row per
    headline row and method: mean, interval, proteins) and ``fidelity.json`` (settings, the
    per-protein values averaged over seeds, and each model's per-seed means over proteins).
    ``on_step(what)`` is called after each generated (model, seed, protein) and each evaluated
    seed.

    Raises:
        StarmdInputError: no model or seed, a model label that clashes with a baseline, no
            reference proteins in the split, or any input error of generate / evaluate.
    """
    reference_dir, out_dir = Path(reference_dir), Path(out_dir)
    if not settings.models or not settings.seeds:
        raise StarmdInputError("fidelity: need at least one model and one seed")
    clash = set(settings.models) & {*BASELINE_METHODS, "md_reference"}
    if clash:
        raise StarmdInputError(f"fidelity: model label {sorted(clash)} is a baseline's name")
    proteins = split_proteins(reference_dir, split, Path(split_file) if split_file else None)
    names = list(proteins)
    if split == "test":
        log.warning(
            "scoring the test proteins: score each candidate model once; never choose settings "
            "on this table"
        )
    folders = generate_all(proteins, settings, out_dir, on_step)
    reports = evaluate_all(
        reference_dir, names, settings, folders, out_dir, workers, plots, on_step
    )
    methods = [*settings.models, *BASELINE_METHODS]
    stacked = seed_values(reports, names, methods)
    values = per_protein_values(stacked)
    table = FidelityTable.build(values, names)
    machines = generation_machines(folders, names)
    per_seed = seed_means(stacked, list(settings.models))
    _write_outputs(out_dir, table, values, settings, split, reference_dir, machines, per_seed)
    return table


def generation_machines(folders: Mapping[tuple[str, int], Path], names: Sequence[str]) -> list[str]:
    """The kinds of CPU the trajectories were generated on, as ``"cpu (capability kernels)"``
    from each generated sidecar (``"not recorded"`` for sidecars older than the record), sorted.
    More than one kind means the columns are not bit-reproducible against each other (see
    :mod:`starmd.machine`)."""
    kinds = set()
    for folder in folders.values():
        for name in names:
            sidecar = folder / f"{name}.json"
            if not sidecar.exists():
                continue
            machine = json.loads(sidecar.read_text()).get("machine")
            if machine is None:
                kinds.add("not recorded")
            else:
                kinds.add(f"{machine['cpu']} ({machine['cpu_capability']} kernels)")
    return sorted(kinds)


def _write_outputs(
    out_dir, table, values, settings, split, reference_dir, machines, per_seed
) -> None:
    header = (
        f"# Fidelity on the {split} proteins ({', '.join(table.proteins)})\n\n"
        f"Reference: {reference_dir}; seeds {list(settings.seeds)}, {settings.replicas} "
        f"replicas each; mean over proteins of each protein's mean over seeds, "
        f"[{INTERVAL:.0%} percentile-bootstrap interval over proteins]. md_replica is MD replica 2 "
        "scored against replica 1 (the ceiling), static the input structure, anm an elastic "
        "network ensemble.\n\n"
        f"Generated on: {'; '.join(machines) or 'nothing'}.\n\n"
    )
    seeds = (
        "\n\nEach model's mean over proteins, seed by seed: a difference between two columns that "
        "is smaller than a row's seed-to-seed difference is not evidence.\n\n"
        + seed_markdown(per_seed, settings.seeds)
        if len(settings.seeds) > 1
        else ""
    )
    write_atomically(out_dir / "fidelity.md", header + table.to_markdown() + seeds + "\n")
    records = table.to_records()
    lines = ["row,method,mean,low,high,proteins"]
    lines += [",".join(str(r[k]) for k in ("row", "method", "mean", "low", "high", "proteins"))
              for r in records]  # fmt: skip
    write_atomically(out_dir / "fidelity.csv", "\n".join(lines) + "\n")
    summary = {
        "split": split,
        "reference": str(reference_dir),
        "proteins": table.proteins,
        "models": dict(settings.models),
        "seeds": list(settings.seeds),
        "replicas": settings.replicas,
        "dt_ps": settings.dt_ps,
        "generation_overrides": dict(settings.generation_overrides),
        "machine": machine_info("cpu", md_engine=False),
        "generated_on": machines,
        "per_seed": {
            m: {
                k: [None if np.isnan(v) else v for v in seed_values]
                for k, seed_values in rows.items()
            }
            for m, rows in per_seed.items()
        },
        "per_protein": {
            m: {k: [None if np.isnan(v) else float(v) for v in arr] for k, arr in rows.items()}
            for m, rows in values.items()
        },
    }
    write_atomically(out_dir / "fidelity.json", json.dumps(summary, indent=1))
