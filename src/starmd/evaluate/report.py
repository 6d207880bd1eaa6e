"""Aggregation over proteins (median, as the benchmark papers report) into the metrics table,
and the table's CSV / Markdown / self-contained HTML renderings."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from starmd.evaluate.paper import pearson
from starmd.evaluate.viewer import viewer_scripts, viewer_section
from starmd.structure.io import atomic_write, write_atomically

JS_NOTE = "JSD = Jensen-Shannon distance (sqrt of the divergence), natural log, in [0, 0.833]."


@dataclass(frozen=True)
class MetricSpec:
    """One row of the table: results key, section, label, which direction is better."""

    key: str
    section: str
    label: str
    better: str = ""


SECTION_A = "A. STAR-MD paper (reference: MD replica 1)"
SECTION_B = "B. ATLAS ensemble (reference: MD replicas, oracle replica held out)"
SECTION_C = "C. MDGen dynamics (reference: MD replicas, matching physical lag)"
SECTION_D = "D. Long-horizon health"
SECTION_E = "E. Local geometry (every peptide bond of every frame; MD column: replica 1)"

SECTION_NOTES = {
    SECTION_A: "PCA of the reference replica's CA coordinates (superposed on the initial "
    "structure by CA); coverage on its PC1-PC2 10x10 grid plus one bin for points outside it; "
    "tICA on backbone (sin, cos) torsions of valid frames (N/A below 30 valid lagged pairs); "
    "curves on the coarser of the two time steps; validity: CA clash < 3.0 A, CA break > 4.5 A, "
    "heavy-atom clash (vdW overlap > 0.4 A, 0.7 A for N/O pairs), C-N > 2.0 A, Ramachandran "
    "outliers <= 4.12%, rotamer outliers <= 7.05% (MDAnalysis reference histograms). Extra rows: "
    "the same with ConfDiff/MDGen's CA break at 4.19 A, and with every limit set at the 99th "
    "percentile of the reference MD's own frames (1st for the CA clash distance; replicas other "
    "than the oracle; the 'MD limit' rows, median over proteins), as the paper set its limits "
    "from ATLAS MD.",
    SECTION_B: "Per-atom metrics on the heavy atoms shared with the reference; {subsets}; "
    "contacts CA-CA < 8 A; SASA Shrake-Rupley probe 0.28 nm, buried < 0.02 nm^2.",
    SECTION_C: "Torsion histograms 100 bins on [-pi, pi]; tICA on the MD's torsion (sin, cos) "
    "features; k-means 100 / MSM / PCCA+ 10 states (deeptime); decorrelation at 1/e.",
    SECTION_D: "Every frame kept; NaN frames and exploded frames (Rg > 3x initial) counted.",
    SECTION_E: "Mean and standard deviation over all bonds of the finite frames (at most 2,000 "
    "evenly spaced frames per method); omega "
    "non-trans = |omega| < 150 deg; clashes as in section A (vdW overlap > 0.4 A, 0.7 A for "
    "N/O pairs, residues two or more apart); BioEmu's filter: every consecutive CA-CA < 4.5 A, "
    "every C(i)-N(i+1) < 2.0 A, no two atoms of different residues closer than 1.0 A. "
    "ConfDiff/MDGen's CA break (4.19 A) is in section A. 'generation' rows: the rollout's own "
    "checks of every frame before and after its refinement, read from the generation sidecar "
    "(the trajectory holds only refined frames; clashes there are counted over the atom pairs "
    "within 1 A of clashing in the raw frame; Ramachandran outliers by section A's rule, "
    "as a % of the residues judged; no rotamer check).",
}

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("coverage_jsd", SECTION_A, "coverage JSD (PC1-PC2 10x10)", "lower"),
    MetricSpec("coverage_recall", SECTION_A, "coverage recall", "higher"),
    MetricSpec("coverage_precision", SECTION_A, "coverage precision", "higher"),
    MetricSpec("coverage_f1", SECTION_A, "coverage F1", "higher"),
    MetricSpec("tica_corr", SECTION_A, "tICA per-residue correlation", "higher"),
    MetricSpec("rmsd_lag_gap", SECTION_A, "RMSD-vs-lag gap (A)", "lower"),
    MetricSpec("autocorr_gap", SECTION_A, "autocorrelation gap (top-32 PCs)", "lower"),
    MetricSpec("vamp2_gap", SECTION_A, "VAMP-2 gap", "lower"),
    MetricSpec("validity_ca_pct", SECTION_A, "validity CA (%)", "higher"),
    MetricSpec("validity_aa_pct", SECTION_A, "validity AA (%)", "higher"),
    MetricSpec("validity_pct", SECTION_A, "validity CA+AA (%)", "higher"),
    MetricSpec("validity_ca_pct_ca419", SECTION_A, "validity CA (%), CA break 4.19 A", "higher"),
    MetricSpec("validity_pct_ca419", SECTION_A, "validity CA+AA (%), CA break 4.19 A", "higher"),
    MetricSpec("validity_ca_pct_md99", SECTION_A, "validity CA (%), MD-derived limits", "higher"),
    MetricSpec("validity_aa_pct_md99", SECTION_A, "validity AA (%), MD-derived limits", "higher"),
    MetricSpec("validity_pct_md99", SECTION_A, "validity CA+AA (%), MD-derived limits", "higher"),
    MetricSpec("md99_ca_clash_a", SECTION_A, "MD limit: closest non-bonded CA-CA (A, 1st pct)"),
    MetricSpec("md99_ca_break_a", SECTION_A, "MD limit: CA(i)-CA(i+1) (A, 99th pct)"),
    MetricSpec("md99_clash_overlap_a", SECTION_A, "MD limit: heavy-atom vdW overlap (A, 99th pct)"),
    MetricSpec("md99_peptide_break_a", SECTION_A, "MD limit: C(i)-N(i+1) (A, 99th pct)"),
    MetricSpec("md99_rama_outlier_pct", SECTION_A, "MD limit: Ramachandran outliers (%, 99th pct)"),
    MetricSpec("md99_rotamer_outlier_pct", SECTION_A, "MD limit: rotamer outliers (%, 99th pct)"),
    MetricSpec("pairwise_rmsd", SECTION_B, "pairwise RMSD (A)"),
    MetricSpec("pairwise_rmsd_r", SECTION_B, "pairwise RMSD r (across proteins)", "higher"),
    MetricSpec("rmsf_median", SECTION_B, "RMSF median (A)"),
    MetricSpec("rmsf_global_r", SECTION_B, "RMSF global r (all atoms)", "higher"),
    MetricSpec("rmsf_r", SECTION_B, "RMSF per-target r", "higher"),
    MetricSpec("rmwd", SECTION_B, "RMWD (A)", "lower"),
    MetricSpec("rmwd_translation", SECTION_B, "RMWD translation (A)", "lower"),
    MetricSpec("rmwd_variance", SECTION_B, "RMWD variance (A)", "lower"),
    MetricSpec("pca_w2_md", SECTION_B, "MD PCA W2 (A)", "lower"),
    MetricSpec("pca_w2_joint", SECTION_B, "joint PCA W2 (A)", "lower"),
    MetricSpec("pc_cosine", SECTION_B, "PC1 |cosine|", "higher"),
    MetricSpec("pc_cosine_above_half_pct", SECTION_B, "% proteins PC1 |cosine| > 0.5", "higher"),
    MetricSpec("weak_contacts_jaccard", SECTION_B, "weak contacts Jaccard", "higher"),
    MetricSpec("transient_contacts_jaccard", SECTION_B, "transient contacts Jaccard", "higher"),
    MetricSpec("exposed_jaccard", SECTION_B, "exposed residues Jaccard", "higher"),
    MetricSpec("exposure_mi_spearman", SECTION_B, "exposure MI Spearman", "higher"),
    MetricSpec("torsion_jsd_backbone", SECTION_C, "backbone torsion JSD", "lower"),
    MetricSpec("torsion_jsd_sidechain", SECTION_C, "side-chain torsion JSD", "lower"),
    MetricSpec("phi_psi_jsd", SECTION_C, "joint (phi, psi) JSD", "lower"),
    MetricSpec("tica_0_jsd", SECTION_C, "TIC-0 JSD", "lower"),
    MetricSpec("tica_01_jsd", SECTION_C, "TIC-0,1 JSD", "lower"),
    MetricSpec("decorrelation_model_ps", SECTION_C, "median torsion decorrelation time (ps)"),
    MetricSpec("decorrelation_log_ratio", SECTION_C, "decorrelation |log10 ratio| to MD", "lower"),
    MetricSpec("msm_state_jsd", SECTION_C, "MSM metastable-state JSD", "lower"),
    MetricSpec("msm_transition_mae", SECTION_C, "MSM transition-matrix MAE", "lower"),
    MetricSpec("nan_frames", SECTION_D, "NaN frames (per protein)", "lower"),
    MetricSpec("exploded_frames", SECTION_D, "exploded frames (per protein)", "lower"),
    MetricSpec("rmsd_to_initial_final", SECTION_D, "final CA RMSD to initial (A)"),
    MetricSpec("rmsd_to_initial_max", SECTION_D, "max CA RMSD to initial (A)"),
    MetricSpec("rg_mean", SECTION_D, "mean Rg (A)"),
    MetricSpec("validity_first_decile_pct", SECTION_D, "validity first 10% of time (%)", "higher"),
    MetricSpec("validity_last_decile_pct", SECTION_D, "validity last 10% of time (%)", "higher"),
    MetricSpec("geo_c_n_mean", SECTION_E, "C(i)-N(i+1) mean (A)"),
    MetricSpec("geo_c_n_sd", SECTION_E, "C(i)-N(i+1) sd (A)"),
    MetricSpec("geo_c_n_long_pct", SECTION_E, "C(i)-N(i+1) > 1.5 A (% of bonds)", "lower"),
    MetricSpec(
        "geo_c_n_outside_pct", SECTION_E, "C(i)-N(i+1) outside 1.2-1.5 A (% of bonds)", "lower"
    ),
    MetricSpec("geo_n_ca_mean", SECTION_E, "N-CA mean (A)"),
    MetricSpec("geo_n_ca_sd", SECTION_E, "N-CA sd (A)"),
    MetricSpec("geo_ca_c_mean", SECTION_E, "CA-C mean (A)"),
    MetricSpec("geo_ca_c_sd", SECTION_E, "CA-C sd (A)"),
    MetricSpec("geo_ca_c_n_mean", SECTION_E, "CA-C-N angle mean (deg)"),
    MetricSpec("geo_ca_c_n_sd", SECTION_E, "CA-C-N angle sd (deg)"),
    MetricSpec("geo_c_n_ca_mean", SECTION_E, "C-N-CA angle mean (deg)"),
    MetricSpec("geo_c_n_ca_sd", SECTION_E, "C-N-CA angle sd (deg)"),
    MetricSpec("geo_omega_nontrans_pct", SECTION_E, "omega non-trans (% of bonds)", "lower"),
    MetricSpec("geo_ca_ca_mean", SECTION_E, "CA(i)-CA(i+1) mean (A)"),
    MetricSpec("geo_ca_ca_sd", SECTION_E, "CA(i)-CA(i+1) sd (A)"),
    MetricSpec("geo_rama_outlier_pct", SECTION_E, "Ramachandran outliers per frame (%)", "lower"),
    MetricSpec("geo_clash_pairs", SECTION_E, "heavy-atom clashes per frame", "lower"),
    MetricSpec("geo_clash_frames_pct", SECTION_E, "frames with a heavy-atom clash (%)", "lower"),
    MetricSpec("bioemu_valid_pct", SECTION_E, "BioEmu filter: frames passing (%)", "higher"),
    *(
        MetricSpec(f"gen_{tag}_{key}", SECTION_E, f"generation, {stage}: {label}", better)
        for key, label, better in (
            ("ca_valid_pct", "CA-valid frames (%)", "higher"),
            ("geometry_valid_pct", "CA-valid, no clash, no C-N > 2 A (% frames)", "higher"),
            ("clash_frames_pct", "frames with a heavy-atom clash (%)", "lower"),
            ("peptide_outside_pct", "C(i)-N(i+1) outside 1.2-1.5 A (% of bonds)", "lower"),
            ("rama_outlier_pct", "Ramachandran outliers (% of residues)", "lower"),
        )
        for tag, stage in (
            ("raw", "before refinement"),
            ("refined", "refined"),
            ("written", "written (refined and polished)"),
        )
    ),
    MetricSpec("gen_refine_ms_per_frame", SECTION_E, "generation: refinement ms per frame"),
    MetricSpec("gen_polish_ms_per_frame", SECTION_E, "generation: atom polish ms per frame"),
)

_GEOMETRY_KEYS = {s.key for s in METRICS if s.section == SECTION_E}

# md_reference properties shown in the MD column: the reference's own value of these metrics.
_REFERENCE_KEYS = {
    "validity_ca_pct", "validity_aa_pct", "validity_pct", "pairwise_rmsd", "rmsf_median",
    "validity_ca_pct_ca419", "validity_pct_ca419", "validity_ca_pct_md99", "validity_aa_pct_md99",
    "validity_pct_md99", "md99_ca_clash_a", "md99_ca_break_a", "md99_clash_overlap_a",
    "md99_peptide_break_a", "md99_rama_outlier_pct", "md99_rotamer_outlier_pct",
    "nan_frames", "exploded_frames", "rmsd_to_initial_final", "rmsd_to_initial_max", "rg_mean",
    "validity_first_decile_pct", "validity_last_decile_pct",
}  # fmt: skip
# Properties of the reference alone (the MD-derived validity limits): blank in other columns.
_REFERENCE_KEYS |= _GEOMETRY_KEYS
_REFERENCE_ONLY = {k for k in _REFERENCE_KEYS if k.startswith("md99_")}
_MEDIAN_KEYS = {s.key for s in METRICS} - {
    "pairwise_rmsd_r",
    "rmsf_global_r",
    "pc_cosine_above_half_pct",
}
_METHOD_ORDER = ("md_reference", "md_replica")
_BASELINE_ORDER = ("static", "anm")


# Values in Angstrom closer to 0 than this print as 0. An exactly-zero quantity can come out
# of the arithmetic as float noise: the static baseline's pairwise RMSD is 0 by construction
# (identical frames) but the Gram expansion |a|^2 + |b|^2 - 2 a.b of
# ensemble.mean_pairwise_rmsd cancels to ~1e-6 A (3.37e-06 on 2wqg). 1e-4 A is far below
# what the inputs resolve (XTC stores coordinates to 1e-3 nm = 0.01 A).
ANGSTROM_ZERO_TOLERANCE = 1e-4


def markdown_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: a bare ``|`` (as in ``|log10 ratio|``) would
    end the cell and shift every column after it."""
    return text.replace("|", "\\|")


