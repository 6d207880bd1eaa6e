import json

import numpy as np

from starmd.evaluate.headline import (
    Headline,
    generation_provenance,
    readable_settings,
    verdicts,
)
from starmd.evaluate.report import MetricsTable, format_value


def test_exact_zero_and_angstrom_float_noise_print_as_zero():
    assert format_value(0.0, "coverage_recall") == "0"
    assert format_value(3.37e-06, "pairwise_rmsd") == "0"  # static baseline: 0 by construction
    assert format_value(-2e-5, "rmsd_lag_gap") == "0"
    assert format_value(3.37e-06, "coverage_jsd") == "3.37e-06"  # no tolerance outside A
    assert format_value(0.01234, "pairwise_rmsd") == "0.0123"
    assert format_value(12345.6, "nan_frames") == "12346"


def _table(values: dict[str, dict[str, float]]) -> MetricsTable:
    methods = ["md_reference", "md_replica", "model", "static", "anm"]
    return MetricsTable(methods, values, {}, n_proteins=3)


def test_verdict_counts_better_equal_and_worse_per_family_and_baseline():
    table = _table(
        {
            "coverage_jsd": {"md_replica": 0.5, "model": 0.6, "static": 0.83, "anm": 0.6001},
            "coverage_recall": {"md_replica": 0.4, "model": 0.3, "static": 0.0, "anm": 0.1},
            "validity_pct": {"md_replica": 90.0, "model": 80.0, "static": 100.0, "anm": np.nan},
            "pairwise_rmsd": {"md_replica": 1.0, "model": 5.0, "static": 0.0},  # no direction
        }
    )
    found = {(v.family, v.baseline): v for v in verdicts(table, "model")}
    paper = "A. STAR-MD paper"
    static, anm, replica = found[paper, "static"], found[paper, "anm"], found[paper, "md_replica"]
    assert (static.better, static.equal, static.worse) == (2, 0, 1)
    assert (anm.better, anm.equal, anm.worse) == (1, 1, 0)  # 0.6 vs 0.6001 equal at 3 s.f.
    assert (replica.better, replica.worse) == (0, 3) and replica.cue == "behind"
    assert static.cue == "ahead" and anm.cue == "ahead"


def test_provenance_comes_from_the_generation_sidecars(tmp_path):
    settings = {"frames": 100, "dt_ps": 50.0, "steps": 5, "sampler": "dpm2", "seed": 0}
    for name, seed in (("a", 0), ("b", 1)):
        sidecar = {"model": "/x/starmd-small.safetensors", "settings": settings | {"seed": seed}}
        (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    (tmp_path / "broken.json").write_text("{not json")
    found = generation_provenance(
        [tmp_path / "a.json", tmp_path / "b.json", tmp_path / "broken.json", None]
    )
    assert found["model"] == "starmd-small"
    assert found["dt (ps)"] == "50" and found["sampler"] == "dpm2" and found["seed"] == "0 / 1"
    assert generation_provenance([None]) == {}


def test_settings_read_as_text_not_python_reprs():
    rows = dict(
        readable_settings(
            {"baselines": "replica,static", "extra": {}, "proteins": ["a", "b"], "lag_ps": 100.0}
        )
    )
    assert rows == {
        "baselines": "replica, static",
        "other methods": "none",
        "proteins": "2: a, b",
        "lag of tICA, VAMP-2 and MSM": "100 ps",
    }


def test_headline_names_the_model_and_colours_the_verdict():
    table = _table({"coverage_jsd": {"md_replica": 0.5, "model": 0.6, "static": 0.83}})
    settings = {"reference": "md/", "generated_with": {"model": {"model": "starmd-small"}}}
    headline = Headline.build(table, settings, results=[])
    markdown, page = headline.to_markdown(), headline.to_html()
    assert (
        "- **model**: model starmd-small" in markdown and "| model | A. STAR-MD paper |" in markdown
    )
    assert "<td class='ahead'>ahead: 1 better / 0 equal / 0 worse</td>" in page
    assert "<td class='behind'>" in page
