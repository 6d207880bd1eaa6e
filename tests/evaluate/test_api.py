import csv
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from starmd.cli.evaluate import evaluate_command
from starmd.errors import StarmdInputError
from starmd.evaluate import evaluate
from starmd.evaluate.protein import ProteinJob, ReferenceCache, score_method
from starmd.evaluate.trajectories import (
    discover_proteins,
    load_ensemble,
    load_heavy_topology,
)
from starmd.evaluate.viewer import VIEWER_FRAMES, viewer_library

from .conftest import make_generated, make_reference

FAST = {"ensemble_frames": 40, "progress": False}
GENERATION = {"frames": 60, "dt_ps": 50.0, "steps": 5, "sampler": "dpm2", "seed": 7}


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    return make_reference(tmp_path_factory.mktemp("ref_small"), n_frames=200)


@pytest.fixture(scope="module")
def report(tmp_path_factory, small_reference):
    generated = make_generated(tmp_path_factory.mktemp("gen_small"), n_frames=60)
    sidecar = generated / "villin.json"
    recorded = {"model": "/models/starmd-small.safetensors", "settings": GENERATION}
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | recorded))
    out = tmp_path_factory.mktemp("report")
    table = evaluate(generated, small_reference, out, **FAST)
    return table, out


def test_report_writes_raw_results_tables_plots_and_self_contained_html(report):
    table, out = report
    assert table.methods == ["md_reference", "md_replica", "model", "static", "anm"]
    results = json.loads((out / "proteins/villin/results.json").read_text())
    assert set(results["methods"]) == set(table.methods)
    with np.load(out / "proteins/villin/arrays.npz") as arrays:
        assert "model/rmsf_gen" in arrays and "anm/health_rmsd_to_initial_R1" in arrays
    for name in ("rmsf", "distances", "tica_fes", "autocorrelation", "health"):
        assert (out / "proteins/villin/plots" / f"{name}.png").is_file()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "<img alt='rmsf.png'" in html
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {"md_replica", "model", "static", "anm"} <= set(rows[0])
    assert "| coverage JSD" in (out / "metrics.md").read_text()


def test_report_opens_with_model_provenance_and_a_coloured_verdict(report):
    _, out = report
    markdown = (out / "metrics.md").read_text()
    assert markdown.startswith("# starmd evaluation")
    assert "- **model**: model starmd-small (dt (ps): 50, frames: 60" in markdown
    assert "sampler: dpm2, seed: 7" in markdown
    assert "| model | A. STAR-MD paper |" in markdown and "replica(s) of 2 ns" in markdown
    html = (out / "report.html").read_text()
    assert html.index("class='headline'") < html.index("<h2>Metrics</h2>")
    assert any(f"<td class='{cue}'>" in html for cue in ("ahead", "mixed", "behind"))
    settings = html[html.index("<h2>Settings</h2>") : html.index("<h2>Metrics</h2>")]
    assert "{" not in settings and "[" not in settings  # no Python reprs
    assert "<li><b>baselines</b>: replica, static, anm</li>" in settings


def test_report_embeds_an_offline_trajectory_viewer_with_md_and_model_frames(report):
    _, out = report
    html = (out / "report.html").read_text()
    assert viewer_library() in html and "<script src=" not in html  # library inlined
    assert html.count("<div class='mol'") == 2  # MD replica 1 and the model, side by side
    for label, frames in (("MD", VIEWER_FRAMES), ("model", VIEWER_FRAMES)):
        start = html.index(f"<b>{label}</b>")
        block = html[html.index("<pre hidden", start) : html.index("</pre>", start)]
        assert block.count("MODEL") == frames and "ATOM" in block


def test_md_replica_beats_static_and_anm_on_coverage(report):
    table, _ = report
    jsd, recall = table.values["coverage_jsd"], table.values["coverage_recall"]
    assert jsd["md_replica"] < min(jsd["static"], jsd["anm"])
    assert recall["md_replica"] > max(recall["static"], recall["anm"])
    assert table.values["rmsf_median"]["static"] == 0.0
    assert table.values["validity_pct"]["md_replica"] > 80.0


def test_backbone_only_model_is_scored_on_common_atoms(tmp_path, small_reference):
    generated = make_generated(tmp_path / "bb", n_frames=40, backbone_only=True)
    table = evaluate(
        generated, small_reference, tmp_path / "out", baselines=(), plots=False, **FAST
    )
    results = json.loads((tmp_path / "out/proteins/villin/results.json").read_text())
    assert results["methods"]["model"]["n_atoms"] == 140
    assert np.isfinite(table.values["coverage_jsd"]["model"])
    assert np.isnan(table.values["exposed_jaccard"]["model"])  # no side chains to expose


