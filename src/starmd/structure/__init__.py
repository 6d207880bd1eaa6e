"""Protein geometry: rigid residue frames, torsions, residue chemistry, topology and I/O."""

from starmd.structure.rigid import Rigid, quat_to_rotmat, rotmat_to_quat

__all__ = ["Rigid", "quat_to_rotmat", "rotmat_to_quat"]
