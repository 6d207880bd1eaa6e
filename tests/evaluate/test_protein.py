import numpy as np
import pytest

from starmd.evaluate import ensemble, protein
from starmd.evaluate.protein import ProteinJob, evaluate_protein
from starmd.evaluate.report import aggregate
from starmd.evaluate.trajectories import discover_proteins, load_ensemble, load_heavy_topology

from .conftest import make_generated, make_reference

# Every metric computed on the --ensemble-frames subset drawn with --seed.
SUBSAMPLED = (
    ("md_reference", "pairwise_rmsd"),
    ("model", "pairwise_rmsd"),
    ("model", "pairwise_rmsd_md"),
    ("model", "pca_w2_md"),
    ("model", "pca_w2_joint"),
)


@pytest.fixture(scope="module")
def villin_files(tmp_path_factory):
    reference = make_reference(tmp_path_factory.mktemp("ref"), n_replicas=2, n_frames=80)
    generated = make_generated(tmp_path_factory.mktemp("gen"), n_frames=60)
    return (
        discover_proteins(reference, "reference")["villin"],
        discover_proteins(generated, "generated")["villin"],
    )


def _scores(villin_files, out_dir, frames: int, seed: int) -> dict:
    reference, generated = villin_files
    job = ProteinJob(
        "villin",
        reference,
        methods={"model": generated},
        baselines=(),
        out_dir=out_dir / "proteins" / "villin",
        ensemble_frames=frames,
        seed=seed,
        plots=False,
    )
    return evaluate_protein(job)["methods"]


def test_ensemble_frames_and_seed_reach_every_subsampled_metric(
    villin_files, tmp_path, monkeypatch
):
    sasa_inputs = []  # the exposure metrics are NaN on this synthetic MD: watch SASA's input

    def recording_sasa(frames, topology):
        sasa_inputs.append(frames.copy())
        return np.zeros((len(frames), topology.n_residues))

    monkeypatch.setattr(ensemble, "sidechain_sasa", recording_sasa)
    base = _scores(villin_files, tmp_path / "a", frames=40, seed=0)
    fewer = _scores(villin_files, tmp_path / "b", frames=25, seed=0)
    reseeded = _scores(villin_files, tmp_path / "c", frames=40, seed=1)
    # per run: the initial structure, the reference subset, the model's subset
    assert [len(f) for f in sasa_inputs] == [1, 40, 40, 1, 25, 25, 1, 40, 40]
    assert not np.array_equal(sasa_inputs[1], sasa_inputs[7])
    assert not np.array_equal(sasa_inputs[2], sasa_inputs[8])
    for method, key in SUBSAMPLED:
        value = base[method][key]
        assert value is not None and np.isfinite(value), (method, key)
        assert fewer[method][key] != value, f"--ensemble-frames ignored by {method}/{key}"
        assert reseeded[method][key] != value, f"--seed ignored by {method}/{key}"


def test_report_states_the_subset_size_and_seed_used(villin_files, tmp_path):
    _scores(villin_files, tmp_path, frames=25, seed=7)
    table = aggregate(tmp_path)
    assert table.settings["ensemble_frames"] == 25 and table.settings["seed"] == 7
    text = table.to_markdown()
    assert "25-frame" in text and "seed 7" in text
    assert "250-frame" not in text and "seed 0" not in text


def test_md_derived_validity_limits_come_from_the_replicas_other_than_the_oracle(
    villin_files, tmp_path
):
    reference, _ = villin_files
    job = ProteinJob("villin", reference, baselines=("replica",), out_dir=tmp_path, plots=False)
    scores = evaluate_protein(job)["methods"]
    ensemble_md = load_ensemble(reference, "reference")
    topology, initial = load_heavy_topology(reference.pdb)
    ca = topology.select("name CA")
    replica1 = ensemble_md.replicas[0][:, ca]
    longest = np.linalg.norm(replica1[:, 1:] - replica1[:, :-1], axis=2).max(axis=1)
    limit = scores["md_reference"]["md99_ca_break_a"]
    assert np.isclose(limit, np.percentile(longest, 99.0), atol=1e-4)
    assert scores["md_reference"]["validity_ca_pct_md99"] >= 97.0  # replica 1 set the limits
    for key in ("validity_pct", "validity_pct_ca419", "validity_pct_md99"):
        assert 0.0 <= scores["md_replica"][key] <= 100.0


def test_local_geometry_rows_show_the_reference_md_own_value_beside_each_method(
    villin_files, tmp_path
):
    _scores(villin_files, tmp_path, frames=25, seed=0)
    table = aggregate(tmp_path)
    for key in ("geo_c_n_mean", "geo_ca_ca_sd", "geo_clash_frames_pct", "bioemu_valid_pct"):
        assert np.isfinite(table.values[key]["md_reference"]), key
        assert np.isfinite(table.values[key]["model"]), key
    # the synthetic MD deforms villin by a few percent: its peptide bonds stay near 1.33 A
    assert 1.25 < table.values["geo_c_n_mean"]["md_reference"] < 1.42
    assert "| C(i)-N(i+1) mean (A) |" in table.to_markdown()


def test_local_geometry_of_a_long_trajectory_uses_evenly_spaced_frames(
    villin_files, tmp_path, monkeypatch
):
    measured = []
    original = protein.measure_geometry

    def recording(frames, plan):
        measured.append(len(frames))
        return original(frames, plan)

    monkeypatch.setattr(protein, "GEOMETRY_FRAMES", 7)
    monkeypatch.setattr(protein, "measure_geometry", recording)
    _scores(villin_files, tmp_path, frames=25, seed=0)
    assert measured == [7, 7]  # md_reference (replica 1: 80 frames), model (60 frames)
