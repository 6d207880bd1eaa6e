import numpy as np

from starmd.evaluate.trajectories import load_heavy_topology
from starmd.evaluate.validity import (
    CA_BREAK_CONFDIFF,
    check_validity,
    janin_allowed,
    judge,
    measure_frames,
    plan_validity,
    ramachandran_allowed,
    thresholds_from_md,
    validity_summary,
)

from .conftest import VILLIN_PDB


def _villin():
    topology, xyz = load_heavy_topology(VILLIN_PDB)
    return topology, xyz, plan_validity(topology)


def _residue_atoms(topology, residue):
    return np.array([a.index for a in topology.residue(residue).atoms])


def test_crystal_structure_is_valid():
    _, xyz, plan = _villin()
    checks = check_validity(xyz[None], plan)
    assert checks["valid"][0] and checks["valid_ca"][0] and checks["valid_aa"][0]


def test_ca_clash_detected_when_two_distant_ca_overlap():
    topology, xyz, plan = _villin()
    frame = xyz.copy()
    ca = topology.select("name CA")
    # move residue 20 rigidly so that its CA sits 2 A from residue 5's CA
    shift = xyz[ca[5]] + np.array([2.0, 0.0, 0.0]) - xyz[ca[20]]
    frame[_residue_atoms(topology, 20)] += shift
    checks = check_validity(frame[None], plan)
    assert checks["ca_clash"][0] and checks["aa_clash"][0]
    assert not checks["valid_ca"][0] and not checks["valid"][0]


def test_chain_break_detected_when_a_terminal_segment_is_pulled_away():
    topology, xyz, plan = _villin()
    frame = xyz.copy()
    ca = topology.select("name CA")
    tail = np.concatenate([_residue_atoms(topology, r) for r in range(30, 35)])
    bond = xyz[ca[30]] - xyz[ca[29]]
    frame[tail] += 3.0 * bond / np.linalg.norm(bond)
    checks = check_validity(frame[None], plan)
    assert checks["ca_break"][0] and checks["aa_break"][0]
    assert not checks["valid_ca"][0]
    gap = np.linalg.norm(frame[ca[30]] - frame[ca[29]])
    assert gap > 4.5  # the check's threshold, computed independently


def test_heavy_atom_clash_without_ca_clash():
    topology, xyz, plan = _villin()
    frame = xyz.copy()
    # put a side-chain carbon of residue 22 (TRP) 1.5 A from a backbone O of residue 10
    trp_ring = [a.index for a in topology.residue(22).atoms if a.name == "CZ2"][0]
    o10 = [a.index for a in topology.residue(10).atoms if a.name == "O"][0]
    frame[trp_ring] = frame[o10] + np.array([1.5, 0.0, 0.0])
    checks = check_validity(frame[None], plan)
    assert checks["aa_clash"][0] and not checks["ca_clash"][0]
    assert checks["valid_ca"][0] and not checks["valid_aa"][0]


def test_nan_frames_are_invalid_but_do_not_crash():
    _, xyz, plan = _villin()
    frames = np.stack([xyz, np.full_like(xyz, np.nan), xyz])
    checks = check_validity(frames, plan)
    assert checks["finite"].tolist() == [True, False, True]
    assert checks["valid"].tolist() == [True, False, True]
    assert np.isclose(validity_summary(checks)["validity_pct"], 200 / 3)


def test_reference_contours_allow_helix_and_sheet_and_reject_forbidden_regions():
    phi = np.radians([-63.0, -120.0, 0.0, 150.0, 120.0])
    psi = np.radians([-43.0, 130.0, 0.0, 60.0, -60.0])
    assert ramachandran_allowed(phi, psi).tolist() == [True, True, False, False, False]
    # chi1/chi2 of a common rotamer (mt: -65, 180) vs an eclipsed one (0, 0)
    assert janin_allowed(np.radians([-65.0, 0.0]), np.radians([180.0, 0.0])).tolist() == [
        True,
        False,
    ]


def _stretch_ca_bond(topology, xyz, gap):
    """Villin with residues 30-34 moved along the CA(29)-CA(30) bond so that it is ``gap`` A."""
    frame = xyz.copy()
    ca = topology.select("name CA")
    tail = np.concatenate([_residue_atoms(topology, r) for r in range(30, 35)])
    bond = xyz[ca[30]] - xyz[ca[29]]
    length = np.linalg.norm(bond)
    frame[tail] += (gap - length) * bond / length
    return frame


