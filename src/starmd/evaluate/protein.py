"""Scoring of one protein: every method against the reference MD, all metric families.

:func:`evaluate_protein` loads one protein's reference and methods, builds the baselines, scores
each method on the atoms it shares with the reference, and writes ``results.json`` (scalars),
``arrays.npz`` (curves, profiles, per-frame series) and the protein's plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from starmd.evaluate import dynamics, ensemble, paper
from starmd.evaluate.baselines import anm_ensemble, static_ensemble
from starmd.evaluate.features import sincos, torsions_of
from starmd.evaluate.geometry import fit_pca, radius_of_gyration, rmsf
from starmd.evaluate.health import health_series, health_summary
from starmd.evaluate.local_geometry import (
    geometry_samples,
    geometry_summary,
    measure_geometry,
    plan_geometry,
    refinement_rows,
)
from starmd.evaluate.trajectories import (
    Ensemble,
    ProteinFiles,
    load_ensemble,
    load_heavy_topology,
    match_atoms,
)
from starmd.evaluate.validity import (
    check_validity,
    plan_validity,
    pooled_checks,
    thresholds_from_md,
    validity_scores,
)
from starmd.structure.io import atomic_write, write_atomically
from starmd.structure.superpose import superpose

REFERENCE = "md_reference"
REPLICA = "md_replica"
AUTOCORRELATION_PCS = 32
PLOT_POINTS = 5000
# tICA on more (sin, cos) features than this costs minutes of eigendecomposition.
MAX_TICA_FEATURES = 4000
# Local geometry costs ~35 ms per frame of a 1,000-residue protein; its distributions are well
# sampled by this many frames, evenly spaced so that every part of a rollout is seen.
GEOMETRY_FRAMES = 2000


@dataclass(frozen=True)
class ProteinJob:
    """Everything one worker needs to score one protein (picklable).

    Attributes:
        name: protein name.
        reference: reference MD files.
        methods: method label -> files in the generated layout (model, user folders).
        baselines: subset of ``("replica", "static", "anm")``.
        out_dir: folder for this protein's outputs.
        lag_ps: lag of tICA, VAMP-2 and the MSM in ps; None = one frame of the common step.
        ensemble_frames: frames subsampled for pairwise RMSD, PCA W2 and SASA.
        seed: RNG seed (ANM samples, subsets).
        plots: write PNG plots.
    """

    name: str
    reference: ProteinFiles
    methods: dict[str, ProteinFiles] = field(default_factory=dict)
    baselines: tuple[str, ...] = ("replica", "static", "anm")
    out_dir: Path = Path(".")
    lag_ps: float | None = None
    ensemble_frames: int = ensemble.ENSEMBLE_FRAMES
    seed: int = 0
    plots: bool = True


class ReferenceCache:
    """A protein's reference MD, superposed on the initial structure and validity-checked once
    per shared-atom set (methods with the same atoms reuse it).

    Args:
        reference: the reference replicas.
        initial: ``(N, 3)`` Angstrom, the initial structure (reference PDB), same atoms.
        held_out: index of the replica scored as the oracle; the MD-derived validity thresholds
            come from the other replicas so that the oracle is judged by limits it did not set.
    """

    def __init__(
        self, reference: Ensemble, initial: np.ndarray, held_out: int | None = None
    ) -> None:
        self.reference = reference
        self.initial = initial
        self.held_out = held_out
        self._cache: dict[bytes, dict] = {}

    def view(self, ref_idx: np.ndarray) -> dict:
        """Reference data restricted to the atoms ``ref_idx``: ``topology``, ``initial``,
        ``ca``, superposed ``replicas``, validity ``plan``, per-replica ``checks`` and the
        ``md_thresholds`` derived from the non-held-out replicas."""
        key = ref_idx.tobytes()
        if key not in self._cache:
            topology = self.reference.topology.subset(ref_idx)
            initial = self.initial[ref_idx]
            ca = topology.select("name CA")
            replicas = [superpose(r[:, ref_idx], initial, ca) for r in self.reference.replicas]
            plan = plan_validity(topology)
            checks = [check_validity(r, plan) for r in replicas]
            own = [c for i, c in enumerate(checks) if i != self.held_out]
            self._cache[key] = {
                "topology": topology,
                "initial": initial,
                "ca": ca,
                "replicas": replicas,
                "plan": plan,
                "geometry_plan": plan_geometry(topology, plan),
                "checks": checks,
                "md_thresholds": thresholds_from_md(pooled_checks(own)),
            }
        return self._cache[key]


def _local_geometry(
    replicas: list[np.ndarray], checks: list[dict[str, np.ndarray]], ref: dict, seed: int
) -> tuple[dict, dict[str, np.ndarray]]:
    """Section E scalars and histogram samples of trajectories in the view ``ref``'s atoms, on
    at most :data:`GEOMETRY_FRAMES` evenly spaced finite frames."""
    pooled = pooled_checks(checks)
    keep = np.flatnonzero(pooled["finite"])
    if len(keep) > GEOMETRY_FRAMES:
        keep = keep[np.linspace(0, len(keep) - 1, GEOMETRY_FRAMES).astype(int)]
    measures = measure_geometry(np.concatenate(replicas)[keep], ref["geometry_plan"])
    rama = pooled["rama_outlier_fraction"][keep]
    return geometry_summary(measures, rama), geometry_samples(measures, seed)


def _clean(frames: np.ndarray, exploded: np.ndarray | None = None) -> np.ndarray:
    keep = np.isfinite(frames).all(axis=(1, 2))
    if exploded is not None:
        keep &= ~exploded
    return frames[keep]


def _stride(replicas: list[np.ndarray], stride: int) -> list[np.ndarray]:
    return [r[::stride] for r in replicas]


@dataclass
class _Scoring:
    """One method and the reference, on their shared atoms, superposed on the initial structure.

    ``gen`` / ``ref_*`` hold Angstrom frames ``(T, M, 3)``; ``*_all`` are the finite,
    non-exploded frames pooled; ``s_gen`` / ``s_ref`` stride each onto ``common_dt`` ps; ``lag``
    is in frames of that step.
    """

    topology: object
    initial: np.ndarray
    ca: np.ndarray
    gen: list[np.ndarray]
    gen_valid: list[np.ndarray]
    gen_all: np.ndarray
    ref_paper: np.ndarray
    ref_paper_valid: np.ndarray
    ref_atlas: list[np.ndarray]
    atlas_all: np.ndarray
    common_dt: float
    s_gen: int
    s_ref: int
    lag: int


def score_method(
    method: Ensemble,
    cache: ReferenceCache,
    held_out: int | None,
    job: ProteinJob,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Score one method against the reference on their shared atoms (all metric families).

    Args:
        method: the trajectories to score.
        cache: the protein's reference MD.
        held_out: index of the reference replica used as the oracle (left out of the ATLAS and
            dynamics reference), or None.
        job: settings (lag, subset size, seed).

    Returns:
        (scalars for ``results.json``, arrays for ``arrays.npz``).
    """
    own_idx, ref_idx = match_atoms(method.topology, cache.reference.topology, method.source)
    ref = cache.view(ref_idx)
    initial, ca = ref["initial"], ref["ca"]
    gen = [superpose(r[:, own_idx], initial, ca) for r in method.replicas]
    gen_checks = [check_validity(r, ref["plan"]) for r in gen]
    series = [
        health_series(r, initial, ca, method.dt_ps, c) for r, c in zip(gen, gen_checks, strict=True)
    ]
    gen_all = _clean(np.concatenate(gen), np.concatenate([s["exploded_frame"] for s in series]))
    out: dict = {
        "n_atoms": int(len(ref_idx)),
        "n_reference_atoms": int(cache.reference.topology.n_atoms),
        "dt_ps": method.dt_ps,
        "usable_frames": int(len(gen_all)),
    }
    out |= validity_scores(pooled_checks(gen_checks), ref["md_thresholds"])
    geometry, geometry_arrays = _local_geometry(gen, gen_checks, ref, job.seed)
    out |= geometry
    out |= health_summary(series)
    arrays: dict[str, np.ndarray] = {
        f"health_{k}_R{i + 1}": v for i, s in enumerate(series) for k, v in s.items()
    }
    arrays["rg_gen"] = np.concatenate([s["radius_of_gyration"] for s in series])
    arrays |= geometry_arrays
    if len(gen_all) == 0:
        out["note"] = "no finite frame to score"
        return out, arrays

    common_dt, s_gen, s_ref, exact = paper.common_time_step(method.dt_ps, cache.reference.dt_ps)
    lag = 1 if job.lag_ps is None else max(1, round(job.lag_ps / common_dt))
    out |= {"common_dt_ps": common_dt, "lag_ps": lag * common_dt, "lag_exact": exact}
    ref_atlas = [r for i, r in enumerate(ref["replicas"]) if i != held_out]
    scoring = _Scoring(
        topology=ref["topology"],
        initial=initial,
        ca=ca,
        gen=gen,
        gen_valid=[c["valid"] for c in gen_checks],
        gen_all=gen_all,
        ref_paper=ref["replicas"][0],
        ref_paper_valid=ref["checks"][0]["valid"],
        ref_atlas=ref_atlas,
        atlas_all=_clean(np.concatenate(ref_atlas)),
        common_dt=common_dt,
        s_gen=s_gen,
        s_ref=s_ref,
        lag=lag,
    )
    for family in (_paper_scores, _ensemble_scores, _dynamics_scores):
        scalars, family_arrays = family(scoring, ref, job)
        out |= scalars
        arrays |= family_arrays
    return out, arrays


