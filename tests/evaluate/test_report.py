import json
import re

import numpy as np

from starmd.evaluate.ensemble import jaccard
from starmd.evaluate.report import aggregate


def _write_protein(out_dir, name, scores):
    folder = out_dir / "proteins" / name
    folder.mkdir(parents=True)
    results = {"protein": name, "settings": {"ensemble_frames": 250, "seed": 0}}
    results["methods"] = {"model": scores}
    (folder / "results.json").write_text(json.dumps(results))


def test_jaccard_of_two_empty_sets_is_undefined():
    assert np.isnan(jaccard(set(), set()))
    assert jaccard(set(), {1}) == 0.0 and jaccard({1, 2}, {2, 3}) == 1 / 3


def test_proteins_with_two_empty_sets_are_left_out_of_the_median_and_counted(tmp_path):
    sets = {"weak_contacts_n_md": 4, "weak_contacts_n": 2}
    _write_protein(tmp_path, "a", {"weak_contacts_jaccard": 0.2} | sets)
    _write_protein(tmp_path, "b", {"weak_contacts_jaccard": 0.4} | sets)
    empty = {"weak_contacts_n_md": 0, "weak_contacts_n": 0}
    _write_protein(tmp_path, "c", {"weak_contacts_jaccard": None} | empty)
    table = aggregate(tmp_path)
    assert np.isclose(table.values["weak_contacts_jaccard"]["model"], 0.3)  # not 0.4 (1.0 in)
    assert table.na_counts["weak_contacts_jaccard"]["model"] == 1
    assert table.cell("weak_contacts_jaccard", "model") == "0.3 (1 N/A)"
    note = "weak contacts Jaccard / model: 1 of 3 protein(s) left out of the median"
    assert any(note in n for n in table.left_out)
    assert note in table.to_markdown()


def test_a_label_with_bars_keeps_its_row_in_one_cell_per_column(tmp_path):
    _write_protein(tmp_path, "a", {"decorrelation_log_ratio": 0.1, "weak_contacts_jaccard": 0.2})
    markdown = aggregate(tmp_path).to_markdown()
    (row,) = [line for line in markdown.splitlines() if "log10 ratio" in line]
    assert "decorrelation \\|log10 ratio\\| to MD" in row
    header = next(line for line in markdown.splitlines() if line.startswith("| metric"))
    cells = re.split(r"(?<!\\)\|", row)
    assert len(cells) == len(re.split(r"(?<!\\)\|", header))
