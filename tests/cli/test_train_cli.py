"""starmd train's screen: Lightning's INFO lines and two internal warnings are hidden."""

import logging
import warnings

from starmd.cli.train import quiet_lightning


def test_lightning_clutter_is_hidden_and_other_warnings_are_not():
    levels = {n: logging.getLogger(n).level for n in ("lightning.pytorch", "lightning.fabric")}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_lightning()
            warnings.warn(
                "`isinstance(treespec, LeafSpec)` is deprecated, use TreeSpec", stacklevel=2
            )
            warnings.warn(
                "The number of training batches (4) is smaller than the logging interval "
                "Trainer(log_every_n_steps=10).",
                stacklevel=2,
            )
            warnings.warn("a warning that matters", stacklevel=2)
        assert [str(w.message) for w in caught] == ["a warning that matters"]
        assert logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
