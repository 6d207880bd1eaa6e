"""`starmd bench --quick` runs end to end and writes its tables; its helpers are right."""

import json

import mdtraj
import numpy as np
import pytest
import torch

from starmd.bench import synthetic_structure, with_attention_neighbours
from starmd.modelfile import bundled_model_path, load_model
from starmd.modelfile.config import TrainConfig
from starmd.sample.generate import GenerationSettings, with_model_defaults
from tests.conftest import STRUCTURES
from tests.test_cli import assert_one_line_error, run_cli


def test_bench_quick_writes_its_tables(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "bench"
    code, stdout, stderr = run_cli(
        ["bench", "--quick", "-o", str(out), "--model", str(tiny_model_path)]
        + ["--speed-models", "starmd-small"],
        capsys,
    )
    assert code == 0
    # every run of a section says what it does while it runs
    assert "tiny: 4 frames x 2 replica(s) of 1enh.pdb" in stderr and "OpenMM CPU" in stderr
    results = json.loads((out / "bench.json").read_text())
    sections = results["sections"]
    speed = sections["speed"]
    assert speed[0]["ratio"] > 0 and speed[0]["md_ns_per_day"] > 0
    # each model at its own defaults (refined and polished), then raw, against one OpenMM run
    assert [(r["model"], r["replicas"], r["refine"]) for r in speed] == [
        ("tiny", 1, True),
        ("tiny", 2, True),
        ("tiny", 1, False),
        ("starmd-small", 1, True),
        ("starmd-small", 2, True),
        ("starmd-small", 1, False),
    ]
    assert speed[3]["steps"] == load_model(bundled_model_path()).config.sampling.steps
    assert len({r["md_ns_per_day"] for r in speed}) == 1
    # OpenMM before and after the models; the ratio's reference is their pooled speed
    before, after = speed[0]["md_ns_per_day_before"], speed[0]["md_ns_per_day_after"]
    assert before > 0 and after > 0
    assert speed[0]["md_ns_per_day"] == pytest.approx(2 / (1 / before + 1 / after), rel=0.01)
    assert all(r["starmd_frames_per_s"] > 0 for r in speed)
    assert all(r["repeats"] == 1 and r["ratio_min"] == r["ratio_max"] for r in speed)  # quick
    # refined rows carry the refinement's and the polish's cost; the raw row none
    for row in speed:
        if row["refine"]:
            per_frame_ms = 1000 / row["starmd_frames_per_s"]
            spent = row["refine_ms_per_frame"] + row["polish_ms_per_frame"]
            assert 0 < spent < per_frame_ms
        else:
            assert row["refine_ms_per_frame"] is None and row["polish_ms_per_frame"] is None
    assert [r["frames"] for r in sections["memory"]] == [10, 40]
    assert all(r["nan_frames"] == 0 for r in sections["memory"])
    assert [r["residues"] for r in sections["scaling"]] == [30, 60]
    assert np.isfinite(sections["scaling"][0]["time_exponent"])
    assert sections["quality"] == "needs --reference MD"
    assert sections["train"][0]["frames_per_s"] > 0
    text = (out / "bench.md").read_text()
    for title in ("Speed vs MD", "Peak memory", "Cost vs protein size", "Training throughput"):
        assert title in text and title in stdout
    assert "steady_ratio and steady_frames_per_s: from frame 11 on" in text  # the columns' legend
    assert results["machine"]["cores"] >= 1 and "torch" in results["machine"]
    capability = results["machine"]["cpu_capability"]
    assert capability and f"({capability} kernels)" in text


def test_bench_times_the_neighbour_option_beside_full_attention(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--quick", "-o", str(out), "--model", str(tiny_model_path)]
    args += ["--sections", "memory,scaling", "--attention-neighbours", "8"]
    args += ["--memory-frames", "3,4", "--sizes", "20,30"]
    code, _, _ = run_cli(args, capsys)
    assert code == 0
    sections = json.loads((out / "bench.json").read_text())["sections"]
    # every size and length once per variant, each variant with its own exponent
    assert [(r["attention"], r["residues"]) for r in sections["scaling"]] == [
        ("all", 20),
        ("8", 20),
        ("all", 30),
        ("8", 30),
    ]
    assert [(r["attention"], r["frames"]) for r in sections["memory"]] == [
        ("all", 3),
        ("all", 4),
        ("8", 3),
        ("8", 4),
    ]
    assert sections["memory"][2]["vs_first"] == 1.0
    assert all("time_exponent" in r for r in sections["scaling"])


def test_the_neighbour_variant_is_the_same_weights_with_the_option(
    tiny_model_path, tmp_path, capsys
):
    path = with_attention_neighbours(tiny_model_path, 8, tmp_path / "near.safetensors")
    near, model = load_model(path), load_model(tiny_model_path)
    assert near.model.config.attention_neighbours == 8
    assert model.model.config.attention_neighbours is None
    for name, weight in model.model.state_dict().items():
        assert torch.equal(near.model.state_dict()[name], weight)
    code, _, err = run_cli(["bench", "-o", str(tmp_path), "--attention-neighbours", "0"], capsys)
    assert_one_line_error(code, err, "--attention-neighbours 0: must be at least 1")


def test_bench_rejects_unknown_sections(tmp_path, capsys):
    code, _, err = run_cli(["bench", "-o", str(tmp_path), "--sections", "speed,warp"], capsys)
    assert_one_line_error(code, err, "unknown warp")
    code, _, err = run_cli(["bench", "-o", str(tmp_path), "--sizes", "50,abc"], capsys)
    assert_one_line_error(code, err, "--sizes '50,abc': expected integers")
    code, _, err = run_cli(["bench", "-o", str(tmp_path), "--speed-replicas", "1,0"], capsys)
    assert_one_line_error(code, err, "--speed-replicas '1,0': every value must be at least 1")
    code, _, err = run_cli(["bench", "-o", str(tmp_path), "--quality-steps", "0,5"], capsys)
    assert_one_line_error(code, err, "--quality-steps '0,5': every value must be at least 1")
    code, _, err = run_cli(["bench", "-o", str(tmp_path), "--speed-repeats", "0"], capsys)
    assert_one_line_error(code, err, "--speed-repeats 0: must be at least 1")


def test_synthetic_structures_are_real_chains(tmp_path):
    path = synthetic_structure(STRUCTURES / "1ubi.pdb", 200, tmp_path / "s.pdb")
    traj = mdtraj.load(path)
    assert traj.n_residues == 200 and traj.topology.n_chains == 3
    ca = traj.xyz[0, traj.topology.select("name CA")] * 10
    chain = np.array([r.chain.index for r in traj.topology.residues])
    bonded = np.linalg.norm(np.diff(ca, axis=0), axis=1)[np.diff(chain) == 0]
    assert np.all((bonded > 3.6) & (bonded < 4.0))  # real peptide geometry within each copy
    gaps = np.linalg.norm(np.diff(ca, axis=0), axis=1)[np.diff(chain) != 0]
    assert np.all(gaps > 30)  # copies do not touch


def test_generation_defaults_come_from_the_model():
    config = TrainConfig.from_yaml(None, ["data.dt_ps=[10.0, 50.0]", "sampling.steps=8"])
    filled = with_model_defaults(GenerationSettings(frames=5), config)
    assert (filled.dt_ps, filled.steps, filled.sampler) == (50.0, 8, "ddpm")
    config = TrainConfig.from_yaml(None, ["sampling.dt_ps=20.0", "sampling.sampler=ddim"])
    filled = with_model_defaults(GenerationSettings(frames=5, steps=3, dt_ps=5.0), config)
    assert (filled.dt_ps, filled.steps, filled.sampler) == (5.0, 3, "ddim")
    assert with_model_defaults(GenerationSettings(frames=5), config).dt_ps == 20.0


def test_bench_quality_section_scores_steps_against_reference_md(tmp_path, capsys):
    """With the bundled model and the bundled 2WQG MD: one row per step count, real numbers."""
    from tests.conftest import ASSETS

    out = tmp_path / "bench"
    args = ["bench", "--quick", "-o", str(out), "--sections", "quality"]
    args += ["--structure", str(ASSETS / "demo" / "2wqg" / "2wqg.pdb")]
    code, stdout, _ = run_cli(args + ["--reference", str(ASSETS / "demo")], capsys)
    assert code == 0 and "Quality vs denoising steps" in stdout
    rows = json.loads((out / "bench.json").read_text())["sections"]["quality"]
    assert [r["steps"] for r in rows] == [2, 5]
    for row in rows:
        assert row["frames"] == 10 and row["s_per_frame"] > 0
        assert 0 <= row["validity_ca_pct"] <= 100 and 0 <= row["validity_pct"] <= 100
        assert 0 < row["rmsd_to_initial_final"] < 10


def test_steady_rate_and_ratio_by_hand():
    from starmd.bench import _steady_rate, _steady_ratio

    gen = {"steady_s_per_frame": 0.04}  # 25 frames/s per replica, all replicas in one batch
    assert _steady_rate(gen, replicas=8) == 200.0
    md_ns_per_s = 20.0 / 86400.0  # 20 ns/day
    # 200 frames/s x 50 ps = 10 ns/s, against 20 ns/day
    assert _steady_ratio(gen, 8, 50.0, md_ns_per_s) == round(10.0 / md_ns_per_s, 1)
    assert _steady_rate({"steady_s_per_frame": None}, 1) is None  # too few frames (--quick)
    assert _steady_ratio({"steady_s_per_frame": None}, 1, 50.0, md_ns_per_s) is None


def test_speed_repeats_interleave_and_report_the_median_run(tmp_path, monkeypatch):
    """Every configuration once, then again; a row is the median run (the lower middle one
    for an even count) whole, with the slowest and fastest repeat beside it."""
    import starmd.bench as bench

    calls, speeds = [], iter([3.0, 10.0, 1.0, 20.0, 2.0, 30.0, 4.0, 40.0])

    def fake_generation(settings, model, structure, work, defaults, **options):
        calls.append((model.name, options["refine"]))
        speed = next(speeds)
        return {
            "ns_per_wall_s": speed, "frames_per_s": speed, "steady_s_per_frame": None,
            "refine_ms_per_frame": speed, "polish_ms_per_frame": None, "time_to_model_s": 0.0,
            "first_frame_s": 0.0, "residues": 48,
        }  # fmt: skip

    monkeypatch.setattr(bench, "_generation", fake_generation)
    monkeypatch.setattr(bench, "_openmm_ns_per_day", lambda *args: 86400.0)  # 1 ns/s
    settings = bench.BenchSettings(out_dir=tmp_path, speed_replicas=(1,), speed_repeats=4)
    defaults = {"dt_ps": 50.0, "steps": 1, "sampler": "cm", "context": 7}
    rows = bench.bench_speed(
        settings, tmp_path / "m.safetensors", tmp_path / "x.pdb", tmp_path, defaults
    )
    assert calls == [("m.safetensors", True), ("m.safetensors", False)] * 4  # interleaved
    refined, raw = rows
    # refined runs: 3, 1, 2, 4 -> lower median 2 (its own columns); raw: 10, 20, 30, 40 -> 20
    assert (refined["ratio"], refined["refine_ms_per_frame"]) == (2.0, 2.0)
    assert (refined["ratio_min"], refined["ratio_max"], refined["repeats"]) == (1.0, 4.0, 4)
    assert (raw["ratio"], raw["ratio_min"], raw["ratio_max"]) == (20.0, 10.0, 40.0)