def _paper_scores(sc: _Scoring, ref: dict, job: ProteinJob) -> tuple[dict, dict]:
    """Section A: coverage, tICA correlation, RMSD-vs-lag / autocorrelation / VAMP-2 gaps."""
    ca, lag = sc.ca, sc.lag
    out: dict = {}
    ref_frames = _clean(sc.ref_paper[:, ca])
    pca = fit_pca(ref_frames, min(AUTOCORRELATION_PCS, 3 * len(ca), max(2, len(ref_frames) - 1)))
    out |= paper.coverage(pca.project(ref_frames)[:, :2], pca.project(sc.gen_all[:, ca])[:, :2])

    gen_t = _stride(sc.gen, sc.s_gen)
    ref_t = sc.ref_paper[:: sc.s_ref]
    backbone = torsions_of(sc.topology).select(("phi", "psi"))
    feature_residue = np.repeat(backbone.residues, 2)
    n_res = sc.topology.n_residues
    contrib_ref, pairs_ref = paper.tica_residue_contributions(
        [sincos(backbone.angles(ref_t))],
        feature_residue,
        n_res,
        lag,
        [sc.ref_paper_valid[:: sc.s_ref]],
    )
    contrib_gen, pairs_gen = paper.tica_residue_contributions(
        [sincos(backbone.angles(r)) for r in gen_t],
        feature_residue,
        n_res,
        lag,
        [v[:: sc.s_gen] for v in sc.gen_valid],
    )
    out |= {"tica_valid_pairs": pairs_gen, "tica_valid_pairs_md": pairs_ref}
    out["tica_na"] = contrib_ref is None or contrib_gen is None
    out["tica_corr"] = np.nan if out["tica_na"] else paper.pearson(contrib_ref, contrib_gen)

    ref_pcs = pca.project(ref_t[:, ca])
    gen_pcs = [pca.project(r[:, ca]) for r in gen_t]
    lags = paper.lag_grid(min(len(ref_t), *(len(r) for r in gen_t)))
    curves = {
        "rmsd_lag_ref": paper.rmsd_lag_curve([ref_t[:, ca]], lags),
        "rmsd_lag_gen": paper.rmsd_lag_curve([r[:, ca] for r in gen_t], lags),
        "autocorr_ref": paper.autocorrelation_curve([ref_pcs], lags),
        "autocorr_gen": paper.autocorrelation_curve(gen_pcs, lags),
        "lags_ps": lags * sc.common_dt,
    }
    out["rmsd_lag_gap"] = paper.curve_gap(curves["rmsd_lag_gen"], curves["rmsd_lag_ref"])
    out["autocorr_gap"] = paper.curve_gap(curves["autocorr_gen"], curves["autocorr_ref"])
    # VAMP-2 is biased upwards when features approach the number of pairs: use the same
    # k <= 32 leading PCs for both, with at least 10 lagged pairs per feature.
    n_pairs = min(len(ref_t), *(len(r) for r in gen_t)) - lag
    k = int(np.clip(n_pairs // 10, 1, pca.components.shape[0]))
    vamp_ref = paper.vamp2([ref_pcs[:, :k]], lag)
    vamp_gen = paper.vamp2([p[:, :k] for p in gen_pcs], lag)
    out |= {"vamp2_pcs": k, "vamp2_md": vamp_ref, "vamp2": vamp_gen}
    out["vamp2_gap"] = abs(vamp_gen - vamp_ref)
    return out, curves


def _ensemble_scores(sc: _Scoring, ref: dict, job: ProteinJob) -> tuple[dict, dict]:
    """Section B: pairwise RMSD, RMSF, RMWD, PCA W2, PC cosine, contacts, exposure."""
    ca, topology = sc.ca, sc.topology
    rmsf_ref, rmsf_gen = rmsf(sc.atlas_all), rmsf(sc.gen_all)
    ref_sub = ensemble.subsample(sc.atlas_all, job.ensemble_frames, job.seed)
    gen_sub = ensemble.subsample(sc.gen_all, job.ensemble_frames, job.seed)
    out: dict = {
        "pairwise_rmsd_md": ensemble.mean_pairwise_rmsd(ref_sub[:, ca]),
        "pairwise_rmsd": ensemble.mean_pairwise_rmsd(gen_sub[:, ca]),
        "rmsf_md_median": float(np.median(rmsf_ref)),
        "rmsf_median": float(np.median(rmsf_gen)),
        "rmsf_r": paper.pearson(rmsf_ref, rmsf_gen),
    }
    out |= ensemble.rmwd(sc.atlas_all, sc.gen_all)
    ref_ca, gen_ca = sc.atlas_all[:, ca], sc.gen_all[:, ca]
    subset = {"frames": job.ensemble_frames, "seed": job.seed}
    out["pca_w2_md"] = ensemble.pca_w2(ref_ca, gen_ca, joint=False, **subset)
    out["pca_w2_joint"] = ensemble.pca_w2(ref_ca, gen_ca, joint=True, **subset)
    moving = float(np.var(gen_ca.reshape(len(gen_ca), -1), axis=0).sum()) > 1e-8
    out["pc_cosine"] = ensemble.pc_cosine(ref_ca, gen_ca) if moving else np.nan
    weak_ref, transient_ref = ensemble.contact_sets(
        sc.initial[ca], ensemble.contact_frequencies(ref_ca)
    )
    weak_gen, transient_gen = ensemble.contact_sets(
        sc.initial[ca], ensemble.contact_frequencies(gen_ca)
    )
    for kind, ref_set, gen_set in (
        ("weak_contacts", weak_ref, weak_gen),
        ("transient_contacts", transient_ref, transient_gen),
    ):
        out[f"{kind}_jaccard"] = ensemble.jaccard(ref_set, gen_set)
        out[f"{kind}_n_md"], out[f"{kind}_n"] = len(ref_set), len(gen_set)
    sidechains = np.array(
        [r for r, atoms in enumerate(ensemble.sidechain_residues(topology)) if atoms]
    )
    if len(sidechains) >= 2:
        if "sasa" not in ref:  # the reference subset is the same for every method on these atoms
            ref["sasa"] = (
                ensemble.sidechain_sasa(sc.initial[None], topology)[0],
                ensemble.sidechain_sasa(ref_sub, topology),
            )
        out |= ensemble.exposure_metrics(
            *ref["sasa"], ensemble.sidechain_sasa(gen_sub, topology), sidechains
        )
    else:
        out |= {"exposed_jaccard": np.nan, "exposure_mi_spearman": np.nan}
        out["exposure_note"] = "no side-chain atoms shared with the reference"
    arrays = {
        "rmsf_ref": rmsf_ref,
        "rmsf_gen": rmsf_gen,
        "ca_index": ca,
        "ca_residue_number": np.array([topology.atom(i).residue.resSeq for i in ca]),
        "rg_ref": np.concatenate([radius_of_gyration(r) for r in sc.ref_atlas]),
        "ca_distances_gen": _ca_distance_sample(gen_sub[:, ca], job.seed),
        "ca_distances_ref": _ca_distance_sample(ref_sub[:, ca], job.seed),
    }
    return out, arrays


def _dynamics_scores(sc: _Scoring, ref: dict, job: ProteinJob) -> tuple[dict, dict]:
    """Section C: torsion and tICA JSDs, decorrelation times, MSM states, at the common step."""
    torsions = torsions_of(sc.topology)
    ref_angles = [torsions.angles(r) for r in sc.ref_atlas]
    gen_angles = [torsions.angles(r) for r in sc.gen]
    jsds = dynamics.torsion_jsds(np.concatenate(ref_angles), np.concatenate(gen_angles), torsions)
    arrays: dict = {"torsion_jsd": jsds.pop("torsion_jsd")}
    out: dict = dict(jsds)
    columns = np.arange(len(torsions.kinds))
    if 2 * len(columns) > MAX_TICA_FEATURES:  # large proteins: backbone torsions only
        columns = np.flatnonzero(np.isin(torsions.kinds, dynamics.BACKBONE_KINDS))
        out["tica_features"] = "backbone torsions (protein too large for all torsions)"
    ref_feat = [sincos(a[:: sc.s_ref, columns]) for a in ref_angles]
    gen_feat = [sincos(a[:: sc.s_gen, columns]) for a in gen_angles]
    tica_scores, tica_model = dynamics.tica_jsds(ref_feat, gen_feat, sc.lag)
    out |= tica_scores
    times_ref = dynamics.decorrelation_times([a[:: sc.s_ref] for a in ref_angles], sc.common_dt)
    times_gen = dynamics.decorrelation_times([a[:: sc.s_gen] for a in gen_angles], sc.common_dt)
    arrays |= {"decorrelation_ref_ps": times_ref, "decorrelation_gen_ps": times_gen}
    out |= dynamics.decorrelation_summary(times_ref, times_gen)
    if tica_model is None or tica_model.eigenvectors.shape[1] == 0:
        out |= {"msm_state_jsd": np.nan, "msm_transition_mae": np.nan, "msm_note": "no tICA model"}
        return out, arrays
    ref_tics = [tica_model.transform(f) for f in ref_feat]
    gen_tics = [tica_model.transform(f) for f in gen_feat]
    out |= dynamics.msm_comparison(ref_tics, gen_tics, sc.lag, job.seed)
    rng = np.random.default_rng(job.seed)
    for label, tics in (("ref", ref_tics), ("gen", gen_tics)):
        points = np.concatenate(tics)[:, :2]
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) > PLOT_POINTS:
            points = points[rng.choice(len(points), PLOT_POINTS, replace=False)]
        arrays[f"tica_{label}"] = points
    return out, arrays


def _ca_distance_sample(frames_ca: np.ndarray, seed: int, n: int = 20000) -> np.ndarray:
    """A fixed-seed sample of CA-CA distances (A) over frames and pairs, for histograms."""
    rng = np.random.default_rng(seed)
    m = frames_ca.shape[1]
    t = rng.integers(0, len(frames_ca), n)
    i = rng.integers(0, m, n)
    j = rng.integers(0, m, n)
    keep = i != j
    return np.linalg.norm(frames_ca[t[keep], i[keep]] - frames_ca[t[keep], j[keep]], axis=1)


def _reference_properties(
    cache: ReferenceCache, held_out: int | None, job: ProteinJob
) -> tuple[dict, dict[str, np.ndarray]]:
    """Properties of the reference MD itself (full atom set): validity, spread, health."""
    ref = cache.view(np.arange(cache.reference.topology.n_atoms))
    ca = ref["ca"]
    atlas = [r for i, r in enumerate(ref["replicas"]) if i != held_out]
    atlas_all = _clean(np.concatenate(atlas))
    out = validity_scores(ref["checks"][0], ref["md_thresholds"])
    geometry, geometry_arrays = _local_geometry(
        ref["replicas"][:1], ref["checks"][:1], ref, job.seed
    )
    out |= geometry
    series = [
        health_series(r, ref["initial"], ca, cache.reference.dt_ps, c)
        for r, c in zip(ref["replicas"], ref["checks"], strict=True)
    ]
    out |= health_summary(series)
    out |= {
        "pairwise_rmsd": ensemble.mean_pairwise_rmsd(
            ensemble.subsample(atlas_all, job.ensemble_frames, job.seed)[:, ca]
        ),
        "rmsf_median": float(np.median(rmsf(atlas_all))),
        "dt_ps": cache.reference.dt_ps,
        "n_replicas": len(cache.reference.replicas),
    }
    arrays = {f"health_{k}_R{i + 1}": v for i, s in enumerate(series) for k, v in s.items()}
    return out, arrays | geometry_arrays


def build_methods(
    job: ProteinJob, reference: Ensemble, initial: np.ndarray
) -> tuple[dict[str, Ensemble], int | None, list[str]]:
    """The ensembles to score: loaded methods plus the requested baselines.

    Returns:
        (label -> ensemble, index of the reference replica held out as the oracle or None,
        notes on baselines that could not be built).
    """
    methods = {label: load_ensemble(files) for label, files in job.methods.items()}
    notes: list[str] = []
    held_out = None
    if "replica" in job.baselines:
        if len(reference.replicas) >= 2:
            held_out = 1
            methods[REPLICA] = Ensemble(
                reference.name,
                reference.topology,
                [reference.replicas[1]],
                reference.dt_ps,
                reference.replica_files[1] if len(reference.replica_files) > 1 else "replica 2",
            )
        else:
            notes.append("replica baseline skipped: the reference has a single replica")
    template = next(iter(methods.values()), None)
    if template is not None and template is not methods.get(REPLICA):
        n_frames, dt = len(template.replicas[0]), template.dt_ps
    else:
        n_frames, dt = len(reference.replicas[0]), reference.dt_ps
    if "static" in job.baselines:
        methods["static"] = static_ensemble(
            reference.name, reference.topology, initial, n_frames, dt
        )
    if "anm" in job.baselines:
        methods["anm"] = anm_ensemble(
            reference.name, reference.topology, initial, n_frames, dt, seed=job.seed
        )
    return methods, held_out, notes


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def evaluate_protein(job: ProteinJob) -> dict:
    """Score every method of one protein and write its outputs under ``job.out_dir``.

    Writes ``results.json`` (per method scalars; NaN stored as null), ``arrays.npz`` (keys
    ``{method}/{array}``) and, if ``job.plots``, PNG plots in ``plots/`` and the 3D viewer's
    frames (MD replica 1 and every loaded method) in ``viewer/``.

    Returns:
        the content of ``results.json``.

    Raises:
        StarmdInputError: unreadable inputs, or a method that is a different protein.
    """
    reference = load_ensemble(job.reference, "reference")
    _, initial = load_heavy_topology(job.reference.pdb)
    methods, held_out, notes = build_methods(job, reference, initial)
    cache = ReferenceCache(reference, initial, held_out)
    results: dict = {
        "protein": job.name,
        "notes": notes,
        "held_out_replica": held_out,
        "settings": {"ensemble_frames": job.ensemble_frames, "seed": job.seed},
        "methods": {},
    }
    all_arrays: dict[str, np.ndarray] = {}
    ref_scalars, ref_arrays = _reference_properties(cache, held_out, job)
    results["methods"][REFERENCE] = ref_scalars
    all_arrays |= {f"{REFERENCE}/{k}": v for k, v in ref_arrays.items()}
    for label, method in methods.items():
        scalars, arrays = score_method(method, cache, held_out, job)
        if label in job.methods:
            scalars |= refinement_rows(job.methods[label].sidecar)
        results["methods"][label] = scalars
        all_arrays |= {f"{label}/{k}": np.asarray(v) for k, v in arrays.items()}
    job.out_dir.mkdir(parents=True, exist_ok=True)
    results = _jsonable(results)
    write_atomically(job.out_dir / "results.json", json.dumps(results, indent=1))
    atomic_write(job.out_dir / "arrays.npz", lambda tmp: np.savez_compressed(tmp, **all_arrays))
    if job.plots:
        from starmd.evaluate.plots import protein_plots
        from starmd.evaluate.viewer import write_viewer_models

        results["plots"] = protein_plots(job.name, all_arrays, list(methods), job.out_dir / "plots")
        results["viewer"] = write_viewer_models(job.reference, job.methods, job.out_dir / "viewer")
        write_atomically(job.out_dir / "results.json", json.dumps(results, indent=1))
    return results
