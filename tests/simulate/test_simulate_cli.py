"""The typer command functions, registered in a test-local app as starmd.cli will do."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from simulate_consts import NAME
from typer.testing import CliRunner

from starmd.cli.simulate import corpus_app, simulate_command
from starmd.errors import StarmdInputError
from starmd.simulate.replica import check_seed, replica_seed

app = typer.Typer()
app.command("simulate")(simulate_command)
app.add_typer(corpus_app, name="corpus")
runner = CliRunner()


def test_help_texts_carry_an_example():
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    assert "starmd simulate protein.pdb -o md/ --ns 10 --replicas 3" in result.output
    result = runner.invoke(app, ["corpus", "build", "--help"])
    assert result.exit_code == 0
    assert "starmd corpus build --out corpus/md" in result.output


def test_cli_module_does_not_import_openmm():
    code = (
        "import sys, starmd.cli; "
        "print(any(m.startswith(('openmm', 'mdtraj', 'torch')) for m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert output.stdout.strip() == "False"


def test_simulate_command_runs_and_reports(prepared_dir, trpcage_pdb):
    result = runner.invoke(
        app,
        [
            "simulate",
            str(trpcage_pdb),
            "-o",
            str(prepared_dir),
            "--ns",
            "0.002",
            "--save-every-ps",
            "1",
            "--platform",
            "CPU",
            "--threads",
            "1",
            "--equilibrate-ps",
            "0.4",
            "--name",
            NAME,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "frames R1: 2" in result.output


def test_simulate_command_raises_the_project_error_for_bad_platform(trpcage_pdb, tmp_path):
    result = runner.invoke(
        app, ["simulate", str(trpcage_pdb), "-o", str(tmp_path / "o"), "--platform", "TPU"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, StarmdInputError)


@pytest.mark.parametrize("seed", [-1, 2_147_484])
def test_simulate_refuses_a_seed_outside_openmm_range_before_writing(trpcage_pdb, tmp_path, seed):
    """Replica seeds are seed*1000+i and OpenMM's seeds are 32-bit: 2,147,484 * 1000 + 2
    overflows, 2,147,483 (the largest allowed with 2 replicas) does not."""
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["simulate", str(trpcage_pdb), "-o", str(out), "--replicas", "2", "--seed", str(seed)]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, StarmdInputError)
    assert f"--seed {seed}: need 0 to 2147483" in str(result.exception)
    assert not out.exists()
    check_seed(2_147_483, 2)  # the boundary itself is accepted and fits
    assert replica_seed(2_147_483, 2) < 2**31 <= replica_seed(2_147_484, 2)


def test_corpus_scripts_entry_still_starts_the_build_command():
    """``python -m starmd.simulate.cli build`` (corpus/README.md, corpus/gpu_build.sh) reaches
    the corpus command of ``starmd.cli.simulate``."""
    output = subprocess.run(
        [sys.executable, "-m", "starmd.simulate.cli", "build", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert output.returncode == 0 and "round-robin" in output.stdout


def test_corpus_build_rejects_a_bad_split_target_before_simulating(tmp_path):
    result = runner.invoke(
        app, ["corpus", "build", "--out", str(tmp_path / "md"), "--split-ns", "val:1.0"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, StarmdInputError)
    assert "--split-ns val:1.0" in str(result.exception)
    assert not (tmp_path / "md").exists()
