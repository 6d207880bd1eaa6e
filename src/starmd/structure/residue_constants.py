"""Residue chemistry as plain data: residue types, atom layout, torsions, idealized geometry.

Sources:
- Idealized atom positions per rigid group: the bond lengths and angles of Engh & Huber (1991),
  "Accurate bond and angle parameters for X-ray protein structure refinement", Acta Cryst. A47,
  392-400, as tabulated per rigid group in the AlphaFold 2 supplement (Jumper et al. 2021,
  Nature 596, 583; section 1.8, Table 2 conventions). Coordinates in Angstrom.
- Side-chain torsion (chi) atom definitions: IUPAC-IUB 1970 conventions, identical to the ones
  mdtraj's ``compute_chi1..4`` use.
- OXT: carboxylate C-O bond 1.25 A, placed like O but at the torsion of the C-terminus.

Atom layout ("atom15"): the AlphaFold atom14 layout (backbone N, CA, C, O then the side chain
in a fixed per-residue order, at most 14 heavy atoms for TRP) plus a 15th slot for the
C-terminal OXT, which real structures carry and MD topologies need.

Rigid groups (torsion index -> group): 0 backbone (N, CA, C, CB from the residue frame),
3 psi group (O and OXT; rotated by the psi-derived angle about CA->C), 4..7 chi1..chi4 groups.
Each group frame has its origin at the axis-end atom, x along the rotation axis and the
torsion-defining atom in the xy-plane with positive y; local positions below are in that frame.
"""

from __future__ import annotations

RESTYPES: tuple[str, ...] = tuple("ARNDCQEGHILKMFPSTWYV")
"""One-letter codes of the 20 standard amino acids; their index is ``aatype``."""

RESTYPE_3: tuple[str, ...] = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)  # fmt: skip
UNKNOWN_AATYPE = 20
"""``aatype`` of padding / unknown residues (never produced from a valid input)."""

RESTYPE_3_TO_INDEX = {name: i for i, name in enumerate(RESTYPE_3)}

# Residue names found in PDB files and MD topologies that denote a standard residue.
# Protonation variants (Amber/CHARMM/GROMACS), disulfide and selenomethionine.
RESIDUE_ALIASES: dict[str, str] = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
    "HISD": "HIS", "HISE": "HIS", "HISH": "HIS", "HIS1": "HIS", "HIS2": "HIS",
    "CYX": "CYS", "CYM": "CYS", "CYS2": "CYS",
    "ASH": "ASP", "ASPP": "ASP", "GLH": "GLU", "GLUP": "GLU", "LYN": "LYS", "LSN": "LYS",
    "MSE": "MET",
}  # fmt: skip

# Atom names that denote a layout atom under another name.
ATOM_ALIASES: dict[str, dict[str, str]] = {
    "*": {"OT1": "O", "OC1": "O", "O1": "O", "OT2": "OXT", "OC2": "OXT", "O2": "OXT"},
    "ILE": {"CD": "CD1"},
    "MET": {"SE": "SD"},  # selenomethionine
}

ATOMS_PER_RESIDUE = 15
OXT_SLOT = 14