def test_nan_and_exploded_frames_are_counted_not_fatal(small_reference):
    files = discover_proteins(small_reference, "reference")["villin"]
    reference = load_ensemble(files, "reference")
    _, initial = load_heavy_topology(files.pdb)
    frames = reference.replicas[2][:50].copy()
    frames[[3, 10]] = np.nan
    frames[20] = initial + 40.0 * (initial - initial.mean(0))
    method = load_ensemble(files, "reference")
    method.replicas = [frames]
    job = ProteinJob("villin", files, ensemble_frames=20)
    scores, arrays = score_method(method, ReferenceCache(reference, initial), None, job)
    assert scores["nan_frames"] == 2 and scores["exploded_frames"] == 1
    assert scores["usable_frames"] == 47
    assert np.isfinite(scores["coverage_jsd"]) and np.isfinite(scores["rmsf_r"])
    assert arrays["health_nan_frame_R1"].sum() == 2


def test_missing_reference_is_a_clear_error(tmp_path, generated_dir):
    other = make_reference(tmp_path / "other", n_replicas=1, n_frames=5)
    (other / "villin").rename(other / "lysozyme")
    for p in (other / "lysozyme").iterdir():
        p.rename(p.with_name(p.name.replace("villin", "lysozyme")))
    with pytest.raises(StarmdInputError, match="no reference MD for protein 'villin'"):
        evaluate(generated_dir, other, tmp_path / "out", **FAST)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(evaluate_command)
    return app


def test_cli_runs_the_evaluation_and_prints_the_table(tmp_path, small_reference):
    generated = make_generated(tmp_path / "gen", n_frames=30)
    result = CliRunner().invoke(
        _cli(),
        [str(generated), "--reference", str(small_reference), "-o", str(tmp_path / "out"),
         "--baselines", "static", "--no-plots", "--ensemble-frames", "20", "--workers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| coverage JSD" in result.output and "report:" in result.output
    assert (tmp_path / "out/report.html").is_file()


def test_cli_rejects_unknown_baseline(tmp_path, small_reference):
    result = CliRunner().invoke(
        _cli(), ["--reference", str(small_reference), "-o", str(tmp_path), "--baselines", "nope"]
    )
    assert isinstance(result.exception, StarmdInputError)
    assert "unknown baseline" in str(result.exception)


def test_workers_score_proteins_in_parallel(tmp_path, small_reference):
    reference = _two_protein_reference(tmp_path / "ref", small_reference)
    table = evaluate(
        None, reference, tmp_path / "out", baselines=("replica",), workers=2, plots=False, **FAST
    )
    assert table.n_proteins == 2 and table.methods == ["md_reference", "md_replica"]
    assert (tmp_path / "out/proteins/villin2/results.json").is_file()


def _two_protein_reference(root, small_reference):
    for name in ("villin", "villin2"):
        (root / name).mkdir(parents=True)
        for source in (small_reference / "villin").iterdir():
            target = root / name / source.name.replace("villin", name)
            target.write_bytes(source.read_bytes())
    return root


def test_rerun_into_a_previous_report_aggregates_only_this_run(tmp_path, small_reference):
    reference = _two_protein_reference(tmp_path / "ref", small_reference)
    out = tmp_path / "out"
    quick = {"baselines": ("static",), "plots": False, **FAST}
    assert evaluate(None, reference, out, **quick).n_proteins == 2
    table = evaluate(None, reference, out, proteins=["villin2"], **quick)
    assert table.n_proteins == 1
    assert "Median over 1 protein(s)" in (out / "metrics.md").read_text()
    assert sorted(p.name for p in (out / "proteins").iterdir()) == ["villin2"]
    assert json.loads((out / "settings.json").read_text())["proteins"] == ["villin2"]
    (out / "metrics.csv").unlink()  # as after an interrupted run: settings.json comes first
    assert evaluate(None, reference, out, proteins=["villin"], **quick).n_proteins == 1


def test_foreign_non_empty_output_folder_needs_overwrite(tmp_path, small_reference):
    out = tmp_path / "out"
    (out / "proteins" / "stale").mkdir(parents=True)
    (out / "proteins" / "stale" / "results.json").write_text('{"protein": "stale"}')
    (out / "my_notes.txt").write_text("not evaluate's")
    quick = {"baselines": ("static",), "plots": False, **FAST}
    with pytest.raises(StarmdInputError, match="not a previous evaluate output.*--overwrite"):
        evaluate(None, small_reference, out, **quick)
    assert (out / "proteins" / "stale").is_dir()  # nothing touched on refusal
    table = evaluate(None, small_reference, out, overwrite=True, **quick)
    assert table.n_proteins == 1
    assert sorted(p.name for p in (out / "proteins").iterdir()) == ["villin"]
    assert (out / "my_notes.txt").read_text() == "not evaluate's"  # only its own files cleared


def test_output_folder_may_not_be_an_input_folder(tmp_path, small_reference):
    with pytest.raises(StarmdInputError, match="is an input folder"):
        evaluate(None, small_reference, small_reference, overwrite=True, **FAST)


def test_cli_overwrite_flag_replaces_a_foreign_folder(tmp_path, small_reference):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something.txt").write_text("x")
    args = ["--reference", str(small_reference), "-o", str(out), "--baselines", "static",
            "--no-plots", "--ensemble-frames", "20"]  # fmt: skip
    refused = CliRunner().invoke(_cli(), args)
    assert isinstance(refused.exception, StarmdInputError)
    result = CliRunner().invoke(_cli(), [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()
