"""Metric assembly (``score_method``) on a hand-built case whose answer is known in advance.

Every trajectory here is villin with its residues translated rigidly by a smooth field (see
:func:`hinge_process`). The "MD" process switches one segment slowly between two states on top
of fast smooth noise; a "model" runs the same process with another seed; a "misplaced" process
is the same kind of motion with its slow segment elsewhere in the chain. Scores comparing a
method with MD (RMSF r, tICA correlation, PC1 cosine) must therefore rank the MD replica and the
model high and the misplaced process and the ANM baseline (a 15 A elastic network, blind to the
hand-placed segment) low. A score computed from MD alone (or MD twice) gives every method the
same value and breaks the ranking.
"""

from __future__ import annotations

import numpy as np
import pytest

from starmd.evaluate import dynamics, paper
from starmd.evaluate.baselines import anm_ensemble
from starmd.evaluate.protein import ProteinJob, ReferenceCache, score_method
from starmd.evaluate.trajectories import Ensemble

from .conftest import load_villin

MD_HINGE = 8  # residue at the centre of MD's slow motion
MISPLACED_HINGE = 24
HINGE_AMPLITUDE_A = 0.5
FAST_NOISE_A = 0.08


def hinge_process(n_frames: int, hinge: int, seed: int, switch: float = 0.04) -> np.ndarray:
    """Frames ``(n_frames, N, 3)`` Angstrom of villin's heavy atoms, each residue translated
    rigidly.

    Slow mode: the residues around ``hinge`` (Gaussian bump of width 2 residues) shift by
    +-``HINGE_AMPLITUDE_A`` along a fixed direction, the sign a two-state switch (probability
    ``switch`` per frame). Fast mode: an AR(1) displacement field smooth along the sequence
    (Gaussian kernel of 2.5 residues, ``FAST_NOISE_A`` scale). Neighbouring residues move
    nearly together, so bonds stay near ideal and most frames pass the validity checks.
    """
    villin = load_villin()
    top = villin.topology
    x0 = villin.xyz[0].astype(np.float64) * 10.0
    residue_of_atom = np.array([a.residue.index for a in top.atoms])
    r = np.arange(top.n_residues)
    bump = np.exp(-0.5 * ((r - hinge) / 2.0) ** 2)
    kernel = np.exp(-0.5 * ((r[:, None] - r[None, :]) / 2.5) ** 2)
    kernel /= np.sqrt((kernel**2).sum(axis=1, keepdims=True))
    direction = np.array([0.6, -0.48, 0.64])
    rng = np.random.default_rng(seed)
    state, local = 1.0, rng.standard_normal((top.n_residues, 3))
    frames = np.empty((n_frames, len(x0), 3), dtype=np.float32)
    for t in range(n_frames):
        if rng.random() < switch:
            state = -state
        local = 0.8 * local + 0.6 * rng.standard_normal(local.shape)
        shift = HINGE_AMPLITUDE_A * state * bump[:, None] * direction
        shift = shift + FAST_NOISE_A * (kernel @ local)
        frames[t] = x0 + shift[residue_of_atom]
    return frames


@pytest.fixture(scope="module")
def scored() -> dict[str, dict]:
    # the MSM comparison is 3/4 of the scoring time and none of the scores checked here
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamics, "msm_comparison", lambda *args, **kwargs: {})
        return _score_all()


def _score_all() -> dict[str, dict]:
    villin = load_villin()
    top = villin.topology
    initial = villin.xyz[0].astype(np.float64) * 10.0
    reference = Ensemble(
        "villin", top, [hinge_process(300, MD_HINGE, seed=s) for s in (1, 2)], 10.0, "md"
    )
    cache = ReferenceCache(reference, initial)
    job = ProteinJob("villin", None, ensemble_frames=40, plots=False)
    methods = {
        "md_replica": Ensemble("villin", top, [reference.replicas[1]], 10.0, "replica"),
        "model": Ensemble("villin", top, [hinge_process(300, MD_HINGE, seed=3)], 10.0, "m"),
        "misplaced": Ensemble(
            "villin", top, [hinge_process(300, MISPLACED_HINGE, seed=4)], 10.0, "x"
        ),
        "anm": anm_ensemble("villin", top, initial, 300, 10.0, seed=0),
    }
    return {label: score_method(m, cache, 1, job)[0] for label, m in methods.items()}


def test_hand_built_processes_are_valid_frames(scored):
    for label in ("md_replica", "model", "misplaced"):
        assert scored[label]["validity_pct"] > 80.0, (label, scored[label]["validity_pct"])


def test_rmsf_correlation_ranks_same_process_above_misplaced_hinges_and_anm(scored):
    r = {label: s["rmsf_r"] for label, s in scored.items()}
    assert min(r["md_replica"], r["model"]) > 0.9, r
    assert r["misplaced"] < r["model"] - 0.3, r
    assert r["anm"] < r["model"] - 0.3, r


def test_tica_correlation_finds_where_the_slow_hinge_is(scored):
    corr = {label: s["tica_corr"] for label, s in scored.items()}
    assert min(corr["md_replica"], corr["model"]) > 0.7, corr
    assert corr["misplaced"] < 0.3, corr


def test_pc1_cosine_ranks_same_process_above_misplaced_hinges_and_anm(scored):
    cos = {label: s["pc_cosine"] for label, s in scored.items()}
    assert min(cos["md_replica"], cos["model"]) > 0.8, cos
    assert cos["misplaced"] < 0.5 and cos["anm"] < 0.5, cos


def test_coverage_f1_is_the_harmonic_mean_of_recall_and_precision(scored):
    for label, s in scored.items():
        recall, precision = s["coverage_recall"], s["coverage_precision"]
        expected = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
        assert s["coverage_f1"] == pytest.approx(expected, abs=1e-12), label


def test_coverage_of_a_hand_built_case():
    """Reference in the 4 corner bins of its 10 x 10 grid; generated points in one of them and
    outside the grid: recall 1/4, precision 1/2 (the outside bin counts), F1 = 1/3."""
    reference = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0]])
    generated = np.array([[0.5, 0.5], [0.6, 0.4], [20.0, 20.0]])
    scores = paper.coverage(reference, generated)
    assert scores["coverage_recall"] == pytest.approx(0.25)
    assert scores["coverage_precision"] == pytest.approx(0.5)
    assert scores["coverage_f1"] == pytest.approx(1 / 3)
