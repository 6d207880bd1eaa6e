"""Restrained relaxation of trajectory frames (``starmd relax``, ``generate --relax``).

Trp-cage (20 residues, heavy atoms) is the tiny protein: its own structure is a valid frame; a
frame with one peptide bond stretched to about 2 A and a frame with two side chains pushed into
each other are the broken ones.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from starmd.errors import StarmdInputError, StarmdSimulationError
from starmd.simulate import relax
from starmd.simulate.relax import RelaxSettings, relax_trajectory
from tests.test_cli import assert_one_line_error, run_cli

STRETCH_A = 0.6
SETTINGS = RelaxSettings(threads=1)


def _stretched(frame: md.Trajectory, residue: int) -> np.ndarray:
    """``(n_atoms, 3)`` nm: residues >= ``residue`` shifted so that the peptide bond into it is
    :data:`STRETCH_A` longer."""
    top = frame.topology
    c = top.select(f"resid {residue - 1} and name C")[0]
    n = top.select(f"resid {residue} and name N")[0]
    xyz = frame.xyz[0].copy()
    direction = (xyz[n] - xyz[c]) / np.linalg.norm(xyz[n] - xyz[c])
    xyz[top.select(f"resid {residue} to {top.n_residues - 1}")] += 0.1 * STRETCH_A * direction
    return xyz


def _clashed(frame: md.Trajectory) -> np.ndarray:
    """``(n_atoms, 3)`` nm: the last side-chain atom of the residue nearest to residue 2's
    (at least 3 apart in sequence) moved to 2.0 A from it, a clash by the evaluation's rule."""
    top, xyz = frame.topology, frame.xyz[0].copy()
    sidechain = top.select("sidechain and not name CB")
    anchor = [a for a in sidechain if top.atom(a).residue.index == 1][-1]
    far = [a for a in sidechain if abs(top.atom(a).residue.index - 1) >= 3]
    target = min(far, key=lambda a: np.linalg.norm(xyz[a] - xyz[anchor]))
    direction = (xyz[target] - xyz[anchor]) / np.linalg.norm(xyz[target] - xyz[anchor])
    xyz[target] = xyz[anchor] + 0.20 * direction
    return xyz


@pytest.fixture(scope="module")
def trpcage_frames(trpcage_pdb: Path) -> md.Trajectory:
    """Three frames of Trp-cage: the structure, a stretched peptide bond, a clash."""
    frame = md.load(str(trpcage_pdb))
    xyz = np.stack([frame.xyz[0], _stretched(frame, 10), _clashed(frame)])
    return md.Trajectory(xyz, frame.topology, time=np.array([0.0, 10.0, 20.0]))


@pytest.fixture(scope="module")
def relaxer(trpcage_pdb: Path) -> relax.FrameRelaxer:
    return relax.FrameRelaxer(trpcage_pdb, SETTINGS)


def test_local_frames_place_an_atom_where_the_template_has_it_after_a_rigid_motion():
    rng = np.random.default_rng(0)
    p, a, b, x = rng.normal(size=(4, 5, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))
    moved = [v @ rotation.T + np.array([1.0, -2.0, 0.5]) for v in (p, a, b, x)]
    local = relax._to_local(x, p, a, b)
    np.testing.assert_allclose(relax._from_local(local, *moved[:3]), moved[3], atol=1e-12)


def test_violations_find_the_stretched_bond_and_the_clash(trpcage_frames):
    plan = relax._plan_violations(trpcage_frames.topology)
    counts = []
    for xyz in trpcage_frames.xyz * 10.0:
        peptide, clash = relax._violations(xyz, plan)
        counts.append((len(peptide), len(clash)))
    assert counts[0] == (0, 0)
    assert counts[1][0] == 1
    assert counts[2][1] >= 1


def test_restraint_constant_is_alphafolds_in_openmm_units():
    assert RelaxSettings().stiffness_kj_mol_nm2 == pytest.approx(10 * 4.184 * 100)


