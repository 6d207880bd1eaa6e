import shutil

import mdtraj as md
import numpy as np
import pytest

from starmd.errors import StarmdInputError
from starmd.evaluate.trajectories import discover_proteins, load_ensemble, match_atoms

from .conftest import MD_DT_PS, MODEL_DT_PS, VILLIN_PDB, make_generated


def test_reference_in_per_protein_subfolders_is_found_with_xtc_time_step(reference_dir):
    found = discover_proteins(reference_dir, "reference")
    assert list(found) == ["villin"]
    ensemble = load_ensemble(found["villin"], "reference")
    assert len(ensemble.replicas) == 3 and ensemble.dt_ps == MD_DT_PS
    assert ensemble.replicas[0].shape[1:] == (289, 3)


def test_generated_at_top_level_takes_time_step_from_sidecar(generated_dir):
    ensemble = load_ensemble(discover_proteins(generated_dir)["villin"])
    assert ensemble.dt_ps == MODEL_DT_PS


def test_generated_input_frame_at_time_zero_is_not_scored(tmp_path, villin):
    """``starmd generate`` writes its input as frame 0 (t = 0): not model output, left out."""
    from .conftest import synthetic_frames, write_trajectory

    frames = synthetic_frames(villin, 6, seed=3)
    villin.save_pdb(str(tmp_path / "villin.pdb"))
    write_trajectory(frames, villin.topology, tmp_path / "villin_R1.xtc", MODEL_DT_PS)
    ensemble = load_ensemble(discover_proteins(tmp_path)["villin"])
    assert ensemble.dt_ps == MODEL_DT_PS and len(ensemble.replicas[0]) == 5
    np.testing.assert_allclose(ensemble.replicas[0][0], frames[1] * 10.0, atol=1e-2)
    # stamps from dt on (as the reference MD's): every frame is kept
    traj = md.Trajectory(frames, villin.topology)
    traj.time = (np.arange(6) + 1) * MODEL_DT_PS
    traj.save_xtc(str(tmp_path / "villin_R1.xtc"))
    assert len(load_ensemble(discover_proteins(tmp_path)["villin"]).replicas[0]) == 6
    # the reference MD keeps a frame at t = 0
    (tmp_path / "ref" / "villin").mkdir(parents=True)
    villin.save_pdb(str(tmp_path / "ref" / "villin" / "villin.pdb"))
    write_trajectory(
        frames, villin.topology, tmp_path / "ref" / "villin" / "villin_prod_R1_fit.xtc", 10.0
    )
    reference = load_ensemble(
        discover_proteins(tmp_path / "ref", "reference")["villin"], "reference"
    )
    assert len(reference.replicas[0]) == 6


def test_backbone_only_topology_matches_on_common_atoms(tmp_path):
    folder = make_generated(tmp_path / "bb", n_frames=5, backbone_only=True)
    generated = load_ensemble(discover_proteins(folder)["villin"])
    reference = md.load_pdb(str(VILLIN_PDB)).topology
    own, ref = match_atoms(generated.topology, reference)
    assert len(own) == generated.topology.n_atoms == 4 * 35  # N, CA, C, O per residue
    names = [(reference.atom(j).residue.resSeq, reference.atom(j).name) for j in ref]
    own_names = [
        (generated.topology.atom(i).residue.resSeq, generated.topology.atom(i).name) for i in own
    ]
    assert names == own_names


@pytest.mark.filterwarnings("ignore:atom_indices are not monotonically increasing")
def test_atoms_are_matched_by_name_not_by_index():
    reference = md.load_pdb(str(VILLIN_PDB))
    order = np.arange(reference.n_atoms)[::-1]  # same atoms, reversed order
    shuffled = reference.atom_slice(order)
    own, ref = match_atoms(shuffled.topology, reference.topology)
    assert np.allclose(shuffled.xyz[0, own], reference.xyz[0, ref])


def test_different_sequence_is_a_clear_error():
    reference = md.load_pdb(str(VILLIN_PDB)).topology
    mutant = md.load_pdb(str(VILLIN_PDB))
    keep = [
        a.index for a in mutant.topology.atoms if a.residue.index != 0 or a.name in "N CA C O CB"
    ]
    mutant = mutant.atom_slice(keep).topology
    mutant.residue(0).name = "ALA"  # L1A
    with pytest.raises(StarmdInputError, match="residue 1: ALA vs LEU"):
        match_atoms(mutant, reference, "mutant.pdb")


def test_residue_missing_from_reference_is_a_clear_error():
    reference = md.load_pdb(str(VILLIN_PDB))
    shorter = reference.atom_slice(reference.topology.select("resid 1 to 34")).topology
    with pytest.raises(StarmdInputError, match="is not in the reference"):
        match_atoms(reference.topology, shorter, "villin.pdb")


def test_missing_folder_and_missing_trajectories_are_clear_errors(tmp_path):
    with pytest.raises(StarmdInputError, match="does not exist"):
        discover_proteins(tmp_path / "nope", "reference")
    shutil.copy(VILLIN_PDB, tmp_path / "villin.pdb")
    with pytest.raises(StarmdInputError, match="no reference trajectories found"):
        discover_proteins(tmp_path, "reference")
