import json

import numpy as np
import pytest

from starmd.evaluate.local_geometry import (
    geometry_summary,
    measure_geometry,
    plan_geometry,
    refinement_rows,
)
from starmd.evaluate.trajectories import load_heavy_topology
from starmd.evaluate.validity import check_validity, plan_validity

from .conftest import VILLIN_PDB


@pytest.fixture(scope="module")
def villin():
    topology, xyz = load_heavy_topology(VILLIN_PDB)
    validity = plan_validity(topology)
    return topology, xyz, validity, plan_geometry(topology, validity)


def _atom(topology, residue, name):
    return next(a.index for a in topology.residue(residue).atoms if a.name == name)


def _stretch_peptide_bond(topology, xyz, residue, extra):
    """Residues after ``residue`` moved rigidly along its C -> N(next) bond by ``extra`` A."""
    frame = xyz.copy()
    c, n = _atom(topology, residue, "C"), _atom(topology, residue + 1, "N")
    bond = (xyz[n] - xyz[c]) / np.linalg.norm(xyz[n] - xyz[c])
    after = [a.index for a in topology.atoms if a.residue.index > residue]
    frame[after] += extra * bond
    return frame


def _peptide_bonds(topology, frame):
    """C(i)-N(i+1) lengths by hand (villin: one chain, consecutive residues)."""
    r = topology.n_residues
    c = frame[[_atom(topology, i, "C") for i in range(r - 1)]]
    n = frame[[_atom(topology, i + 1, "N") for i in range(r - 1)]]
    return np.linalg.norm(c - n, axis=1)


def test_rows_match_a_hand_computation_on_a_stretched_peptide_bond(villin):
    topology, xyz, validity, plan = villin
    frame = _stretch_peptide_bond(topology, xyz, residue=15, extra=0.5)
    bonds = _peptide_bonds(topology, frame)
    assert np.isclose(bonds[15], _peptide_bonds(topology, xyz)[15] + 0.5)
    measures = measure_geometry(frame[None], plan)
    rows = geometry_summary(measures, np.zeros(1))
    assert np.isclose(rows["geo_c_n_mean"], bonds.mean())
    assert np.isclose(rows["geo_c_n_sd"], bonds.std())
    assert np.isclose(rows["geo_c_n_long_pct"], 100.0 / len(bonds))  # one bond above 1.5 A
    assert np.isclose(rows["geo_c_n_outside_pct"], 100.0 / len(bonds))
    squeezed = measure_geometry(_stretch_peptide_bond(topology, xyz, 15, -0.2)[None], plan)
    squeezed_rows = geometry_summary(squeezed, np.zeros(1))
    assert squeezed_rows["geo_c_n_long_pct"] == 0.0  # 1.13 A: short, not long
    assert np.isclose(squeezed_rows["geo_c_n_outside_pct"], 100.0 / len(bonds))
    assert rows["bioemu_valid_pct"] == 100.0  # 1.83 A is still below BioEmu's 2.0 A
    broken = measure_geometry(_stretch_peptide_bond(topology, xyz, 15, 1.0)[None], plan)
    assert geometry_summary(broken, np.zeros(1))["bioemu_valid_pct"] == 0.0


def test_bond_angles_and_omega_match_mdtraj_conventions(villin):
    topology, xyz, _, plan = villin
    measures = measure_geometry(xyz[None], plan)
    ca0, c0 = xyz[_atom(topology, 3, "CA")], xyz[_atom(topology, 3, "C")]
    n1, ca1 = xyz[_atom(topology, 4, "N")], xyz[_atom(topology, 4, "CA")]
    u, v = ca0 - c0, n1 - c0
    angle = np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
    assert np.isclose(measures["ca_c_n"][3], angle)
    assert np.isclose(measures["ca_ca"][3], np.linalg.norm(ca1 - ca0))
    assert np.all(np.abs(measures["omega"]) > 150.0)  # a crystal structure: all trans


def test_clash_frames_agree_with_the_validity_check(villin):
    topology, xyz, validity, plan = villin
    clashing = xyz.copy()
    clashing[_atom(topology, 22, "CZ2")] = xyz[_atom(topology, 10, "O")] + [1.5, 0.0, 0.0]
    frames = np.stack([xyz, clashing])
    measures = measure_geometry(frames, plan)
    checks = check_validity(frames, validity)
    assert measures["clash_pairs"][0] == 0 and measures["clash_pairs"][1] >= 1
    assert ((measures["clash_pairs"] > 0) == checks["aa_clash"]).all()
    rows = geometry_summary(measures, checks["rama_outlier_fraction"])
    assert rows["geo_clash_frames_pct"] == 50.0


def test_refinement_rows_pool_the_sidecar_replicas_by_frames(tmp_path):
    def checks(ca, geometry, clash, outside):
        return {
            "ca_valid_pct": ca,
            "ca_valid_no_clash_no_break_pct": geometry,
            "aa_clash_pct": clash,
            "aa_break_pct": 0.0,
            "peptide_outside_pct": outside,
        }

    sidecar = tmp_path / "p.json"
    replicas = [
        {"frames": 30, "raw": checks(50, 0, 100, 60), "refined": checks(100, 20, 80, 3)},
        {"frames": 10, "raw": checks(90, 10, 90, 40), "refined": checks(100, 60, 40, 1)},
    ]
    sidecar.write_text(json.dumps({"refinement": {"ms_per_frame": 12.5, "replicas": replicas}}))
    rows = refinement_rows(sidecar)
    assert rows["gen_raw_ca_valid_pct"] == pytest.approx((30 * 50 + 10 * 90) / 40)
    assert rows["gen_refined_geometry_valid_pct"] == pytest.approx((30 * 20 + 10 * 60) / 40)
    assert rows["gen_raw_clash_frames_pct"] == pytest.approx(97.5)
    assert rows["gen_refined_peptide_outside_pct"] == pytest.approx(2.5)
    assert rows["gen_refine_ms_per_frame"] == 12.5
    # written before the Ramachandran count existed: not a number, not an error
    assert np.isnan(rows["gen_raw_rama_outlier_pct"])
    for replica, rama in zip(replicas, (30.0, 10.0), strict=True):
        replica["raw"]["rama_outlier_pct"] = rama
        replica["refined"]["rama_outlier_pct"] = rama / 10
    sidecar.write_text(json.dumps({"refinement": {"ms_per_frame": 12.5, "replicas": replicas}}))
    rows = refinement_rows(sidecar)
    assert rows["gen_raw_rama_outlier_pct"] == pytest.approx(25.0)
    assert rows["gen_refined_rama_outlier_pct"] == pytest.approx(2.5)
    # no polish recorded (written before it existed, or --no-polish): not a number
    assert np.isnan(rows["gen_written_clash_frames_pct"])
    assert np.isnan(rows["gen_polish_ms_per_frame"])
    replicas[0]["written"] = checks(100, 100, 0, 0)
    replicas[1]["written"] = checks(100, 90, 10, 0)
    record = {"ms_per_frame": 12.5, "polish_ms_per_frame": 30.0, "replicas": replicas}
    sidecar.write_text(json.dumps({"refinement": record}))
    rows = refinement_rows(sidecar)
    assert rows["gen_written_clash_frames_pct"] == pytest.approx(2.5)
    assert rows["gen_written_geometry_valid_pct"] == pytest.approx(97.5)
    assert rows["gen_polish_ms_per_frame"] == 30.0
    sidecar.write_text(json.dumps({"refinement": None}))  # generated with --no-refine
    assert refinement_rows(sidecar) == {} and refinement_rows(None) == {}
