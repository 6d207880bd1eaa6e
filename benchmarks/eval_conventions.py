"""Measured effect of each convention where ``starmd evaluate`` differs from AlphaFlow's analysis.

The MD oracle arrangement of the report: for each protein, replica 1 of the reference MD is the
reference and replica 2 is scored against it. Every row computes one metric twice on the same
frames, ``left -> right``: left as ``starmd.evaluate`` does, right as AlphaFlow's
``analyze_ensembles.py`` / ``print_analysis.py`` do (re-implemented here from their published
description: heavy-atom superposition, MD frames drawn with replacement with seed 137, N x N
pairs including i = j, the full residue x residue MI matrix), or, where the row says so, an old
setting of ours -> the current one (SASA sphere points) or the headline validity limits -> an
alternative. It prints per-protein values and the median over proteins as a Markdown table
(the numbers of ``docs/evaluation_conventions.md``).

    python benchmarks/eval_conventions.py --reference corpus/md --protein 2wqg 2k1b 2m2l
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.stats import spearmanr

from starmd.evaluate import ensemble, paper, validity
from starmd.evaluate.divergence import assignment_w2, histogram_2d, js_distance
from starmd.evaluate.geometry import fit_pca, rmsf
from starmd.evaluate.trajectories import discover_proteins, load_ensemble, load_heavy_topology
from starmd.structure.superpose import superpose

ALPHAFLOW_SEED = 137
ALPHAFLOW_MD_DRAWS = 1000  # RAND1K: frames for RMWD and SASA
ROTATIONS = 6


def pairs_including_self(frames: np.ndarray) -> float:
    """AlphaFlow's pairwise RMSD of one ensemble: mean over all N x N pairs, i = j included."""
    flat = frames.reshape(len(frames), -1).astype(np.float64)
    d2 = ((flat[:, None] - flat[None]) ** 2).sum(-1) / frames.shape[1]
    return float(np.sqrt(d2).mean())


