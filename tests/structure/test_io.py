"""Reading structures: what is kept, what is stripped, and one-line errors for bad input."""

import numpy as np
import pytest

from starmd.errors import StarmdInputError
from starmd.structure.io import iter_trajectory, load_structure, save_structure, to_mdtraj
from tests.conftest import STRUCTURES


def _pdb_lines(name="1ubi.pdb"):
    return (STRUCTURES / name).read_text().splitlines(keepends=True)


def _write(tmp_path, lines, name="bad.pdb"):
    path = tmp_path / name
    path.write_text("".join(lines))
    return path


def test_water_ions_and_hydrogens_are_stripped_and_variants_mapped():
    protein, positions = load_structure(STRUCTURES / "1a8o.pdb")  # waters + MSE
    assert protein.n_residues == 70
    assert "M" in protein.sequence  # MSE read as MET, SE as SD
    met = int(np.flatnonzero(protein.aatype == 12)[0])
    assert protein.atom_mask[met, 6]
    assert positions.shape == (70, 15, 3)


def test_missing_backbone_atom_is_an_error_naming_the_residue(tmp_path):
    lines = [
        ln
        for ln in _pdb_lines()
        if not (ln.startswith("ATOM") and ln[12:16] == " CA " and ln[22:26] == "  10")
    ]
    with pytest.raises(
        StarmdInputError, match=r"bad\.pdb: residue A:GLY10 is missing backbone atom"
    ):
        load_structure(_write(tmp_path, lines))


def test_unknown_residue_in_a_chain_is_an_error(tmp_path):
    lines = [
        ln[:17] + "XYZ" + ln[20:] if ln.startswith("ATOM") and ln[22:26] == "  12" else ln
        for ln in _pdb_lines()
    ]
    with pytest.raises(StarmdInputError, match="XYZ12 is not one of the 20 standard"):
        load_structure(_write(tmp_path, lines))


def test_nan_coordinates_are_an_error(tmp_path):
    lines = [
        ln[:30] + "     nan" + ln[38:] if ln.startswith("ATOM") and ln[6:11] == "    5" else ln
        for ln in _pdb_lines()
    ]
    with pytest.raises(StarmdInputError, match="NaN"):
        load_structure(_write(tmp_path, lines))


def test_no_protein_is_an_error(tmp_path):
    waters = [ln for ln in _pdb_lines("1a8o.pdb") if ln.startswith("HETATM") and "HOH" in ln]
    with pytest.raises(StarmdInputError, match="no protein residues"):
        load_structure(_write(tmp_path, waters))


def test_not_a_structure_is_an_error(tmp_path):
    with pytest.raises(StarmdInputError, match="no atoms|cannot read"):
        load_structure(_write(tmp_path, ["this is not a PDB file\n"]))
    with pytest.raises(StarmdInputError, match="unsupported structure format"):
        load_structure(_write(tmp_path, ["x"], name="notes.txt"))
    with pytest.raises(StarmdInputError, match="file not found"):
        load_structure(tmp_path / "missing.pdb")


def test_chain_break_is_reported_not_bridged(tmp_path):
    lines = [
        ln for ln in _pdb_lines() if not (ln.startswith("ATOM") and 30 <= int(ln[22:26]) <= 33)
    ]
    protein, _ = load_structure(_write(tmp_path, lines))
    assert [protein.label(i) for i in protein.chain_breaks] == ["A:GLU34"]
    assert not protein.linked_prev[protein.chain_breaks[0]]
    assert (
        protein.segment_index[protein.chain_breaks[0]]
        - protein.segment_index[protein.chain_breaks[0] - 1]
        > 50
    )