_ANGSTROM_KEYS = {s.key for s in METRICS if "(A" in s.label}


def format_value(value: float, key: str) -> str:
    """A table value at three significant figures (whole numbers from 1000 up); an Angstrom
    value within :data:`ANGSTROM_ZERO_TOLERANCE` of zero, or an exact zero, prints as ``0``."""
    tolerance = ANGSTROM_ZERO_TOLERANCE if key in _ANGSTROM_KEYS else 0.0
    if abs(value) <= tolerance:
        return "0"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


@dataclass
class MetricsTable:
    """Median-over-proteins metrics, one column per method.

    Attributes:
        methods: column labels (``md_reference`` = the reference MD's own properties,
            ``md_replica`` = the oracle).
        values: metric key -> method -> value (NaN when not available).
        na_counts: metric key -> method -> number of proteins where the metric was N/A.
        n_proteins: proteins aggregated.
        notes: caveats collected from the proteins.
        settings: ``ensemble_frames`` and ``seed`` the proteins were scored with.
        left_out: proteins left out of a Jaccard median (both sets empty), per row and method.
        proteins: names of the proteins aggregated.
    """

    methods: list[str]
    values: dict[str, dict[str, float]]
    na_counts: dict[str, dict[str, int]]
    n_proteins: int
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    proteins: list[str] = field(default_factory=list)

    def subsets_note(self) -> str:
        """The subset size and seed the proteins were scored with, in words."""
        frames = self.settings.get("ensemble_frames", "?")
        seed = self.settings.get("seed", "?")
        return (
            f"pairwise RMSD, PCA W2 and SASA on {frames}-frame random subsets (seed {seed}; "
            "fewer frames when a trajectory is shorter)"
        )

    def section_notes(self) -> dict[str, str]:
        """Definitions of each section, with this run's settings filled in."""
        return {k: v.format(subsets=self.subsets_note()) for k, v in SECTION_NOTES.items()}

    def cell(self, key: str, method: str) -> str:
        """The table's text for one metric and method: N/A counts, blanks for the MD column."""
        value = self.values.get(key, {}).get(method, np.nan)
        na = self.na_counts.get(key, {}).get(method, 0)
        if not np.isfinite(value):
            return "N/A" if method != "md_reference" and key not in _REFERENCE_ONLY else ""
        text = format_value(value, key)
        if 0 < na < self.n_proteins:
            text += f" ({na} N/A)"
        return text

    def to_markdown(self) -> str:
        """The table as GitHub Markdown, one section header row per metric family."""
        lines = [
            "| metric | better | " + " | ".join(self.methods) + " |",
            "|---|---|" + "---|" * len(self.methods),
        ]
        section = None
        for spec in METRICS:
            if spec.section != section:
                section = spec.section
                lines.append(f"| **{section}** | |" + " |" * len(self.methods))
            cells = " | ".join(self.cell(spec.key, m) for m in self.methods)
            lines.append(f"| {markdown_cell(spec.label)} | {spec.better} | {cells} |")
        lines.append("")
        lines.append(
            f"Median over {self.n_proteins} protein(s). {JS_NOTE} Section B: {self.subsets_note()}."
        )
        lines += [f"- {note}" for note in self.left_out]
        return "\n".join(lines)

    def to_records(self) -> list[dict]:
        """One dict per metric (``section``, ``metric``, ``key``, ``better``, then one value
        per method, NaN where not available): ``pandas.DataFrame(table.to_records())`` is the
        table as a data frame."""
        return [
            {
                "section": spec.section,
                "metric": spec.label,
                "key": spec.key,
                "better": spec.better,
                **{m: float(self.values.get(spec.key, {}).get(m, np.nan)) for m in self.methods},
            }
            for spec in METRICS
        ]

    def write_csv(self, path: Path) -> None:
        """CSV with columns section, metric, key, better, one value column per method and
        ``{method}_na`` counts; written atomically."""
        atomic_write(path, self._write_csv)

    def _write_csv(self, path: str) -> None:
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                [
                    "section",
                    "metric",
                    "key",
                    "better",
                    *self.methods,
                    *(f"{m}_na" for m in self.methods),
                ]
            )
            for spec in METRICS:
                values = [self.values.get(spec.key, {}).get(m, np.nan) for m in self.methods]
                nas = [self.na_counts.get(spec.key, {}).get(m, 0) for m in self.methods]
                writer.writerow(
                    [spec.section, spec.label, spec.key, spec.better]
                    + ["" if not np.isfinite(v) else f"{v:.6g}" for v in values]
                    + nas
                )


