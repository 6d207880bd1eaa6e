"""Reference MD with OpenMM (``starmd simulate``) and the bundled training corpus.

``simulate`` cleans a structure with PDBFixer, runs minimization, equilibration and production
replicas (resumable from portable XML states) and writes the ATLAS layout that
``starmd prepare`` reads: ``{name}.pdb``, ``{name}_prod_R{i}_fit.xtc``, ``{name}.json``.
``relax_trajectory`` (``starmd relax``, ``generate --relax``) minimizes the frames of any
trajectory under restraints, in the same force fields.
OpenMM is imported lazily, inside the functions, and so is :mod:`starmd.structure.io` (which
brings torch): a replica's worker process starts without either.
"""

from starmd.simulate.engine import simulate
from starmd.simulate.protocols import PROTOCOLS, Protocol, get_protocol
from starmd.simulate.relax import RelaxSettings, relax_trajectory
from starmd.simulate.replica import ReplicaProgress, check_frame

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "RelaxSettings",
    "ReplicaProgress",
    "check_frame",
    "get_protocol",
    "relax_trajectory",
    "simulate",
]