# atom14 order per residue type (OXT goes to slot 14 for every type).
ATOM14_NAMES: dict[str, tuple[str, ...]] = {
    "ALA": ("N", "CA", "C", "O", "CB"),
    "ARG": ("N", "CA", "C", "O", "CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"),
    "ASN": ("N", "CA", "C", "O", "CB", "CG", "OD1", "ND2"),
    "ASP": ("N", "CA", "C", "O", "CB", "CG", "OD1", "OD2"),
    "CYS": ("N", "CA", "C", "O", "CB", "SG"),
    "GLN": ("N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "NE2"),
    "GLU": ("N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "OE2"),
    "GLY": ("N", "CA", "C", "O"),
    "HIS": ("N", "CA", "C", "O", "CB", "CG", "ND1", "CD2", "CE1", "NE2"),
    "ILE": ("N", "CA", "C", "O", "CB", "CG1", "CG2", "CD1"),
    "LEU": ("N", "CA", "C", "O", "CB", "CG", "CD1", "CD2"),
    "LYS": ("N", "CA", "C", "O", "CB", "CG", "CD", "CE", "NZ"),
    "MET": ("N", "CA", "C", "O", "CB", "CG", "SD", "CE"),
    "PHE": ("N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"),
    "PRO": ("N", "CA", "C", "O", "CB", "CG", "CD"),
    "SER": ("N", "CA", "C", "O", "CB", "OG"),
    "THR": ("N", "CA", "C", "O", "CB", "OG1", "CG2"),
    "TRP": (
        "N",
        "CA",
        "C",
        "O",
        "CB",
        "CG",
        "CD1",
        "CD2",
        "NE1",
        "CE2",
        "CE3",
        "CZ2",
        "CZ3",
        "CH2",
    ),
    "TYR": ("N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"),
    "VAL": ("N", "CA", "C", "O", "CB", "CG1", "CG2"),
}

ELEMENTS = {"N": "N", "C": "C", "O": "O", "S": "S"}
"""Element of a heavy atom = first letter of its PDB name for all standard residues."""

# The 7 torsions, in this order everywhere in starmd.
TORSION_NAMES: tuple[str, ...] = ("omega", "phi", "psi", "chi1", "chi2", "chi3", "chi4")

CHI_ATOMS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "ALA": (),
    "ARG": (
        ("N", "CA", "CB", "CG"),
        ("CA", "CB", "CG", "CD"),
        ("CB", "CG", "CD", "NE"),
        ("CG", "CD", "NE", "CZ"),
    ),
    "ASN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "ASP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "CYS": (("N", "CA", "CB", "SG"),),
    "GLN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLY": (),
    "HIS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")),
    "ILE": (("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")),
    "LEU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "LYS": (
        ("N", "CA", "CB", "CG"),
        ("CA", "CB", "CG", "CD"),
        ("CB", "CG", "CD", "CE"),
        ("CG", "CD", "CE", "NZ"),
    ),
    "MET": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")),
    "PHE": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "PRO": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")),
    "SER": (("N", "CA", "CB", "OG"),),
    "THR": (("N", "CA", "CB", "OG1"),),
    "TRP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "TYR": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "VAL": (("N", "CA", "CB", "CG1"),),
}

# chi angles whose atoms are symmetric under a rotation by pi (OD1/OD2, OE1/OE2, ring flips):
# chi and chi + pi describe the same structure up to renaming.
CHI_PI_PERIODIC: dict[str, tuple[int, ...]] = {"ASP": (1,), "GLU": (2,), "PHE": (1,), "TYR": (1,)}