def _ordered_methods(found: set[str]) -> list[str]:
    first = [m for m in _METHOD_ORDER if m in found]
    last = [m for m in _BASELINE_ORDER if m in found]
    middle = sorted(found - set(first) - set(last))
    return first + middle + last


def load_results(out_dir: Path, proteins: Sequence[str] | None = None) -> list[dict]:
    """The ``results.json`` of ``proteins`` (default: every protein under ``out_dir/proteins``),
    sorted by name."""
    folder = Path(out_dir) / "proteins"
    if proteins is None:
        paths = sorted(folder.glob("*/results.json"))
    else:
        paths = [folder / name / "results.json" for name in sorted(proteins)]
    return [json.loads(p.read_text()) for p in paths]


def aggregate(out_dir: str | Path, proteins: Sequence[str] | None = None) -> MetricsTable:
    """Aggregate per-protein results under ``out_dir/proteins`` into the metrics table.

    ``proteins`` names the proteins of this run (default: every folder found there).

    Medians over proteins ignore N/A values (counted per cell). Across-protein statistics:
    ``pairwise_rmsd_r`` (Pearson r of per-protein MD vs method pairwise RMSD; N/A below 3
    proteins),
    ``rmsf_global_r`` (Pearson r of per-atom RMSF over all atoms of all proteins),
    ``pc_cosine_above_half_pct``.
    """
    out_dir = Path(out_dir)
    results = load_results(out_dir, proteins)
    methods = _ordered_methods({m for r in results for m in r["methods"]})
    values: dict[str, dict[str, float]] = {s.key: {} for s in METRICS}
    na_counts: dict[str, dict[str, int]] = {s.key: {} for s in METRICS}
    for method in methods:
        for key in _MEDIAN_KEYS:
            if method == "md_reference" and key not in _REFERENCE_KEYS:
                continue
            if method != "md_reference" and key in _REFERENCE_ONLY:
                continue
            raw = [r["methods"].get(method, {}).get(key) for r in results]
            if method != "md_reference" and key == "tica_corr":
                raw = [
                    None if r["methods"].get(method, {}).get("tica_na") else v
                    for r, v in zip(results, raw, strict=True)
                ]
            finite = [v for v in raw if v is not None and np.isfinite(v)]
            values[key][method] = float(np.median(finite)) if finite else np.nan
            na_counts[key][method] = len(raw) - len(finite)
        if method == "md_reference":
            continue
        scored = [r["methods"][method] for r in results if method in r["methods"]]
        pairs = [(s.get("pairwise_rmsd_md"), s.get("pairwise_rmsd")) for s in scored]
        pairs = [p for p in pairs if None not in p]
        values["pairwise_rmsd_r"][method] = (
            pearson(*map(np.array, zip(*pairs, strict=True))) if len(pairs) >= 3 else np.nan
        )
        cosines = [s.get("pc_cosine") for s in scored if s.get("pc_cosine") is not None]
        values["pc_cosine_above_half_pct"][method] = (
            100.0 * float(np.mean(np.array(cosines) > 0.5)) if cosines else np.nan
        )
        values["rmsf_global_r"][method] = _global_rmsf_r(out_dir, results, method)
    left_out = _empty_set_notes(results, methods)
    notes = [f"{r['protein']}: {n}" for r in results for n in r.get("notes", [])] + left_out
    for r in results:
        for method, scores in r["methods"].items():
            for key in ("msm_note", "exposure_note", "note"):
                if scores.get(key):
                    notes.append(f"{r['protein']} / {method}: {scores[key]}")
            if scores.get("lag_exact") is False:
                notes.append(
                    f"{r['protein']} / {method}: time steps are not integer multiples; "
                    f"lags rounded to {scores.get('common_dt_ps')} ps frames"
                )
    return MetricsTable(
        methods, values, na_counts, len(results), notes, _run_settings(results), left_out,
        [r["protein"] for r in results],
    )  # fmt: skip


