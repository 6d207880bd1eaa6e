"""Evaluation of generated trajectories against reference MD (docs/metrics.md).

Metric families (definitions in ``docs/metrics.md``; each function documents its choices):

- :mod:`~starmd.evaluate.paper` — the STAR-MD paper's table (coverage, tICA correlation,
  RMSD-vs-lag / autocorrelation / VAMP-2 gaps) and :mod:`~starmd.evaluate.validity` (CA / AA
  validity);
- :mod:`~starmd.evaluate.ensemble` — AlphaFlow's ATLAS ensemble table;
- :mod:`~starmd.evaluate.dynamics` — MDGen's dynamics metrics;
- :mod:`~starmd.evaluate.health` — long-horizon health over time.

:func:`evaluate` runs them over proteins with the baselines of :mod:`~starmd.evaluate.baselines`
and writes the report (:mod:`~starmd.evaluate.report`, :mod:`~starmd.evaluate.plots`).

The package itself is callable: ``starmd.evaluate(gen_dir, reference_dir, out_dir, ...)`` is
:func:`evaluate` (the Python API's name for it is the package's name; docs/api.md).
"""

import importlib
import sys
import types

# The package's names load on first use, so that importing one light submodule (the validity
# checks that `generate` runs on every written frame) does not import every metric's
# dependencies (deeptime, scikit-learn, SciPy's statistics): seconds at start-up.
_LAZY = {
    "BASELINES": "starmd.evaluate.api",
    "evaluate": "starmd.evaluate.api",
    "plan_jobs": "starmd.evaluate.api",
    "ProteinJob": "starmd.evaluate.protein",
    "evaluate_protein": "starmd.evaluate.protein",
    "METRICS": "starmd.evaluate.report",
    "MetricsTable": "starmd.evaluate.report",
    "aggregate": "starmd.evaluate.report",
}
__all__ = sorted(_LAZY)


class _CallablePackage(types.ModuleType):
    """This package, which called runs :func:`~starmd.evaluate.api.evaluate`."""

    def __call__(self, *args, **kwargs):
        from starmd.evaluate.api import evaluate

        return evaluate(*args, **kwargs)

    def __getattr__(self, name: str):
        if name in _LAZY:
            value = getattr(importlib.import_module(_LAZY[name]), name)
            setattr(self, name, value)
            return value
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(_LAZY))


sys.modules[__name__].__class__ = _CallablePackage