# (atom name, rigid group, local position in Angstrom). Group 0 = backbone frame,
# 3 = psi group, 4..7 = chi1..chi4 groups (see module docstring).
RIGID_GROUP_ATOMS: dict[str, tuple[tuple[str, int, tuple[float, float, float]], ...]] = {
    "ALA": (
        ("N", 0, (-0.525, 1.363, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.526, 0.000, 0.000)),
        ("CB", 0, (-0.529, -0.774, -1.205)),
        ("O", 3, (0.627, 1.062, 0.000)),
    ),
    "ARG": (
        ("N", 0, (-0.524, 1.362, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.525, 0.000, 0.000)),
        ("CB", 0, (-0.524, -0.778, -1.209)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("CG", 4, (0.616, 1.390, 0.000)),
        ("CD", 5, (0.564, 1.414, 0.000)),
        ("NE", 6, (0.539, 1.357, 0.000)),
        ("NH1", 7, (0.206, 2.301, 0.000)),
        ("NH2", 7, (2.078, 0.978, 0.000)),
        ("CZ", 7, (0.758, 1.093, 0.000)),
    ),
    "ASN": (
        ("N", 0, (-0.536, 1.357, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.526, 0.000, 0.000)),
        ("CB", 0, (-0.531, -0.787, -1.200)),
        ("O", 3, (0.625, 1.062, 0.000)),
        ("CG", 4, (0.584, 1.399, 0.000)),
        ("ND2", 5, (0.593, -1.188, 0.001)),
        ("OD1", 5, (0.633, 1.059, 0.000)),
    ),
    "ASP": (
        ("N", 0, (-0.525, 1.362, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.527, 0.000, 0.000)),
        ("CB", 0, (-0.526, -0.778, -1.208)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("CG", 4, (0.593, 1.398, 0.000)),
        ("OD1", 5, (0.610, 1.091, 0.000)),
        ("OD2", 5, (0.592, -1.101, -0.003)),
    ),
    "CYS": (
        ("N", 0, (-0.522, 1.362, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.524, 0.000, 0.000)),
        ("CB", 0, (-0.519, -0.773, -1.212)),
        ("O", 3, (0.625, 1.062, 0.000)),
        ("SG", 4, (0.728, 1.653, 0.000)),
    ),
    "GLN": (
        ("N", 0, (-0.526, 1.361, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.526, 0.000, 0.000)),
        ("CB", 0, (-0.525, -0.779, -1.207)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("CG", 4, (0.615, 1.393, 0.000)),
        ("CD", 5, (0.587, 1.399, 0.000)),
        ("NE2", 6, (0.593, -1.189, -0.001)),
        ("OE1", 6, (0.634, 1.060, 0.000)),
    ),
    "GLU": (
        ("N", 0, (-0.528, 1.361, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.526, 0.000, 0.000)),
        ("CB", 0, (-0.526, -0.781, -1.207)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("CG", 4, (0.615, 1.392, 0.000)),
        ("CD", 5, (0.600, 1.397, 0.000)),
        ("OE1", 6, (0.607, 1.095, 0.000)),
        ("OE2", 6, (0.589, -1.104, -0.001)),
    ),
    "GLY": (
        ("N", 0, (-0.572, 1.337, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.517, 0.000, 0.000)),
        ("O", 3, (0.626, 1.062, 0.000)),
    ),
    "HIS": (
        ("N", 0, (-0.527, 1.360, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.525, 0.000, 0.000)),
        ("CB", 0, (-0.525, -0.778, -1.208)),
        ("O", 3, (0.625, 1.063, 0.000)),
        ("CG", 4, (0.600, 1.370, 0.000)),
        ("CD2", 5, (0.889, -1.021, 0.003)),
        ("ND1", 5, (0.744, 1.160, 0.000)),
        ("CE1", 5, (2.030, 0.851, 0.002)),
        ("NE2", 5, (2.145, -0.466, 0.004)),
    ),
    "ILE": (
        ("N", 0, (-0.493, 1.373, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.527, 0.000, 0.000)),
        ("CB", 0, (-0.536, -0.793, -1.213)),
        ("O", 3, (0.627, 1.062, 0.000)),
        ("CG1", 4, (0.534, 1.437, 0.000)),
        ("CG2", 4, (0.540, -0.785, -1.199)),
        ("CD1", 5, (0.619, 1.391, 0.000)),
    ),
    "LEU": (
        ("N", 0, (-0.520, 1.363, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.525, 0.000, 0.000)),
        ("CB", 0, (-0.522, -0.773, -1.214)),
        ("O", 3, (0.625, 1.063, 0.000)),
        ("CG", 4, (0.678, 1.371, 0.000)),
        ("CD1", 5, (0.530, 1.430, 0.000)),
        ("CD2", 5, (0.535, -0.774, 1.200)),
    ),
    "LYS": (
        ("N", 0, (-0.526, 1.362, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.526, 0.000, 0.000)),
        ("CB", 0, (-0.524, -0.778, -1.208)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("CG", 4, (0.619, 1.390, 0.000)),
        ("CD", 5, (0.559, 1.417, 0.000)),
        ("CE", 6, (0.560, 1.416, 0.000)),
        ("NZ", 7, (0.554, 1.387, 0.000)),
    ),
    "MET": (
        ("N", 0, (-0.521, 1.364, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.525, 0.000, 0.000)),
        ("CB", 0, (-0.523, -0.776, -1.210)),
        ("O", 3, (0.625, 1.062, 0.000)),
        ("CG", 4, (0.613, 1.391, 0.000)),
        ("SD", 5, (0.703, 1.695, 0.000)),
        ("CE", 6, (0.320, 1.786, 0.000)),
    ),
    "PHE": (
        ("N", 0, (-0.518, 1.363, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.524, 0.000, 0.000)),
        ("CB", 0, (-0.525, -0.776, -1.212)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("CG", 4, (0.607, 1.377, 0.000)),
        ("CD1", 5, (0.709, 1.195, 0.000)),
        ("CD2", 5, (0.706, -1.196, 0.000)),
        ("CE1", 5, (2.102, 1.198, 0.000)),
        ("CE2", 5, (2.098, -1.201, 0.000)),
        ("CZ", 5, (2.794, -0.003, -0.001)),
    ),
    # CD's angle is widened by 2 degrees relative to Engh & Huber so that the
    # idealized ring closes on N (AlphaFold's adjustment). It closes only where chi1 and chi2
    # sit on one of the ring's puckers, so the rebuild closes it itself (geometry.py).
    "PRO": (
        ("N", 0, (-0.566, 1.351, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.527, 0.000, 0.000)),
        ("CB", 0, (-0.546, -0.611, -1.293)),
        ("O", 3, (0.621, 1.066, 0.000)),
        ("CG", 4, (0.382, 1.445, 0.000)),
        ("CD", 5, (0.477, 1.424, 0.000)),
    ),
    "SER": (
        ("N", 0, (-0.529, 1.360, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.525, 0.000, 0.000)),
        ("CB", 0, (-0.518, -0.777, -1.211)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("OG", 4, (0.503, 1.325, 0.000)),
    ),
    "THR": (
        ("N", 0, (-0.517, 1.364, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.526, 0.000, 0.000)),
        ("CB", 0, (-0.516, -0.793, -1.215)),
        ("O", 3, (0.626, 1.062, 0.000)),
        ("CG2", 4, (0.550, -0.718, -1.228)),
        ("OG1", 4, (0.472, 1.353, 0.000)),
    ),
    "TRP": (
        ("N", 0, (-0.521, 1.363, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.525, 0.000, 0.000)),
        ("CB", 0, (-0.523, -0.776, -1.212)),
        ("O", 3, (0.627, 1.062, 0.000)),
        ("CG", 4, (0.609, 1.370, 0.000)),
        ("CD1", 5, (0.824, 1.091, 0.000)),
        ("CD2", 5, (0.854, -1.148, -0.005)),
        ("CE2", 5, (2.186, -0.678, -0.007)),
        ("CE3", 5, (0.622, -2.530, -0.007)),
        ("NE1", 5, (2.140, 0.690, -0.004)),
        ("CH2", 5, (3.028, -2.890, -0.013)),
        ("CZ2", 5, (3.283, -1.543, -0.011)),
        ("CZ3", 5, (1.715, -3.389, -0.011)),
    ),
    "TYR": (
        ("N", 0, (-0.522, 1.362, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.524, 0.000, 0.000)),
        ("CB", 0, (-0.522, -0.776, -1.213)),
        ("O", 3, (0.627, 1.062, 0.000)),
        ("CG", 4, (0.607, 1.382, 0.000)),
        ("CD1", 5, (0.716, 1.195, 0.000)),
        ("CD2", 5, (0.713, -1.194, -0.001)),
        ("CE1", 5, (2.107, 1.200, -0.002)),
        ("CE2", 5, (2.104, -1.201, -0.003)),
        ("OH", 5, (4.168, -0.002, -0.005)),
        ("CZ", 5, (2.791, -0.001, -0.003)),
    ),
    "VAL": (
        ("N", 0, (-0.494, 1.373, 0.000)),
        ("CA", 0, (0.000, 0.000, 0.000)),
        ("C", 0, (1.527, 0.000, 0.000)),
        ("CB", 0, (-0.533, -0.795, -1.213)),
        ("O", 3, (0.627, 1.062, 0.000)),
        ("CG1", 4, (0.540, 1.429, 0.000)),
        ("CG2", 4, (0.533, -0.776, 1.203)),
    ),
}

OXT_LOCAL_POSITION = (0.627, 1.062, 0.000)
"""OXT in its own psi-group frame (rotated to the C-terminal torsion); like O, C-O 1.23-1.25 A."""

PEPTIDE_BREAK_A = 2.0
"""A C(i)-N(i+1) distance longer than this (Angstrom; the bond is 1.33) is a break of the
peptide bond: the evaluation's all-atom check, the rollout's written-frame count and simulate's
refusal of a gapped chain use this one limit."""

BACKBONE_ATOMS = ("N", "CA", "C", "O")