def test_written_structure_keeps_names_numbers_and_reads_back(tmp_path):
    protein, positions = load_structure(STRUCTURES / "2beg.pdb")
    out = save_structure(tmp_path / "out.pdb", protein, positions)
    again, positions2 = load_structure(out)
    assert again.sequence == protein.sequence
    assert again.chain_ids == protein.chain_ids
    np.testing.assert_array_equal(again.residue_numbers, protein.residue_numbers)
    np.testing.assert_allclose(positions2[again.atom_mask], positions[protein.atom_mask], atol=1e-3)
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_trajectory_atom_count_mismatch_and_corrupt_files(tmp_path):
    protein, positions = load_structure(STRUCTURES / "1vii.pdb")
    traj = to_mdtraj(protein, np.repeat(positions[None], 3, 0), time_ps=np.arange(3) * 10.0)
    traj.save_xtc(str(tmp_path / "ok.xtc"))
    traj.atom_slice(np.arange(20)).save_xtc(str(tmp_path / "short.xtc"))
    top = tmp_path / "top.pdb"
    traj[0].save_pdb(str(top))
    chunks = list(iter_trajectory(top, tmp_path / "ok.xtc"))
    assert chunks[0][1].shape == (3, 36, 15, 3)
    np.testing.assert_allclose(chunks[0][2], [0, 10, 20])
    with pytest.raises(StarmdInputError, match="short.xtc: cannot read"):
        list(iter_trajectory(top, tmp_path / "short.xtc"))
    (tmp_path / "empty.xtc").write_bytes(b"")
    with pytest.raises(StarmdInputError, match="empty.xtc: is empty"):
        list(iter_trajectory(top, tmp_path / "empty.xtc"))
    data = (tmp_path / "ok.xtc").read_bytes()
    (tmp_path / "cut.xtc").write_bytes(data[: len(data) // 2 + 7])
    with pytest.raises(StarmdInputError, match="cut.xtc"):
        list(iter_trajectory(top, tmp_path / "cut.xtc"))


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    import os

    from starmd.structure.io import atomic_write

    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out.json", lambda tmp: open(tmp, "w").write("{}"))
    finally:
        os.umask(old)
    assert path.read_text() == "{}"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from starmd.structure.io import atomic_write, write_atomically

    target = write_atomically(tmp_path / "state.json", '{"frames": 3}', durable=True)

    def crash(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash, durable=True)
    assert target.read_text() == '{"frames": 3}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_xtc_chunks_appended_after_a_cut_make_one_valid_trajectory(tmp_path):
    """The one XTC encoder and appender: chunks concatenate into a valid XTC, and an append
    first cuts off what an interrupted run wrote after the last commit."""
    import mdtraj

    from starmd.structure.io import append_bytes, xtc_bytes

    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(5, 4, 3)).astype(np.float32)
    first = xtc_bytes(xyz[:2], np.array([0.0, 10.0]), np.array([0, 1]))
    second = xtc_bytes(xyz[2:], np.array([20.0, 30.0, 40.0]), np.array([2, 3, 4]))
    path = tmp_path / "t.xtc"
    length = append_bytes(path, 0, first)
    path.write_bytes(path.read_bytes() + b"garbage of an interrupted chunk")
    assert append_bytes(path, length, second) == len(first) + len(second)
    with mdtraj.formats.XTCTrajectoryFile(str(path)) as fh:
        read, time_ps, step, _ = fh.read()
    np.testing.assert_allclose(read, xyz, atol=1e-3)  # XTC keeps 3 decimals (nm)
    assert time_ps.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0] and step.tolist() == [0, 1, 2, 3, 4]


def test_failed_append_is_cut_back_to_the_committed_length(tmp_path, disk):
    from starmd.structure.io import append_bytes

    path = tmp_path / "t.xtc"
    committed = append_bytes(path, 0, b"a" * 100)
    limited = disk(path, free=10)
    with pytest.raises(OSError, match="No space left") as caught:
        append_bytes(path, committed, b"b" * 50)
    assert caught.value.filename == str(path) and limited.writes_refused == 1
    assert path.read_bytes() == b"a" * 100


def test_append_never_pads_a_file_that_lost_committed_bytes(tmp_path):
    from starmd.errors import StarmdInputError
    from starmd.structure.io import append_bytes

    path = tmp_path / "t.xtc"
    with pytest.raises(FileNotFoundError, match="committed bytes are gone"):
        append_bytes(path, 100, b"b")
    assert not path.exists()
    path.write_bytes(b"a" * 10)
    with pytest.raises(StarmdInputError, match="fewer than the 100 committed"):
        append_bytes(path, 100, b"b")
    assert path.read_bytes() == b"a" * 10


def test_failed_atomic_write_keeps_the_old_file_and_names_the_target(tmp_path, disk):
    from starmd.structure.io import write_atomically

    path = tmp_path / "record.json"
    write_atomically(path, "old")
    disk(tmp_path, free=3)
    with pytest.raises(OSError) as caught:
        write_atomically(path, "a longer new text")
    assert caught.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_dummy_unit_cells_load_without_a_warning(tmp_path):
    import warnings

    import mdtraj

    from starmd.structure.io import load_pdb_quietly

    cryst = "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1\n"
    path = _write(tmp_path, [cryst, *_pdb_lines("1vii.pdb")], name="cell.pdb")
    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        mdtraj.load_pdb(str(path))
    assert any("unit cell" in str(w.message) for w in plain)  # what mdtraj alone prints
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        assert load_pdb_quietly(path).n_residues == 36
    assert quiet == []
