"""The fidelity protocol: bootstrap intervals, derived rows, and the command end to end."""

from __future__ import annotations

import csv
import hashlib
import json
import re

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from starmd.errors import StarmdInputError
from starmd.evaluate.fidelity import (
    ROWS,
    FidelitySettings,
    _row_value,
    bootstrap_mean,
    generation_machines,
    run_fidelity,
    split_proteins,
)

from .conftest import make_reference


def test_bootstrap_mean_matches_scipy_percentile_bootstrap():
    values = np.random.default_rng(3).normal(0.5, 0.2, size=12)
    mean, low, high, n = bootstrap_mean(values, samples=20000)
    reference = stats.bootstrap(
        (values,), np.mean, confidence_level=0.9, method="percentile", n_resamples=20000,
        random_state=1,
    ).confidence_interval  # fmt: skip
    assert n == 12 and mean == pytest.approx(values.mean())
    assert low == pytest.approx(reference.low, abs=0.01)
    assert high == pytest.approx(reference.high, abs=0.01)


def test_bootstrap_mean_leaves_out_nan_and_degenerates_honestly():
    assert bootstrap_mean(np.array([2.0, np.nan])) == (2.0, 2.0, 2.0, 1)
    mean, low, high, n = bootstrap_mean(np.array([np.nan, np.nan]))
    assert n == 0 and np.isnan(mean) and np.isnan(low) and np.isnan(high)


def test_coverage_gap_is_relative_to_the_md_replica():
    methods = {"model": {"coverage_jsd": 0.8}, "md_replica": {"coverage_jsd": 0.65}}
    assert _row_value(methods, "model", "coverage_jsd_gap") == pytest.approx(0.15)
    assert _row_value(methods, "md_replica", "coverage_jsd_gap") == 0.0
    assert np.isnan(_row_value({"model": {"coverage_jsd": 0.8}}, "model", "coverage_jsd_gap"))
    assert np.isnan(_row_value(methods, "anm", "rmsf_r"))


