"""What an input structure loses on the way into starmd, and what the sidecar records of it."""

import hashlib

import pytest

from starmd.errors import StarmdInputError
from starmd.structure.io import load_structure
from starmd.structure.provenance import (
    alternate_locations,
    describe_input,
    input_record,
)
from tests.conftest import STRUCTURES


def _with_altloc(tmp_path):
    """1VII with its first residue's CB given two alternate locations, B listed first."""
    lines = (STRUCTURES / "1vii.pdb").read_text().splitlines(keepends=True)
    cb = next(i for i, ln in enumerate(lines) if ln.startswith("ATOM") and ln[12:16] == " CB ")
    first = lines[cb][:16] + "B" + lines[cb][17:]
    x = float(lines[cb][30:38]) + 1.0
    second = lines[cb][:16] + "A" + lines[cb][17:30] + f"{x:8.3f}" + lines[cb][38:]
    lines[cb : cb + 1] = [first, second]
    path = tmp_path / "alt.pdb"
    path.write_text("".join(lines))
    return path, float(lines[cb][30:38])


def test_the_first_alternate_location_is_kept_and_reported(tmp_path):
    path, kept_x = _with_altloc(tmp_path)
    assert alternate_locations(path) == [
        {"residue": "A:MET41", "locations": ["B", "A"], "kept": "B"}
    ]
    _, positions = load_structure(path)
    assert positions[0, 4, 0] == pytest.approx(kept_x, abs=1e-3)  # CB slot, Angstrom


def test_mmcif_alternate_locations_name_both_residue_types():
    found = alternate_locations(STRUCTURES / "3u7t.cif")
    assert found[0] == {"residue": "A:SER/PRO22", "locations": ["A", "B"], "kept": "A"}


def test_the_record_names_water_hydrogens_renames_and_other_chains():
    record = input_record(STRUCTURES / "1a8o.pdb")
    assert record["sha256"] == hashlib.sha256((STRUCTURES / "1a8o.pdb").read_bytes()).hexdigest()
    assert record["stripped"]["water"] == {"HOH": 88}
    assert record["stripped"]["mapped_residue_names"] == {"MSE->MET": 4}
    one_chain = input_record(STRUCTURES / "2beg.pdb", ["B"])
    assert one_chain["stripped"]["other_chains"] == ["A", "C", "D", "E"]
    assert one_chain["chains"] == ["B"]
    text = describe_input(one_chain["stripped"], [])
    assert "other chains left out: A, C, D, E" in text


def test_an_unknown_chain_lists_each_chain_once():
    # 1UBI's waters follow the protein as a second chain with the same id A
    with pytest.raises(StarmdInputError, match=r"chain\(s\) B not found \(has \['A'\]\)"):
        load_structure(STRUCTURES / "1ubi.pdb", ["B"])