def test_ca_break_at_4_3_angstrom_fails_confdiff_threshold_but_not_headline():
    topology, xyz, plan = _villin()
    measures = measure_frames(_stretch_ca_bond(topology, xyz, 4.3)[None], plan)
    assert np.isclose(measures["ca_max_consecutive_a"][0], 4.3)
    assert judge(measures)["valid_ca"][0]  # headline: break above 4.5 A
    assert not judge(measures, CA_BREAK_CONFDIFF)["valid_ca"][0]  # ConfDiff/MDGen: 4.19 A


def test_measures_match_a_hand_computation_on_the_crystal_structure():
    topology, xyz, plan = _villin()
    measures = measure_frames(xyz[None], plan)
    ca = xyz[topology.select("name CA")]
    consecutive = np.linalg.norm(ca[1:] - ca[:-1], axis=1).max()  # villin: one chain, no gaps
    d = np.linalg.norm(ca[:, None] - ca[None], axis=2)
    apart = np.abs(np.arange(len(ca))[:, None] - np.arange(len(ca))[None]) >= 2
    assert np.isclose(measures["ca_max_consecutive_a"][0], consecutive)
    assert np.isclose(measures["ca_min_nonbonded_a"][0], d[apart].min())
    c = xyz[[a.index for a in topology.atoms if a.name == "C"]]
    n = xyz[[a.index for a in topology.atoms if a.name == "N"]]
    assert np.isclose(measures["peptide_max_a"][0], np.linalg.norm(c[:-1] - n[1:], axis=1).max())


def test_thresholds_from_md_sit_at_the_99th_percentile_of_each_measure():
    steps = np.arange(101) / 100.0  # 0.00 ... 1.00: 99th percentile 0.99, 1st 0.01
    measures = {
        "finite": np.ones(101, dtype=bool),
        "ca_min_nonbonded_a": 4.0 + steps,
        "ca_max_consecutive_a": 3.5 + steps,
        "clash_max_overlap_a": steps,
        "peptide_max_a": 1.0 + steps,
        "rama_outlier_fraction": 0.1 * steps,
        "rotamer_outlier_fraction": 0.2 * steps,
    }
    t = thresholds_from_md(measures)
    assert np.allclose(
        [t.ca_clash_a, t.ca_break_a, t.clash_overlap_a, t.peptide_break_a],
        [4.01, 4.49, 0.99, 1.99],
    )
    assert np.isclose(t.rama_outlier_max, 0.099) and np.isclose(t.rotamer_outlier_max, 0.198)
    flags = judge(measures, t)
    for check in ("ca_clash", "ca_break", "aa_clash", "aa_break"):
        assert flags[check].sum() == 1  # the single most extreme MD frame


def test_compiled_close_contacts_equal_the_tree_search_bit_for_bit():
    """The cell-grid kernel finds the same pairs as scipy's k-d tree and computes the same
    values: on the crystal frame, jittered, compressed (many clashes), spread out (coarser
    cells), with a non-finite frame, and with the chain split in two."""
    import dataclasses

    from starmd.evaluate.validity import _close_contacts, _frame_close_contacts

    _, xyz, plan = _villin()
    rng = np.random.default_rng(5)
    centre = xyz.mean(0)
    frames = np.stack(
        [
            xyz,
            xyz + rng.normal(scale=0.6, size=xyz.shape),
            centre + 0.75 * (xyz - centre),
            centre + 0.55 * (xyz - centre) + rng.normal(scale=0.3, size=xyz.shape),
            centre + 4.0 * (xyz - centre),
            np.full_like(xyz, np.nan),
        ]
    )
    finite = np.isfinite(frames).all(axis=(1, 2))
    split = dataclasses.replace(
        plan, residue_chain=(np.arange(len(plan.residue_chain)) >= 17).astype(np.int64)
    )
    zeroed = np.where(finite[:, None, None], frames, 0.0)
    for p in (plan, split):
        closest, overlap = _close_contacts(zeroed, finite, p)
        expected = [
            _frame_close_contacts(f, p) if ok else (0.0, 0.0)
            for f, ok in zip(zeroed, finite, strict=True)
        ]
        assert closest.tolist() == [e[0] for e in expected]
        assert overlap.tolist() == [e[1] for e in expected]
        if p is plan:  # the frames exercise both measures
            assert overlap[2] > 0.4 and overlap[0] < 0.4 and closest[3] < closest[0] < 8.0
    # the split's junction residues count as apart: their bonded atoms overlap
    assert overlap[0] > 1.0