def test_pairwise_rmsd_row_is_the_ratio_to_the_md_of_the_same_protein():
    methods = {
        "model": {"pairwise_rmsd": 0.9, "pairwise_rmsd_md": 1.2},
        "static": {"pairwise_rmsd": 0.0, "pairwise_rmsd_md": 1.2},
        "broken": {"pairwise_rmsd": 0.9, "pairwise_rmsd_md": 0.0},
    }
    assert _row_value(methods, "model", "pairwise_rmsd_ratio") == pytest.approx(0.75)
    assert _row_value(methods, "static", "pairwise_rmsd_ratio") == 0.0
    assert np.isnan(_row_value(methods, "broken", "pairwise_rmsd_ratio"))  # no MD spread
    assert np.isnan(_row_value(methods, "anm", "pairwise_rmsd_ratio"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = make_reference(tmp_path_factory.mktemp("corpus"), n_replicas=2, n_frames=12)
    split = folder / "split.csv"
    split.write_text("name,split\nvillin,val\nother,test\n")
    return folder, split


def test_split_proteins_refuses_a_split_without_reference_md(corpus):
    folder, split = corpus
    assert list(split_proteins(folder, "val", split)) == ["villin"]
    with pytest.raises(StarmdInputError, match="no reference MD for the 'test' proteins"):
        split_proteins(folder, "test", split)


@pytest.mark.filterwarnings("ignore")
def test_fidelity_end_to_end_and_resumes_without_regenerating(corpus, tiny_model_path, tmp_path):
    folder, split = corpus
    settings = FidelitySettings({"tiny": str(tiny_model_path)}, seeds=(0, 1), replicas=1)
    options = {"split": "val", "split_file": split}
    table = run_fidelity(folder, tmp_path, settings, **options)

    assert table.methods == ["tiny", "md_replica", "static", "anm"]
    assert table.proteins == ["villin"]
    for seed in (0, 1):
        sidecar = json.loads((tmp_path / f"generated/tiny/seed{seed}/villin.json").read_text())
        assert sidecar["frames_written"] == [12] and sidecar["dt_ps"] == 10.0
        assert sidecar["settings"]["seed"] == seed
        assert (tmp_path / f"evaluate/seed{seed}/proteins/villin/results.json").is_file()
    # the replica's coverage gap to itself is zero by construction; the static structure has no
    # fluctuations, so its RMSF correlation is undefined
    assert table.cells["coverage_jsd_gap"]["md_replica"][:3] == (0.0, 0.0, 0.0)
    assert table.cells["rmsf_r"]["static"][3] == 0
    assert table.cells["pairwise_rmsd_ratio"]["static"][0] == pytest.approx(0.0, abs=1e-5)
    assert table.cells["pairwise_rmsd_ratio"]["md_replica"][0] > 0
    rows = list(csv.DictReader((tmp_path / "fidelity.csv").open()))
    assert len(rows) == len(ROWS) * 4
    markdown = (tmp_path / "fidelity.md").read_text()
    assert "| RMSF per-target r | higher |" in markdown and "[" in markdown
    summary = json.loads((tmp_path / "fidelity.json").read_text())
    here = f"{summary['machine']['cpu']} ({torch.backends.cpu.get_cpu_capability()} kernels)"
    assert summary["generated_on"] == [here] and f"Generated on: {here}." in markdown
    per_protein = summary["per_protein"]
    seeds = [
        json.loads((tmp_path / f"evaluate/seed{s}/proteins/villin/results.json").read_text())
        for s in (0, 1)
    ]
    rmsf = [s["methods"]["tiny"]["rmsf_r"] for s in seeds]
    finite = [v for v in rmsf if v is not None]  # an N/A seed is left out of the mean
    if finite:
        assert per_protein["tiny"]["rmsf_r"][0] == pytest.approx(np.mean(finite))
    assert per_protein["tiny"]["rmsd_lag_gap"][0] == pytest.approx(
        np.mean([s["methods"]["tiny"]["rmsd_lag_gap"] for s in seeds])
    )
    # one protein: each seed's mean over proteins is that seed's value
    assert summary["per_seed"]["tiny"]["rmsd_lag_gap"] == pytest.approx(
        [s["methods"]["tiny"]["rmsd_lag_gap"] for s in seeds]
    )
    assert "| row | tiny (seeds 0 / 1) |" in markdown
    # a label's own bars are escaped, so every row of the main table has one cell per column
    assert "torsion decorrelation \\|log10 ratio\\| to MD" in markdown
    main = [line for line in markdown.splitlines() if line.startswith("| ") and "[" in line]
    assert all(len(re.split(r"(?<!\\)\|", line)) == len(table.methods) + 4 for line in main)

    xtc = tmp_path / "generated/tiny/seed0/villin_R1.xtc"
    before = xtc.stat().st_mtime_ns
    run_fidelity(folder, tmp_path, settings, **options)
    assert xtc.stat().st_mtime_ns == before

    from starmd.cli import app

    result = CliRunner().invoke(
        app, ["fidelity", str(folder), "-o", str(tmp_path), "-m", f"tiny={tiny_model_path}",
              "--seeds", "2", "--replicas", "1", "--split-file", str(split)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| RMSF per-target r | higher |" in result.output
    assert xtc.stat().st_mtime_ns == before

    # the same weights at another path are the same model: reused, not regenerated
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(tiny_model_path.read_bytes())
    same = FidelitySettings({"tiny": str(moved)}, seeds=(0,), replicas=1)
    run_fidelity(folder, tmp_path, same, **options)
    assert xtc.stat().st_mtime_ns == before
    # other weights under a label already used: refused, nothing regenerated or removed
    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_model_path.read_bytes() + b"\0")
    changed = FidelitySettings({"tiny": str(other)}, seeds=(0,), replicas=1)
    with pytest.raises(StarmdInputError, match=r"villin\.json: was generated with .*another label"):
        run_fidelity(folder, tmp_path, changed, **options)
    assert xtc.stat().st_mtime_ns == before
    # a sidecar from before the weights' hash was recorded is compared by path
    sidecar = tmp_path / "generated/tiny/seed0/villin.json"
    record = json.loads(sidecar.read_text())
    assert record["model_sha256"] == hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    del record["model_sha256"]
    sidecar.write_text(json.dumps(record))
    with pytest.raises(StarmdInputError, match="another label"):
        run_fidelity(folder, tmp_path, same, **options)
    run_fidelity(folder, tmp_path, settings, **options)
    assert xtc.stat().st_mtime_ns == before


def test_fidelity_command_rejects_a_model_label_taken_by_a_baseline(corpus, tmp_path):
    from starmd.cli import app

    folder, split = corpus
    result = CliRunner().invoke(
        app, ["fidelity", str(folder), "-o", str(tmp_path), "-m", "anm=x.safetensors",
              "--split-file", str(split)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert isinstance(result.exception, StarmdInputError)
    assert "baseline" in str(result.exception)


def test_fidelity_command_passes_refine_and_reanchor_to_every_generation(
    corpus, tmp_path, monkeypatch
):
    from starmd.cli import app
    from starmd.evaluate import fidelity

    seen = []

    def fake_run(reference, out, settings, **options):
        seen.append(settings.generation_overrides)
        raise StarmdInputError("stop here")

    monkeypatch.setattr(fidelity, "run_fidelity", fake_run)
    folder, split = corpus
    for flags in (
        ["--refine"],
        ["--no-refine"],
        [],
        ["--reanchor-every", "20", "--step-scale", "1.3"],
    ):
        CliRunner().invoke(
            app, ["fidelity", str(folder), "-o", str(tmp_path), "-m", "tiny=x.safetensors",
                  "--split-file", str(split), *flags],
        )  # fmt: skip
    off = {"reanchor_every": 0}  # recorded either way: a folder made with it is not reused
    assert seen == [  # refinement on by default, re-anchoring off
        {"refine": True, **off},
        {"refine": False, **off},
        {"refine": True, **off},
        {"refine": True, "reanchor_every": 20, "step_scale": 1.3},
    ]


def test_generation_machines_names_each_cpu_kind_once_and_older_sidecars(tmp_path):
    machine = {"cpu": "Some CPU", "cpu_capability": "AVX512"}
    folders = {}
    for seed, record in enumerate(({"machine": machine}, {"machine": machine}, {})):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        (folder / "villin.json").write_text(json.dumps(record))
        folders[("m", seed)] = folder
    folders[("m", 9)] = tmp_path / "never_generated"
    assert generation_machines(folders, ["villin"]) == [
        "Some CPU (AVX512 kernels)",
        "not recorded",
    ]