def cross_pairs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean RMSD over all pairs of frames of ``a`` x ``b`` (AlphaFlow's MD pairwise RMSD)."""
    fa, fb = (x.reshape(len(x), -1).astype(np.float64) for x in (a, b))
    d2 = ((fa[:, None] - fb[None]) ** 2).sum(-1) / a.shape[1]
    return float(np.sqrt(d2).mean())


def rmwd_of(reference: np.ndarray, generated: np.ndarray) -> float:
    return ensemble.rmwd(reference, generated)["rmwd"]


def alphaflow_pca_w2(ref_ca: np.ndarray, gen_ca: np.ndarray, draw: np.ndarray, joint: bool):
    """PCA on all MD frames (or on MD[draw] + generated), W2 between MD[draw] and generated."""
    basis = fit_pca(np.concatenate([ref_ca[draw], gen_ca]) if joint else ref_ca, 2)
    return assignment_w2(basis.project(ref_ca[draw]), basis.project(gen_ca)) / np.sqrt(
        ref_ca.shape[1]
    )


def full_matrix_mi_spearman(ref_exposed: np.ndarray, gen_exposed: np.ndarray) -> float:
    """AlphaFlow's exposure-MI rho: every residue (with or without side chain), the whole
    flattened L x L matrix (both triangles and the zero diagonal)."""
    mi_ref = ensemble.exposure_mutual_information(ref_exposed)
    mi_gen = ensemble.exposure_mutual_information(gen_exposed)
    np.fill_diagonal(mi_ref, 0.0)
    np.fill_diagonal(mi_gen, 0.0)
    return float(spearmanr(mi_ref.ravel(), mi_gen.ravel()).statistic)


def exposure_at(points: int, initial, r1, r2, topology, sidechains) -> dict:
    ensemble.SASA_SPHERE_POINTS = points
    s0 = ensemble.sidechain_sasa(initial[None], topology)[0]
    s1 = ensemble.sidechain_sasa(r1, topology)
    s2 = ensemble.sidechain_sasa(r2, topology)
    out = ensemble.exposure_metrics(s0, s1, s2, sidechains)
    centre = r2.mean(axis=(0, 1))
    spread = {"exposed_jaccard": [], "exposure_mi_spearman": []}
    for k in range(ROTATIONS):
        rot = Rotation.random(random_state=k).as_matrix()
        rotated = ensemble.sidechain_sasa((r2 - centre) @ rot.T + centre, topology)
        for key, value in ensemble.exposure_metrics(s0, s1, rotated, sidechains).items():
            if key in spread:
                spread[key].append(value)
    out["spread"] = {k: float(np.ptp(v + [out[k]])) for k, v in spread.items()}
    out["sasa"] = (s0, s1, s2)
    return out


def coverage_dropping_outside(ref_pcs: np.ndarray, gen_pcs: np.ndarray) -> dict[str, float]:
    """Coverage JSD and precision on the reference's 10 x 10 grid, generated points outside the
    grid ignored (no extra bin)."""
    edges = [np.linspace(ref_pcs[:, k].min(), ref_pcs[:, k].max(), 11) for k in range(2)]
    h_ref = histogram_2d(ref_pcs, *edges, outside_bin=False)
    h_gen = histogram_2d(gen_pcs, *edges, outside_bin=False)
    both = float(((h_ref > 0) & (h_gen > 0)).sum())
    return {
        "coverage_jsd": js_distance(h_ref, h_gen),
        "coverage_precision": both / (h_gen > 0).sum(),
    }


def measure(reference_dir: str, name: str) -> dict[str, tuple[float, float]]:
    """Per row, (starmd value, AlphaFlow-convention value) for one protein."""
    files = discover_proteins(reference_dir, "reference")[name]
    md = load_ensemble(files, "reference")
    topology, initial = load_heavy_topology(files.pdb)
    ca = topology.select("name CA")
    heavy = np.arange(topology.n_atoms)
    r1, r2 = (superpose(r, initial, ca) for r in md.replicas[:2])
    h1, h2 = (superpose(r, initial, heavy) for r in md.replicas[:2])
    rng = np.random.RandomState(ALPHAFLOW_SEED)  # AlphaFlow's np.random.seed(137) stream
    draw1 = rng.randint(0, len(r1), len(r2))
    draw2 = rng.randint(0, len(r1), len(r2))
    draw1k = rng.randint(0, len(r1), ALPHAFLOW_MD_DRAWS)
    rows: dict[str, tuple[float, float]] = {}
    rows["pairwise RMSD, replica 2 (A)"] = (
        ensemble.mean_pairwise_rmsd(r2[:, ca]),
        pairs_including_self(r2[:, ca]),
    )
    rows["pairwise RMSD, MD (A)"] = (
        ensemble.mean_pairwise_rmsd(r1[:, ca]),
        cross_pairs(r1[draw1][:, ca], r1[draw2][:, ca]),
    )
    rows["RMSF median, replica 2 (A)"] = (
        float(np.median(rmsf(r2))),
        float(np.median(rmsf(h2))),
    )
    rows["RMSF per-target r"] = (
        paper.pearson(rmsf(r1), rmsf(r2)),
        paper.pearson(rmsf(h1), rmsf(h2)),
    )
    rows["RMWD (A)"] = (rmwd_of(r1, r2), rmwd_of(h1[draw1k], h2))
    for joint, label in ((False, "MD PCA W2 (A)"), (True, "joint PCA W2 (A)")):
        rows[label] = (
            ensemble.pca_w2(r1[:, ca], r2[:, ca], joint, frames=250, seed=0),
            alphaflow_pca_w2(r1[:, ca], r2[:, ca], draw1, joint),
        )
    weak1, transient1 = ensemble.contact_sets(initial[ca], ensemble.contact_frequencies(r1[:, ca]))
    weak1d, transient1d = ensemble.contact_sets(
        initial[ca], ensemble.contact_frequencies(r1[draw1][:, ca])
    )
    weak2, transient2 = ensemble.contact_sets(initial[ca], ensemble.contact_frequencies(r2[:, ca]))
    rows["weak contacts Jaccard"] = (
        ensemble.jaccard(weak1, weak2),
        ensemble.jaccard(weak1d, weak2),
    )
    rows["transient contacts Jaccard"] = (
        ensemble.jaccard(transient1, transient2),
        ensemble.jaccard(transient1d, transient2),
    )
    sidechains = np.array([r for r, a in enumerate(ensemble.sidechain_residues(topology)) if a])
    coarse = exposure_at(240, initial, r1, r2, topology, sidechains)
    fine = exposure_at(960, initial, r1, r2, topology, sidechains)
    for key, label in (
        ("exposed_jaccard", "exposed residues Jaccard"),
        ("exposure_mi_spearman", "exposure MI Spearman"),
    ):
        rows[f"{label}: 240 -> 960 SASA points"] = (coarse[key], fine[key])
        rows[f"{label}: spread over {ROTATIONS} rotations, 240 -> 960"] = (
            coarse["spread"][key],
            fine["spread"][key],
        )
    _, s1, s2 = fine["sasa"]
    rows["exposure MI Spearman: side-chain upper triangle -> full matrix"] = (
        fine["exposure_mi_spearman"],
        full_matrix_mi_spearman(s1 > ensemble.BURIED_SASA_NM2, s2 > ensemble.BURIED_SASA_NM2),
    )
    pca = fit_pca(r1[:, ca], 2)
    ref_pcs, gen_pcs = pca.project(r1[:, ca]), pca.project(r2[:, ca])
    ours = paper.coverage(ref_pcs, gen_pcs)
    dropped = coverage_dropping_outside(ref_pcs, gen_pcs)
    for key in ("coverage_jsd", "coverage_precision"):
        rows[f"{key.replace('_', ' ')}: outside bin -> points outside dropped"] = (
            ours[key],
            dropped[key],
        )
    every_lag = np.arange(1, len(r1) // 2 + 1)
    rows["RMSD-vs-lag gap (A): 20 log-spaced lags -> every lag"] = tuple(
        paper.curve_gap(
            paper.rmsd_lag_curve([r2[:, ca]], lags), paper.rmsd_lag_curve([r1[:, ca]], lags)
        )
        for lags in (paper.lag_grid(len(r1)), every_lag)
    )
    plan = validity.plan_validity(topology)
    md_limits = validity.thresholds_from_md(validity.measure_frames(r1, plan))
    checks = validity.measure_frames(r2, plan)
    for key, label in (("valid_ca", "CA"), ("valid", "CA+AA")):
        headline = 100.0 * validity.judge(checks)[key].mean()
        rows[f"validity {label} (%): CA break 4.5 -> 4.19 A"] = (
            headline,
            100.0 * validity.judge(checks, validity.CA_BREAK_CONFDIFF)[key].mean(),
        )
        rows[f"validity {label} (%): headline -> MD-derived limits"] = (
            headline,
            100.0 * validity.judge(checks, md_limits)[key].mean(),
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="reference MD folder (ATLAS layout)")
    parser.add_argument("--protein", nargs="+", required=True)
    args = parser.parse_args()
    per_protein = {name: measure(args.reference, name) for name in args.protein}
    names = list(per_protein)
    print("| metric | " + " | ".join(names) + " | median |")
    print("|---|" + "---|" * (len(names) + 1))
    for row in per_protein[names[0]]:
        cells, ours, theirs = [], [], []
        for name in names:
            a, b = per_protein[name][row]
            ours.append(a)
            theirs.append(b)
            cells.append(f"{a:.3g} -> {b:.3g}")
        median = f"{np.nanmedian(ours):.3g} -> {np.nanmedian(theirs):.3g}"
        print(f"| {row} | " + " | ".join(cells) + f" | {median} |")


if __name__ == "__main__":
    main()