# Jaccard rows -> the per-protein key prefix of their set sizes.
_JACCARD_SETS = {
    "weak_contacts_jaccard": "weak_contacts",
    "transient_contacts_jaccard": "transient_contacts",
    "exposed_jaccard": "exposed",
}


def _empty_set_notes(results: list[dict], methods: list[str]) -> list[str]:
    """Per Jaccard row and method, how many proteins were left out because both sets were
    empty (Jaccard undefined, AlphaFlow's NaN)."""
    labels = {s.key: s.label for s in METRICS}
    notes = []
    for key, prefix in _JACCARD_SETS.items():
        for method in methods:
            scored = [r["methods"][method] for r in results if method in r["methods"]]
            empty = sum(
                1 for s in scored if s.get(f"{prefix}_n_md") == 0 and s.get(f"{prefix}_n") == 0
            )
            if empty:
                notes.append(
                    f"{labels[key]} / {method}: {empty} of {len(scored)} protein(s) left out of "
                    "the median (both sets empty, Jaccard undefined)"
                )
    return notes


def _run_settings(results: list[dict]) -> dict:
    """The subset size and seed of the proteins' scoring (a sorted list where they differ)."""
    settings = {}
    for key in ("ensemble_frames", "seed"):
        found = sorted({r["settings"][key] for r in results if key in r.get("settings", {})})
        if found:
            settings[key] = found[0] if len(found) == 1 else found
    return settings


