"""Lists of proteins: folders and CSVs, shards that cover a list exactly once, failures."""

import json

import mdtraj
import pytest
import torch

from starmd.cli import lists
from starmd.errors import StarmdInputError, StarmdSimulationError
from tests.conftest import STRUCTURES
from tests.test_cli import assert_one_line_error, run_cli


def _csv(tmp_path, rows):
    path = tmp_path / "list.csv"
    path.write_text("name,structure,notes\n" + "".join(f"{n},{s},x\n" for n, s in rows))
    return path


def test_folder_and_csv_lists(tmp_path):
    jobs = lists.read_jobs(STRUCTURES)
    assert [j.name for j in jobs] == sorted(j.name for j in jobs)
    assert {"1ubi", "1vii", "3u7t"} <= {j.name for j in jobs}  # .pdb and .cif alike
    csv_path = _csv(tmp_path, [("ubq", str(STRUCTURES / "1ubi.pdb")), ("hp36", "hp.pdb")])
    (tmp_path / "hp.pdb").write_text((STRUCTURES / "1vii.pdb").read_text())
    jobs = lists.read_jobs(csv_path)
    assert [(j.name, j.structure.name) for j in jobs] == [("ubq", "1ubi.pdb"), ("hp36", "hp.pdb")]
    assert lists.is_list(csv_path) and lists.is_list(tmp_path)
    assert not lists.is_list(STRUCTURES / "1ubi.pdb")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("a", "missing.pdb")], "line 2: "),
        ([("a", str(STRUCTURES / "1ubi.pdb")), ("a", str(STRUCTURES / "1vii.pdb"))], "duplicate"),
        ([("", str(STRUCTURES / "1ubi.pdb"))], "empty name"),
    ],
)
def test_bad_lists(tmp_path, rows, message):
    with pytest.raises(StarmdInputError, match=message):
        lists.read_jobs(_csv(tmp_path, rows))


def test_bad_list_sources(tmp_path):
    (tmp_path / "bad.csv").write_text("id,file\n1,2\n")
    with pytest.raises(StarmdInputError, match="columns name,structure"):
        lists.read_jobs(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StarmdInputError, match="no structure files"):
        lists.read_jobs(tmp_path / "empty")


def test_shards_cover_the_list_exactly_once():
    jobs = [lists.Job(f"p{i}", STRUCTURES / "1ubi.pdb") for i in range(11)]
    for n in (1, 2, 3, 4, 11, 12):
        parts = [lists.shard(jobs, i, n) for i in range(n)]
        names = [j.name for part in parts for j in part]
        assert sorted(names) == sorted(j.name for j in jobs)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert lists.parse_shard("2/4") == (2, 4) and lists.parse_shard(None) == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(StarmdInputError, match="--shard"):
            lists.parse_shard(bad)


def _generate_two(tmp_path, model, frames: int) -> tuple:
    """Output folder and the ``starmd generate`` arguments for a CSV of two proteins."""
    csv_path = _csv(
        tmp_path, [("hp36", str(STRUCTURES / "1vii.pdb")), ("ubq", str(STRUCTURES / "1ubi.pdb"))]
    )
    out = tmp_path / "gen"
    base = ["generate", str(csv_path), "-o", str(out), "--model", str(model)]
    return out, [*base, "--frames", str(frames), "--steps", "2", "--dt", "10ps"]


def test_generate_a_list_with_shards(tiny_model_path, tmp_path, capsys):
    out, base = _generate_two(tmp_path, tiny_model_path, frames=3)
    code, stdout, _ = run_cli([*base, "--shard", "1/2"], capsys)
    assert code == 0 and "1 of 1 proteins" in stdout
    assert not (out / "hp36").exists()
    traj = mdtraj.load(out / "ubq" / "1ubi_R1.xtc", top=out / "ubq" / "1ubi.pdb")
    assert traj.n_frames == 3 and traj.n_residues == 76
    code, stdout, _ = run_cli([*base, "--shard", "0/2"], capsys)
    assert code == 0
    assert json.loads((out / "hp36" / "1vii.json").read_text())["frames_written"] == [3]
    # a requeued array task with --resume skips finished proteins and starts new ones
    before = (out / "ubq" / "1ubi_R1.xtc").stat().st_mtime_ns
    code, stdout, _ = run_cli([*base, "--resume"], capsys)
    assert code == 0 and "2 of 2 proteins" in stdout
    assert (out / "ubq" / "1ubi_R1.xtc").stat().st_mtime_ns == before


def test_simulate_a_list_routes_each_protein(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_simulate(structure, out_dir, *, name, **options):
        calls.append((name, structure.name, out_dir.name, options["ns"]))
        if name == "bad":
            raise StarmdSimulationError("bad replica 1: NaN energy")
        return {}

    monkeypatch.setattr("starmd.simulate.engine.simulate", fake_simulate)
    csv_path = _csv(
        tmp_path,
        [("ok", str(STRUCTURES / "1vii.pdb")), ("bad", str(STRUCTURES / "1ubi.pdb"))],
    )
    code, stdout, err = run_cli(
        ["simulate", str(csv_path), "-o", str(tmp_path / "md"), "--ns", "0.01"], capsys
    )
    assert calls == [("ok", "1vii.pdb", "ok", 0.01), ("bad", "1ubi.pdb", "bad", 0.01)]
    assert code == 2 and "1 of 2 proteins simulated" not in stdout
    assert "simulated 1 of 2 proteins" in stdout
    assert_one_line_error(code, err, "1 of 2 proteins failed: bad: bad replica 1: NaN energy")
    code, _, err = run_cli(["simulate", str(tmp_path / "none.csv"), "-o", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "none.csv: not found")


def test_parallel_workers_share_the_cores(tiny_model_path, tmp_path, capsys):
    """--workers k gives each generating process its share of the cores (not all of them),
    --threads sets it explicitly; the sidecar records the threads used."""
    out, base = _generate_two(tmp_path, tiny_model_path, frames=2)
    code, stdout, _ = run_cli([*base, "--workers", "2"], capsys)
    assert code == 0 and "2 of 2 proteins" in stdout
    share = max(1, lists.usable_cpus() // 2)
    for name, stem in (("hp36", "1vii"), ("ubq", "1ubi")):
        assert json.loads((out / name / f"{stem}.json").read_text())["threads"] == share
    single = tmp_path / "single"
    args = ["generate", str(STRUCTURES / "1vii.pdb"), "-o", str(single)]
    args += ["--model", str(tiny_model_path), "--frames", "2", "--steps", "2", "--threads", "1"]
    before = torch.get_num_threads()
    try:
        code, _, _ = run_cli(args, capsys)  # in this process: sets its torch threads
    finally:
        torch.set_num_threads(before)
    assert code == 0 and json.loads((single / "1vii.json").read_text())["threads"] == 1


def test_busy_cpus_are_warned_about(monkeypatch):
    monkeypatch.setattr(lists, "usable_cpus", lambda: 2)
    warning = lists.busy_cpu_warning(2, load=1.0)
    assert warning and "--threads 1" in warning and "1 of 2 CPUs" in warning
    assert lists.busy_cpu_warning(2, load=0.2) is None  # a free machine
    assert lists.busy_cpu_warning(1, load=5.0) is None  # one thread cannot wait on another


def test_free_cpus_follow_the_load(monkeypatch):
    monkeypatch.setattr(lists, "usable_cpus", lambda: 4)
    assert lists.free_cpus(None) == 4  # unknown load: every CPU
    assert lists.free_cpus(1.2) == 3
    assert lists.free_cpus(2.6) == 1
    assert lists.free_cpus(9.0) == 0
