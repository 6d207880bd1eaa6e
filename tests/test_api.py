"""The Python API: starmd.load_model / generate / evaluate, lazily imported from the top level."""

import json
import subprocess
import sys

import mdtraj
import numpy as np
import pytest

import starmd
from starmd.errors import StarmdCheckpointError, StarmdInputError
from tests.evaluate.conftest import VILLIN_PDB, make_reference


def test_import_starmd_loads_no_heavy_library():
    code = (
        "import sys, starmd; "
        "heavy = [m for m in ('torch', 'mdtraj', 'openmm', 'starmd.api') if m in sys.modules]; "
        "print(heavy, sorted(n for n in dir(starmd) if not n.startswith('_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("[] ['GenerationResult', 'evaluate', 'generate', 'load_model']")


def test_unknown_top_level_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'simulate_everything'"):
        starmd.simulate_everything  # noqa: B018


@pytest.fixture(scope="module")
def generated(tiny_model_path):
    model = starmd.load_model(tiny_model_path)
    return starmd.generate(
        VILLIN_PDB, frames=6, dt="50ps", replicas=2, steps=2, seed=3, model=model, device="cpu"
    )


def test_generate_returns_one_superposable_trajectory_per_replica(generated):
    assert len(generated.trajectories) == 2 and generated.out_dir is None
    structure = mdtraj.load(str(VILLIN_PDB))
    for traj in generated.trajectories:
        assert traj.n_frames == 6
        np.testing.assert_allclose(traj.time, np.arange(6) * 50.0)
        ca = traj.topology.select("name CA")
        ca_input = structure.topology.select("name CA")
        assert len(ca) == len(ca_input)
        rmsd = mdtraj.rmsd(traj.atom_slice(ca), structure.atom_slice(ca_input))  # nm
        assert rmsd[0] < 0.01  # frame 0 is the input
        assert np.isfinite(rmsd).all() and rmsd[1:].min() > 0  # the untrained test model drifts
    assert generated.sidecar["settings"]["replicas"] == 2
    assert generated.sidecar["input"]["sha256"]


def test_same_model_by_path_or_loaded_gives_the_same_trajectory(generated, tiny_model_path):
    again = starmd.generate(
        VILLIN_PDB, frames=6, dt=50.0, replicas=2, steps=2, seed=3, model=tiny_model_path,
        device="cpu",
    )  # fmt: skip
    for replica in range(2):
        np.testing.assert_array_equal(
            again.trajectories[replica].xyz, generated.trajectories[replica].xyz
        )


def test_save_writes_what_evaluate_reads(generated, tmp_path):
    out = generated.save(tmp_path / "gen")
    assert sorted(p.name for p in out.iterdir()) == [
        "villin.json", "villin.pdb", "villin_R1.xtc", "villin_R2.xtc",
    ]  # fmt: skip
    reread = mdtraj.load(str(out / "villin_R2.xtc"), top=str(out / "villin.pdb"))
    np.testing.assert_allclose(reread.xyz, generated.trajectories[1].xyz, atol=1e-3)
    assert json.loads((out / "villin.json").read_text()) == generated.sidecar
    reference = make_reference(tmp_path / "md", n_replicas=2, n_frames=60)
    table = starmd.evaluate(
        out, reference, tmp_path / "report", baselines=("static",), plots=False,
        ensemble_frames=20, progress=False,
    )  # fmt: skip
    assert table.methods == ["md_reference", "model", "static"]
    rows = {row["key"]: row for row in table.to_records()}
    assert rows["rmsf_median"]["static"] == 0.0
    assert np.isfinite(rows["rmsf_median"]["model"])


def test_out_dir_keeps_the_files_and_errors_are_the_clis(tiny_model_path, tmp_path):
    kept = starmd.generate(
        VILLIN_PDB, frames=3, dt="50ps", steps=1, model=tiny_model_path, out_dir=tmp_path,
        device="cpu",
    )  # fmt: skip
    assert kept.out_dir == tmp_path and (tmp_path / "villin_R1.xtc").is_file()
    with pytest.raises(StarmdInputError, match="exists; pass --overwrite"):
        starmd.generate(VILLIN_PDB, frames=3, model=tiny_model_path, out_dir=tmp_path)
    with pytest.raises(StarmdInputError, match="expected a number with a unit"):
        starmd.generate(VILLIN_PDB, frames=3, dt="5 parsecs", model=tiny_model_path)
    with pytest.raises(StarmdCheckpointError, match="model file not found"):
        starmd.load_model("no-such-model.safetensors")


def test_every_generation_setting_is_forwarded_and_unknown_ones_are_refused(tiny_model_path):
    result = starmd.generate(
        VILLIN_PDB, frames=3, dt="50ps", steps=1, model=tiny_model_path, device="cpu",
        refine=True, schedule_rho=2.0, stop_on_failure=True,
    )  # fmt: skip
    recorded = result.sidecar["settings"]
    assert (recorded["refine"], recorded["schedule_rho"], recorded["stop_on_failure"]) == (
        True, 2.0, True,
    )  # fmt: skip
    with pytest.raises(StarmdInputError, match="unknown setting.*refien.*known: dt, chains"):
        starmd.generate(VILLIN_PDB, frames=3, model=tiny_model_path, refien=True)
    with pytest.raises(StarmdInputError, match="unknown setting.*dt_ps"):
        starmd.generate(VILLIN_PDB, frames=3, model=tiny_model_path, dt_ps=50.0)
