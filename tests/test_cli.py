"""The command line end to end: outputs, exit codes, one-line errors without tracebacks."""

import json
import subprocess
import sys

import pytest

from starmd.cli import main
from tests.conftest import ASSETS, STRUCTURES


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def assert_one_line_error(code, err, pattern):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and pattern in lines[0]
    assert "Traceback" not in err


def test_help_lists_commands_and_examples(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("inspect", "prepare", "demo", "data"):
        assert command in out
    code, out, _ = run_cli(["prepare", "--help"], capsys)
    assert code == 0 and "Example: starmd prepare" in out


def test_inspect_json_report(capsys):
    code, out, _ = run_cli(["inspect", str(STRUCTURES / "2beg.pdb"), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["n_residues"] == 130 and len(report["chains"]) == 5
    assert report["round_trip_backbone_rmsd_A"] < 0.05


def test_inspect_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "junk.pdb"
    bad.write_text("hello\n")
    code, _, err = run_cli(["inspect", str(bad)], capsys)
    assert_one_line_error(code, err, "junk.pdb")
    code, _, err = run_cli(["inspect", str(STRUCTURES / "1ubi.pdb"), "--chain", "Z"], capsys)
    assert_one_line_error(code, err, "chain(s) Z not found")


def test_prepare_end_to_end_and_bad_input(tmp_path, capsys):
    code, out, _ = run_cli(
        ["prepare", str(ASSETS / "demo" / "1am7"), "-o", str(tmp_path / "data")], capsys
    )
    assert code == 0 and "1 proteins, 1 replicas" in out
    assert (tmp_path / "data" / "index.csv").exists()
    code, _, err = run_cli(
        ["prepare", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")], capsys
    )
    assert_one_line_error(code, err, "nothing: not found")
    code, _, err = run_cli(
        ["prepare", str(ASSETS / "demo" / "1am7"), "-o", str(tmp_path / "data")], capsys
    )
    assert_one_line_error(code, err, "exists; pass --overwrite")


def test_debug_flag_shows_traceback(tmp_path):
    cmd = [sys.executable, "-m", "starmd.cli", "--debug", "inspect", str(tmp_path / "none.pdb")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_with_a_model(tmp_path, capsys, monkeypatch):
    """The demo with a tiny untrained model and the replica and static baselines (the ANM
    baseline adds about a minute; `make demo` runs it), on a machine made to look busy: it
    generates on the one CPU left free."""
    import torch

    from starmd.cli import lists
    from starmd.modelfile.config import TrainConfig
    from starmd.train.module import StarMDModule
    from starmd.train.run import export_model

    torch.manual_seed(0)
    model = export_model(
        StarMDModule(TrainConfig.from_yaml(None, ["model.preset=tiny"])), tmp_path / "m.safetensors"
    )
    monkeypatch.setattr(lists, "usable_cpus", lambda: 2)
    monkeypatch.setattr(lists, "load_average", lambda: 1.0)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    code, out, _ = run_cli(
        [
            "demo",
            "-o",
            str(tmp_path / "demo"),
            "--model",
            str(model),
            "--frames",
            "4",
            "--steps",
            "2",
            "--baselines",
            "replica,static",
        ],
        capsys,
    )
    assert code == 0 and "done" in out and "coverage JSD" in out
    assert "generating on 1 thread(s) of 2" in out
    sidecar = json.loads((tmp_path / "demo" / "generated" / "2wqg.json").read_text())
    assert sidecar["threads"] == 1
    assert sidecar["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["md_frames"] == 50 and summary["generated"]["frames"] == 4
    assert set(summary["metrics"]["coverage_jsd"]) >= {"model", "md_replica", "static"}
    assert (tmp_path / "demo" / "report" / "report.html").exists()
    import mdtraj

    traj = mdtraj.load(summary["rebuilt_xtc"], top=summary["rebuilt_pdb"])
    assert traj.n_frames == 50 and traj.topology.n_residues == 41
    torch.set_num_threads(previous)


def test_usage_errors_exit_2_without_traceback(capsys):
    code, _, err = run_cli(["generate"], capsys)
    assert code == 2 and "Missing argument" in err and "Traceback" not in err
    code, _, err = run_cli(["bench", "--no-such-option"], capsys)
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_demo_with_a_missing_model_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.safetensors"
    code, _, err = run_cli(["demo", "-o", str(tmp_path / "demo"), "--model", str(missing)], capsys)
    assert_one_line_error(code, err, "nope.safetensors: model file not found")
    assert not (tmp_path / "demo").exists()
    # a bundled model's name is accepted; one that is not installed is the same kind of error
    from starmd.modelfile import BUNDLED_MODELS

    monkeypatch.setitem(BUNDLED_MODELS, "starmd-absent", "assets/models/absent.safetensors")
    code, _, err = run_cli(
        ["demo", "-o", str(tmp_path / "demo"), "--model", "starmd-absent"], capsys
    )
    assert_one_line_error(code, err, "bundled model starmd-absent is not installed")
    assert not (tmp_path / "demo").exists()


def test_short_r_means_replicas_and_stays_accepted_for_the_reference(tmp_path, capsys):
    code, out, _ = run_cli(["generate", "--help"], capsys)
    assert code == 0 and "-r" in out and "--replicas" in out
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert "--reference" in out and "-r " not in out  # the old spelling is hidden
    missing = tmp_path / "no_md"
    code, _, err = run_cli(["evaluate", "-r", str(missing), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "-r for --reference is deprecated" in err
    assert str(missing) in err.splitlines()[-1]  # the option was taken as the reference
    code, _, err = run_cli(["evaluate", "-o", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "--reference MD_DIR is required")


def test_an_output_path_under_a_file_says_to_fix_the_path_not_to_resume(tmp_path, capsys):
    """Nothing was started, so there is nothing to resume: the line names the path and says
    to check it (a disk that fills half-way keeps the resume hint: the fault-matrix tests;
    the same for `train`: tests/train/test_train_faults.py)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(STRUCTURES / "1vii.pdb"), "-o", str(out), "--frames", "2"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert str(out) in lines[0] and "check the path" in lines[0], err
    assert "resume" not in lines[0] and "Traceback" not in err, err
