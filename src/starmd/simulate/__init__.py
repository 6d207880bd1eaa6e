"""Reference MD with OpenMM (``starmd simulate``) and the bundled training corpus.

``simulate`` cleans a structure with PDBFixer, runs minimization, equilibration and production
replicas (resumable from portable XML states) and writes the ATLAS layout that
``starmd prepare`` reads: ``{name}.pdb``, ``{name}_prod_R{i}_fit.xtc``, ``{name}.json``.
OpenMM is imported lazily, inside the functions.
"""

from starmd.simulate.engine import ReplicaProgress, check_frame, simulate
from starmd.simulate.protocols import PROTOCOLS, Protocol, get_protocol

__all__ = ["PROTOCOLS", "Protocol", "ReplicaProgress", "check_frame", "get_protocol", "simulate"]