def test_missing_openmm_is_a_one_line_error(monkeypatch):
    real_import = builtins.__import__

    def no_pdbfixer(name, *args, **kwargs):
        if name == "pdbfixer":
            raise ImportError("No module named 'pdbfixer'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pdbfixer)
    with pytest.raises(StarmdInputError) as err:
        relax.check_openmm()
    assert "\n" not in str(err.value) and "PDBFixer" in str(err.value)


def test_hydrogens_are_placed_for_every_atom_the_input_lacks(relaxer, trpcage_frames):
    full = relaxer.full_positions(trpcage_frames.xyz[0].astype(np.float64))
    assert relaxer.n_atoms > trpcage_frames.n_atoms  # hydrogens (and OXT) added
    assert np.isfinite(full).all()
    bonds = np.array([(b[0].index, b[1].index) for b in relaxer.topology.bonds()])
    lengths = np.linalg.norm(full[bonds[:, 0]] - full[bonds[:, 1]], axis=1)
    assert lengths.max() < 0.2  # nm: every placed atom sits at a bond length from its parent


def test_relax_moves_a_valid_frame_little(relaxer, trpcage_frames):
    result = relaxer.relax(trpcage_frames.xyz[0])
    assert result.error is None
    assert result.rmsd_a < 0.5
    assert result.violations_after == {"peptide": 0, "clash": 0}
    assert result.energy_after_kj_mol < result.energy_before_kj_mol


def test_relax_fixes_a_stretched_peptide_bond(relaxer, trpcage_frames):
    result = relaxer.relax(trpcage_frames.xyz[1])
    assert result.violations_before["peptide"] == 1
    assert result.violations_after == {"peptide": 0, "clash": 0}
    relaxed = result.xyz_nm[relaxer.input_index]
    top = trpcage_frames.topology
    c, n = top.select("resid 8 and name C")[0], top.select("resid 9 and name N")[0]
    assert 1.25 < 10 * np.linalg.norm(relaxed[c] - relaxed[n]) < 1.45


def test_relax_fixes_a_clash(relaxer, trpcage_frames):
    result = relaxer.relax(trpcage_frames.xyz[2])
    assert result.violations_before["clash"] >= 1
    assert result.violations_after == {"peptide": 0, "clash": 0}


def test_a_frame_that_cannot_be_minimized_is_reported(relaxer, trpcage_frames):
    collapsed = np.zeros_like(trpcage_frames.xyz[0])
    result = relaxer.relax(collapsed)
    assert result.error is not None and result.xyz_nm is None


def test_relaxed_trajectory_has_the_input_topology_and_frames(
    trpcage_pdb, trpcage_frames, tmp_path
):
    raw = tmp_path / "trp_R1.xtc"
    trpcage_frames.save_xtc(str(raw))
    out = tmp_path / "trp_R1.relaxed.xtc"
    sidecar = relax_trajectory(raw, trpcage_pdb, out, SETTINGS)
    relaxed = md.load(str(out), top=str(trpcage_pdb))
    assert relaxed.n_frames == 3 and relaxed.n_atoms == trpcage_frames.n_atoms
    np.testing.assert_allclose(relaxed.time, trpcage_frames.time)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record == json.loads(json.dumps(sidecar))
    assert record["summary"]["frames_with_peptide_violation_before"] == 1
    assert record["summary"]["frames_with_peptide_violation_after"] == 0
    assert len(record["per_frame"]) == 3 and record["seconds_per_frame"] > 0
    with pytest.raises(StarmdInputError, match="exists"):
        relax_trajectory(raw, trpcage_pdb, out, SETTINGS)


def test_hydrogens_are_kept_on_request(trpcage_pdb, trpcage_frames, tmp_path):
    raw = tmp_path / "trp.xtc"
    trpcage_frames[:1].save_xtc(str(raw))
    out = tmp_path / "trp_h.xtc"
    relax_trajectory(raw, trpcage_pdb, out, RelaxSettings(hydrogens=True))
    relaxed = md.load(str(out), top=str(out.with_suffix(".pdb")))
    assert relaxed.n_frames == 1
    assert relaxed.topology.select("element H").size > 0


def test_a_failed_frame_fails_the_run_and_nothing_is_written(trpcage_pdb, trpcage_frames, tmp_path):
    frames = trpcage_frames[:1]
    frames.xyz[0] = 0.0
    raw = tmp_path / "bad.xtc"
    frames.save_xtc(str(raw))
    out = tmp_path / "bad.relaxed.xtc"
    with pytest.raises(StarmdSimulationError) as err:
        relax_trajectory(raw, trpcage_pdb, out, SETTINGS)
    assert str(err.value).startswith(f"{raw}: 1 frame(s) failed to relax: frame 0")
    assert "\n" not in str(err.value)
    assert not any(tmp_path.glob("bad.relaxed*")) and not any(tmp_path.glob(".bad*"))


def test_non_protein_topology_is_a_one_line_error(trpcage_pdb, tmp_path):
    water = "HETATM    1  O   HOH B   1      30.000  30.000  30.000  1.00  0.00           O\n"
    top = tmp_path / "with_water.pdb"
    top.write_text(trpcage_pdb.read_text().replace("END", water + "END"))
    with pytest.raises(StarmdInputError) as err:
        relax.FrameRelaxer(top, SETTINGS)
    assert str(err.value).startswith(f"{top}: has non-protein residue HOH")


def test_cli_bad_input_is_one_line(capsys, tmp_path, trpcage_pdb):
    missing = tmp_path / "missing.xtc"
    code, _, err = run_cli(["relax", str(missing), "--top", str(trpcage_pdb)], capsys)
    assert_one_line_error(code, err, f"{missing}: file not found")
    code, _, err = run_cli(
        ["relax", str(missing), "--top", str(trpcage_pdb), "-o", str(tmp_path / "x.dcd")], capsys
    )
    assert_one_line_error(code, err, "written as XTC")


def test_cli_relax_end_to_end(capsys, tmp_path, trpcage_pdb, trpcage_frames):
    raw = tmp_path / "trp_R1.xtc"
    trpcage_frames[:2].save_xtc(str(raw))
    code, out, _ = run_cli(["relax", str(raw), "--top", str(trpcage_pdb)], capsys)
    assert code == 0 and "s per frame" in out
    relaxed = md.load(str(tmp_path / "trp_R1.relaxed.xtc"), top=str(trpcage_pdb))
    assert relaxed.n_frames == 2


def test_generate_relax_on_a_list_is_a_one_line_error(capsys, tmp_path, trpcage_pdb):
    folder = tmp_path / "structures"
    folder.mkdir()
    (folder / trpcage_pdb.name).write_bytes(trpcage_pdb.read_bytes())
    code, _, err = run_cli(
        ["generate", str(folder), "-o", str(tmp_path / "out"), "--relax"], capsys
    )
    assert_one_line_error(code, err, "--relax takes one structure")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_generate_relax_writes_the_relaxed_file_beside_the_raw(
    capsys, tmp_path, trpcage_pdb, tiny_model_path
):
    args = ["generate", str(trpcage_pdb), "-o", str(tmp_path), "--frames", "3"]
    args += ["--model", str(tiny_model_path), "--device", "cpu", "--relax"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    name = trpcage_pdb.stem
    raw = md.load(str(tmp_path / f"{name}_R1.xtc"), top=str(tmp_path / f"{name}.pdb"))
    relaxed = md.load(str(tmp_path / f"{name}_R1.relaxed.xtc"), top=str(tmp_path / f"{name}.pdb"))
    assert relaxed.n_frames == raw.n_frames == 3
    sidecar = json.loads((tmp_path / f"{name}.json").read_text())
    assert sidecar["files"]["relaxed"] == [f"{name}_R1.relaxed.xtc"]
