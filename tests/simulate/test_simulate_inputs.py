"""Bad inputs and options give one-line StarmdInputErrors naming the file or option."""

from __future__ import annotations

from pathlib import Path

import pytest

from starmd.errors import StarmdInputError
from starmd.simulate import simulate
from starmd.simulate.fixing import fix_structure

WATER_ONLY = """\
HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O
HETATM    2  O   HOH A   2       3.000   0.000   0.000  1.00  0.00           O
END
"""


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_non_protein_input_is_a_one_line_error(tmp_path):
    path = tmp_path / "water.pdb"
    path.write_text(WATER_ONLY)
    with pytest.raises(StarmdInputError) as err:
        simulate(path, tmp_path / "out", ns=0.01, platform="CPU", progress=False)
    assert _one_line(err) == f"{path}: no protein residues found (nothing to simulate)"


def test_unreadable_input_is_a_one_line_error(tmp_path):
    path = tmp_path / "garbage.pdb"
    path.write_text("this is not a structure\x00\x01\n" * 3)
    with pytest.raises(StarmdInputError) as err:
        fix_structure(path)
    assert _one_line(err).startswith(f"{path}: ")


def test_chain_with_a_gap_is_refused_not_bridged(trpcage_pdb, tmp_path):
    """OpenMM would bond residues 7 and 11 across the gap (C-N ~8 A) and minimise it shut."""
    lines = trpcage_pdb.read_text().splitlines()
    kept = [
        line
        for line in lines
        if not (line.startswith(("ATOM", "HETATM")) and 8 <= int(line[22:26]) <= 10)
    ]
    path = tmp_path / "gapped.pdb"
    path.write_text("\n".join(kept) + "\n")
    with pytest.raises(StarmdInputError) as err:
        simulate(path, tmp_path / "out", ns=0.01, platform="CPU", progress=False)
    message = _one_line(err)
    assert message.startswith(f"{path}: chain A has a gap between ") and "C-N " in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.xtc"))


def test_missing_input_file(tmp_path):
    with pytest.raises(StarmdInputError, match="no such file"):
        simulate(tmp_path / "nope.pdb", tmp_path / "out", ns=0.01, platform="CPU")


def test_heterogens_and_water_are_removed(trpcage_pdb, tmp_path):
    text = trpcage_pdb.read_text().replace("END", "") + WATER_ONLY.replace(" A ", " B ")
    path = tmp_path / "with_water.pdb"
    path.write_text(text)
    topology, _ = fix_structure(path)
    names = {r.name for r in topology.residues()}
    assert "HOH" not in names and topology.getNumResidues() == 20
    assert any(a.element.symbol == "H" for a in topology.atoms())
    kept, _ = fix_structure(path, keep=("HOH",))
    assert [r.name for r in kept.residues()].count("HOH") == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ns": -1.0}, "--ns -1.0: must be positive"),
        ({"ns": 0.01, "save_every_ps": 1.001}, "not a multiple of the 4.0 fs time step"),
        ({"ns": 0.01, "protocol": "vacuum"}, "--protocol vacuum: unknown protocol"),
        ({"ns": 0.01, "replicas": 0}, "--replicas 0: need at least 1"),
    ],
)
def test_bad_options_are_rejected_before_any_work(trpcage_pdb, tmp_path, options, message):
    with pytest.raises(StarmdInputError, match=message):
        simulate(trpcage_pdb, tmp_path / "out", platform="CPU", progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_folder_with_another_protocol_is_refused(prepared_dir: Path, trpcage_pdb):
    with pytest.raises(StarmdInputError, match="holds a run with protocol 'implicit'"):
        simulate(
            trpcage_pdb,
            prepared_dir,
            ns=0.01,
            protocol="implicit-gbn2",
            name="trpcage",
            platform="CPU",
            progress=False,
        )


def test_folder_with_another_structure_is_refused(prepared_dir: Path, trpcage_pdb, tmp_path):
    edited = tmp_path / "trpcage.pdb"
    edited.write_text(trpcage_pdb.read_text().replace("TRP A   6", "PHE A   6"))
    with pytest.raises(StarmdInputError, match="holds a run of another structure"):
        simulate(edited, prepared_dir, ns=0.01, name="trpcage", platform="CPU", progress=False)


def test_explicit_protocol_builds_a_solvated_npt_system(trpcage_pdb):
    import openmm

    from starmd.simulate.protocols import build_system, get_protocol

    topology, positions = fix_structure(trpcage_pdb)
    system, solvated, _ = build_system(get_protocol("explicit"), topology, positions)
    names = {r.name for r in solvated.residues()}
    assert {"HOH", "NA", "CL"} <= names
    forces = {type(f).__name__: f for f in system.getForces()}
    assert "MonteCarloBarostat" in forces
    assert forces["NonbondedForce"].getNonbondedMethod() == openmm.NonbondedForce.PME
    assert system.usesPeriodicBoundaryConditions()
