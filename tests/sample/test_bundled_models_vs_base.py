"""Both bundled models have learned each part of their prediction: on windows of 2WQG's MD
(a validation protein neither was trained on), with the same noise draw, the trained weights
lower the translation and backbone-FAPE losses of their untrained base (whose update starts at
zero, so it predicts the Gaussian posterior base itself).

Bounds sit above the measured ratios (trained / base, this batch): translation 0.671
(starmd-small version 5; session 29) and 0.757 (starmd-small-fast, session 32's student of
version 5 with the torsion energy score; the session-29 student 0.784), backbone FAPE 0.316
and 0.330 (0.328). A translation update switched off gives exactly 1;
reversed, 1.68 and 1.86; doubled, 1.10 and 1.55 (measured on earlier versions of both models).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from starmd.modelfile import bundled_model_path, load_model

DEMO_MD = Path(str(resources.files("starmd") / "assets" / "demo" / "2wqg"))
MAX_RATIO = {
    "starmd-small": {"trans": 0.85, "backbone_fape": 0.5},
    "starmd-small-fast": {"trans": 0.95, "backbone_fape": 0.5},
}


@pytest.fixture(scope="module")
def md_windows(tmp_path_factory):
    from starmd.data.prepare import prepare

    root = tmp_path_factory.mktemp("2wqg_data")
    prepare(DEMO_MD, root, fractions=(0, 1, 0))
    return root


@pytest.mark.parametrize("name", sorted(MAX_RATIO))
def test_bundled_model_beats_its_base_on_translation_and_backbone_fape(name, md_windows):
    from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
    from starmd.train.module import losses_vs_base

    loaded = load_model(bundled_model_path(name))
    spec = WindowSpec(window=loaded.config.data.window, dt_ps=(10.0, 50.0), crop=64)
    data = TrajectoryWindowDataset(md_windows, "val", spec, samples_per_epoch=8, seed=3)
    losses = losses_vs_base(loaded, collate_windows([data[i] for i in range(8)]))
    for term, bound in MAX_RATIO[name].items():
        ratio = losses["trained"][term] / losses["base"][term]
        assert ratio < bound, (name, term, ratio, losses)
