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

import sys
import types

from starmd.evaluate.api import BASELINES, evaluate, plan_jobs
from starmd.evaluate.protein import ProteinJob, evaluate_protein
from starmd.evaluate.report import METRICS, MetricsTable, aggregate

__all__ = [
    "BASELINES",
    "METRICS",
    "MetricsTable",
    "ProteinJob",
    "aggregate",
    "evaluate",
    "evaluate_protein",
    "plan_jobs",
]


class _CallablePackage(types.ModuleType):
    """This package, which called runs :func:`~starmd.evaluate.api.evaluate`."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