def _global_rmsf_r(out_dir: Path, results: list[dict], method: str) -> float:
    ref, gen = [], []
    for r in results:
        path = out_dir / "proteins" / r["protein"] / "arrays.npz"
        if not path.is_file():
            continue
        with np.load(path) as arrays:
            if f"{method}/rmsf_gen" in arrays:
                ref.append(arrays[f"{method}/rmsf_ref"])
                gen.append(arrays[f"{method}/rmsf_gen"])
    if not ref:
        return np.nan
    return pearson(np.concatenate(ref), np.concatenate(gen))


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
    "tr.section td{background:#eef;font-weight:bold}img{max-width:100%}"
    ".headline{background:#f7f7f7;border:1px solid #ddd;padding:0.5em 1em;margin-bottom:1em}"
    ".ahead{background:#d4f0d4}.mixed{background:#fbeec2}.behind{background:#f6d0d0}"
    ".legend{font-size:12px;color:#444}"
    ".viewers{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}"
    "div.mol{width:420px;height:340px;position:relative;border:1px solid #ccc}"
)


def write_html(
    table: MetricsTable,
    out_dir: Path,
    settings: list[tuple[str, str]],
    headline_html: str = "",
) -> Path:
    """Self-contained ``report.html`` (plots embedded as base64 PNG) under ``out_dir``.

    Args:
        table: the aggregated table.
        out_dir: report folder (its ``proteins/{name}`` hold the plots).
        settings: (label, text) pairs shown under Settings.
        headline_html: HTML block shown first (provenance and verdict).
    """
    out_dir = Path(out_dir)
    buf = io.StringIO()
    buf.write("<!doctype html><html><head><meta charset='utf-8'><title>starmd evaluation</title>")
    buf.write(f"<style>{_CSS}</style></head><body>")
    buf.write("<h1>starmd evaluation</h1>")
    buf.write(headline_html)
    buf.write(f"<p>Median over {table.n_proteins} protein(s). {html.escape(JS_NOTE)} ")
    buf.write(
        "<code>md_reference</code> = the reference MD's own value, <code>md_replica</code> = an "
        "independent MD replica scored like a model (the ceiling).</p>"
    )
    buf.write("<h2>Settings</h2><ul>")
    for label, text in settings:
        buf.write(f"<li><b>{html.escape(label)}</b>: {html.escape(text)}</li>")
    buf.write("</ul><h2>Metrics</h2><table><tr><th>metric</th><th>better</th>")
    buf.write("".join(f"<th>{html.escape(m)}</th>" for m in table.methods) + "</tr>")
    section = None
    for spec in METRICS:
        if spec.section != section:
            section = spec.section
            span = 2 + len(table.methods)
            buf.write(f"<tr class='section'><td colspan='{span}'>{html.escape(section)}</td></tr>")
        cells = "".join(f"<td>{html.escape(table.cell(spec.key, m))}</td>" for m in table.methods)
        buf.write(f"<tr><td>{html.escape(spec.label)}</td><td>{spec.better}</td>{cells}</tr>")
    buf.write("</table><h2>Definitions</h2><ul>")
    for section, note in table.section_notes().items():
        buf.write(f"<li><b>{html.escape(section)}</b>: {html.escape(note)}</li>")
    buf.write("</ul><p>Each function of <code>starmd.evaluate</code> documents its metric.</p>")
    if table.notes:
        buf.write("<h2>Notes</h2><ul>")
        buf.write("".join(f"<li>{html.escape(n)}</li>" for n in table.notes))
        buf.write("</ul>")
    viewers = 0
    for key, r in enumerate(load_results(out_dir, table.proteins)):
        buf.write(f"<h2>{html.escape(r['protein'])}</h2>")
        folder = out_dir / "proteins" / r["protein"]
        if r.get("viewer"):
            buf.write(
                "<p>Trajectories (evenly spaced frames of replica 1, backbone cartoon, each "
                "superposed on its first frame; drag to rotate):</p>"
            )
            buf.write(viewer_section(r["viewer"], folder / "viewer", key))
            viewers += 1
        for name in (r.get("plots") or {}).values():
            path = folder / "plots" / name
            if path.is_file():
                buf.write(f"<p><img alt='{html.escape(name)}' src='{_png_data_uri(path)}'></p>")
    if viewers:
        buf.write(viewer_scripts())
    buf.write("</body></html>")
    return write_atomically(out_dir / "report.html", buf.getvalue())
