"""A request outside the model's training domain warns (time step, size, chains); an absurd
time step is refused unless forced; the warnings reach the user and the sidecar."""

import dataclasses
import json

import numpy as np
import pytest

from starmd.cli import main
from starmd.errors import StarmdInputError
from starmd.modelfile.config import TrainConfig
from starmd.sample.domain import check_domain
from starmd.structure.io import load_structure
from tests.conftest import STRUCTURES

VILLIN = STRUCTURES / "1vii.pdb"


def _config(dt_ps=(10.0, 20.0, 50.0, 100.0, 200.0), crop=64) -> TrainConfig:
    config = TrainConfig()
    config.data.dt_ps = list(dt_ps)
    config.data.crop = crop
    return config


def test_a_request_inside_the_training_domain_gives_no_warning():
    protein, _ = load_structure(VILLIN)  # 36 residues, one chain
    assert check_domain(protein, 50.0, _config()) == []
    assert check_domain(protein, 10.0, _config()) == []  # the range's ends are inside


def test_time_steps_outside_the_trained_range_warn_with_the_range():
    protein, _ = load_structure(VILLIN)
    for dt_ps in (1000.0, 5.0):
        (warning,) = check_domain(protein, dt_ps, _config())
        assert f"--dt {dt_ps:g} ps" in warning and "10-200 ps" in warning


def test_absurd_time_steps_are_refused_unless_forced():
    protein, _ = load_structure(VILLIN)
    for dt_ps in (0.05, 20001.0):  # 50 fs; just above 100 x 200 ps
        with pytest.raises(StarmdInputError, match="far outside"):
            check_domain(protein, dt_ps, _config())
        assert len(check_domain(protein, dt_ps, _config(), force=True)) == 1
    assert len(check_domain(protein, 20000.0, _config())) == 1  # the limit itself only warns


def test_proteins_longer_than_the_training_crops_warn():
    protein, _ = load_structure(VILLIN)
    (warning,) = check_domain(protein, 50.0, _config(crop=24))
    assert "36 residues" in warning and "at most 24" in warning
    assert check_domain(protein, 50.0, _config(crop=None)) == []


def test_multi_chain_input_warns():
    protein, _ = load_structure(VILLIN)
    half = protein.n_residues // 2
    chain_ids = tuple(["A"] * half + ["B"] * (protein.n_residues - half))
    linked = protein.linked_prev.copy()
    linked[half] = False
    two_chains = dataclasses.replace(protein, chain_ids=chain_ids, linked_prev=np.asarray(linked))
    (warning,) = check_domain(two_chains, 50.0, _config())
    assert warning.startswith("2 chains")


def test_generate_warns_before_the_run_and_records_the_warning(tmp_path, caplog):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["generate", str(VILLIN), "-o", str(out), "--frames", "2", "--dt", "1ns",
              "--steps", "1", "--threads", "1"])  # fmt: skip
        raise SystemExit(0)
    assert (exc.value.code or 0) == 0
    # A logged warning (shown on stderr by the CLI; pytest's log capture takes it here).
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("--dt 1000 ps is outside the time steps this model was trained on" in m
               for m in logged)  # fmt: skip
    sidecar = json.loads((out / "1vii.json").read_text())
    assert any("1000 ps" in w for w in sidecar["domain_warnings"])


def test_generate_refuses_an_absurd_time_step_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["generate", str(VILLIN), "-o", str(out), "--frames", "2", "--dt", "50fs"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "far outside" in lines[0] and "--force" in lines[0]
    assert not (out / "1vii_R1.xtc").exists()
