"""Refinement of each generated frame before it enters the KV cache: peptide geometry, clashes and
Ramachandran outliers.

The denoiser's clean prediction (residue frames + torsions) is adjusted by a bounded number of
gradient steps on a small energy, so that an error of one frame is not fed back into the history
that the next frames attend to.

Parametrisation: every residue is a rigid body (its heavy atoms rebuilt once from the predicted
frame and torsions). Residue ``i`` moves by a translation ``s_i`` and a rotation vector ``w_i``,
both in its own frame: ``R_i' = R_i exp(w_i)``, ``x_i' = x_i + R_i s_i``. The energy depends only
on distances and a dihedral, so its gradient with respect to these local parameters is invariant
under a global rotation and translation, and the refined frames are exactly as equivariant as
the input (to float rounding).

Energy per replica (lengths in Angstrom, angles in degrees, each violation in units of its
spread so the terms are comparable):

- peptide bond C(i)-N(i+1): flat-bottomed square beyond ``bond_tolerance_sd`` standard
  deviations of Engh & Huber's value (:data:`~starmd.structure.local_geometry.PEPTIDE_BOND_A`);
- the angles CA(i)-C(i)-N(i+1) and C(i)-N(i+1)-CA(i+1), beyond ``angle_tolerance_sd``, as the
  1-3 distances CA(i)-N(i+1) and C(i)-CA(i+1) that fix them (law of cosines; an approximation
  that is exact while the peptide bond has its literature length); before a proline also
  C(i)-CD(i+1) (:data:`~starmd.structure.local_geometry.PROLINE_C_CD_A`, the C-N-CD angle: the
  ring comes with residue i + 1, C(i) with residue i, and nothing else keeps them apart);
- omega, beyond ``omega_tolerance_deg`` of trans (of cis before a proline predicted cis);
- Ramachandran outliers: for every non-glycine residue bonded on both sides, the signed distance
  of its (phi, psi) to the 99% region of the evaluation's reference histogram
  (:func:`~starmd.structure.ramachandran.ramachandran_distance_deg`), flat-bottomed at
  ``rama_margin_deg`` inside the region and in units of ``rama_sd_deg``, times ``rama_weight``
  (0 = off). phi and psi depend on the frames of residues ``i - 1``, ``i`` and ``i + 1``, so
  the rigid moves change them;
- heavy-atom overlaps between residues at least two apart (or in different chains), the
  evaluation's clash criterion (Bondi radii, polar allowance for N/O pairs, SG-SG exempt) with
  ``clash_overlap_a`` allowed (MolProbity's clash is 0.4 A): pairs are listed once, from the
  input, within ``CLASH_SEARCH_MARGIN_A`` of overlapping (no pair list update: moves are small);
- a restraint to the prediction: ``(|s_i|^2 + (LEVER_A |w_i|)^2) / restraint_a^2``;
- a restraint to the prediction's backbone dihedrals: across every peptide bond, psi of residue
  ``i`` and phi of residue ``i + 1`` (measured on the predicted atoms, however stretched the
  bond) each cost ``dihedral_weight (2 - 2 cos(delta)) / dihedral_sd^2`` (about
  ``(delta / dihedral_sd)^2``). A junction's six rigid-body degrees of freedom are its bond
  length, two angles, omega, psi and phi, so the violations can be fixed without turning psi
  or phi; without this term the descent turns them freely, and on the validation proteins the
  written frames' backbone dihedrals spread wider than the network's own (docs/model_card.md,
  "Session 34").

The within-residue geometry is ideal by construction (atoms are rebuilt from frames), so the
bonds and angles that need fixing are those between residues, which depend on the frames of
residues ``i`` and ``i + 1`` only. The gradient is assembled in closed form (forces on atoms
from each term, then per residue the summed force and the torque through the right Jacobian of
the exponential map; :func:`_energy_and_grad`, equal to autograd's to rounding). Steps are
Adam's (first and second moment estimates) with every element's step clamped to ``step_a``
(translations) or ``step_rad`` (rotations) and the step size decaying linearly to 0, so the
rigid moves displace no atom by more than :func:`max_displacement_a` in all (the carbonyl O
then follows the re-measured psi). On the CPU the steps run as one compiled loop
(:mod:`starmd.sample.refine_kernel`: the same steps in float64), elsewhere as tensor
operations. A replica without any violation gets zero gradients and is not moved at all. After
the steps, the backbone torsions (omega, phi, psi) are re-derived from the refined backbone
where the peptide bond exists, so that the cached torsions (and the carbonyl O, placed by psi)
agree with the refined frames; side-chain torsions are the model's.

Approximation: residues move rigidly (no side-chain torsion is changed), so a clash is relieved
by moving the residues involved, against the restraint and the peptide terms; a Ramachandran
outlier is moved towards the allowed region by turning residues, against the same terms (there
is no torsion-space move that turns phi or psi alone).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from starmd.diffusion.so3 import exp_map
from starmd.structure import geometry
from starmd.structure import residue_constants as rc
from starmd.structure.checks import CA_BREAK_A, CA_CLASH_A, ca_health
from starmd.structure.local_geometry import (
    C_N_CA_DEG,
    CA_C_N_DEG,
    CLASH_OVERLAP_A,
    PEPTIDE_BOND_A,
    POLAR_ALLOWANCE_A,
    PROLINE,
    PROLINE_C_CD_A,
    PROLINE_CD_SLOT,
    VDW_RADIUS_A,
    atom15_tables,
    distance,
    peptide_bonds,
)
from starmd.structure.ramachandran import (
    RAMA_BIN_DEG,
    allowed_grid,
    distance_grid,
    ramachandran_allowed,
    ramachandran_distance_deg,
    ramachandran_distance_slope,
)
from starmd.structure.residue_constants import PEPTIDE_BREAK_A
from starmd.structure.rigid import Rigid

LEVER_A = 2.0
"""Typical distance (Angstrom) of a residue's atoms from its CA: a rotation by ``w`` radians
moves them by about ``LEVER_A * w``."""
OMEGA_SD_DEG = 6.0
"""Spread of omega in MD (implicit-solvent frames of the corpus: about 6 degrees)."""
CLASH_SD_A = 0.1
"""Unit of an overlap in the energy (Angstrom)."""

CLASH_SEARCH_MARGIN_A = 1.0
"""Atom pairs closer than contact plus this margin at the start are watched for overlaps."""
PEPTIDE_RANGE_A = (1.2, 1.5)
"""The issue's acceptable peptide-bond range, reported per frame."""
GLYCINE = rc.RESTYPE_3.index("GLY")


def _dihedral_targets() -> torch.Tensor:
    """``(6, 4, 3)`` 0/1: which backbone atom of a junction ``i -> i + 1`` (N, CA, C of residue
    ``i``, then of ``i + 1``) is point ``k`` of dihedral ``d`` (omega, phi of ``i + 1``, psi of
    ``i``): the points of the ``points`` stacks in :func:`_energy_and_grad`."""
    members = (
        (1, 2, 3, 4),  # omega: CA(i), C(i), N(i+1), CA(i+1)
        (2, 3, 4, 5),  # phi(i+1): C(i), N(i+1), CA(i+1), C(i+1)
        (0, 1, 2, 3),  # psi(i): N(i), CA(i), C(i), N(i+1)
    )
    targets = torch.zeros(6, 4, 3)
    for d, atoms in enumerate(members):
        for k, t in enumerate(atoms):
            targets[t, k, d] = 1.0
    return targets


_DIHEDRAL_TARGETS = _dihedral_targets()


@dataclass(frozen=True)
class RefineSettings:
    """How hard and how long a frame is refined (defaults measured on the corpus's validation
    proteins; docs/model_card.md).

    Attributes:
        iterations: gradient steps per frame (the cost knob; 0 = off).
        step_a: largest step of a residue's translation per iteration, Angstrom.
        step_rad: largest step of a residue's rotation per iteration, radians.
        restraint_a: displacement (Angstrom) that costs as much as one spread of a violation.
        bond_tolerance_sd: free range of the peptide bond, in Engh & Huber standard deviations.
        angle_tolerance_sd: free range of the two junction angles, idem.
        omega_tolerance_deg: free range of omega around trans (or cis), degrees.
        clash_overlap_a: van der Waals overlap allowed between atoms (Angstrom).
        rama_weight: weight of the Ramachandran term (0 = off).
        rama_sd_deg: distance outside the allowed (phi, psi) region that costs one unit.
        rama_margin_deg: the term starts this far inside the region's edge, degrees (so that a
            pulled residue lands inside the evaluation's bin, not on its edge).
        dihedral_weight: weight of the restraint keeping the prediction's psi and phi (0 = off).
        dihedral_sd_deg: change of one of them (degrees) that costs ``dihedral_weight``.
    """

    iterations: int = 40
    step_a: float = 0.1
    step_rad: float = 0.04
    restraint_a: float = 1.0
    bond_tolerance_sd: float = 4.0
    angle_tolerance_sd: float = 3.0
    omega_tolerance_deg: float = 15.0
    clash_overlap_a: float = 0.3
    rama_weight: float = 1.0
    rama_sd_deg: float = 1.0
    rama_margin_deg: float = 4.0
    dihedral_weight: float = 1.0
    dihedral_sd_deg: float = 10.0

    def __post_init__(self) -> None:
        # the spreads divide the energy's terms: zero or negative ones would give inf or a
        # term that rewards the violation
        spreads = ("step_a", "step_rad", "restraint_a", "rama_sd_deg", "dihedral_sd_deg")
        bad = [n for n in spreads if not getattr(self, n) > 0]
        bad += [n for n in ("iterations", "rama_weight", "dihedral_weight") if getattr(self, n) < 0]
        if bad:
            raise ValueError(
                f"RefineSettings: {', '.join(bad)} out of range (spreads and steps must be > 0, "
                "iterations and weights >= 0)"
            )


def max_displacement_a(settings: RefineSettings) -> float:
    """Upper bound (Angstrom) on how far refinement moves any atom: the clamped steps summed
    over the linearly decaying schedule, for the translation (3 components) and the rotation
    (angle times the atom's distance from its CA, at most 7 A in a protein residue)."""
    total = sum(1.0 - k / settings.iterations for k in range(settings.iterations))
    return total * math.sqrt(3) * (settings.step_a + 7.0 * settings.step_rad)


@dataclass(frozen=True)
class RefineTopology:
    """Per-protein tables of the refinement, built once per rollout.

    Attributes:
        aatype: ``(L,)``; atom_mask: ``(L, 15)`` rebuilt atoms; oxt_mask: ``(L,)``.
        bonded: ``(L-1,)`` junction i-(i+1) is a peptide bond.
        linked_prev: ``(L,)`` residue i is bonded to i-1 (``bonded`` shifted).
        bond_mean, bond_sd: ``(L-1,)`` literature C-N length (Angstrom), proline-aware.
        pre_proline: ``(L-1,)`` residue i+1 is a proline (cis omega allowed).
        radius, polar, sulfur_gamma: ``(L, 15)`` per atom.
        residue_index, chain_index: ``(L,)``, for the sequence separation of clashes.
        rama: ``(L,)`` residues judged on the Ramachandran plot (non-glycine, bonded to both
            neighbours; the evaluation's set).
    """

    aatype: torch.Tensor
    atom_mask: torch.Tensor
    oxt_mask: torch.Tensor
    bonded: torch.Tensor
    linked_prev: torch.Tensor
    bond_mean: torch.Tensor
    bond_sd: torch.Tensor
    pre_proline: torch.Tensor
    radius: torch.Tensor
    polar: torch.Tensor
    sulfur_gamma: torch.Tensor
    residue_index: torch.Tensor
    chain_index: torch.Tensor
    rama: torch.Tensor

    @functools.cached_property
    def clash_atoms(self) -> tuple[np.ndarray, ...]:
        """The rebuilt atoms' flat ``(residue, slot)`` indices and, per atom, what the clash
        search takes (residue and chain index, sulfur, radius, polar): made once per rollout,
        not once per frame."""
        slots = self.atom_mask.shape[-1]
        present = self.atom_mask.reshape(-1).nonzero()[:, 0].cpu().numpy()
        residue = present // slots

        def per_atom(table: torch.Tensor, dtype=None) -> np.ndarray:
            values = table.cpu().numpy()
            values = values.reshape(-1)[present] if values.ndim == 2 else values[residue]
            return np.ascontiguousarray(values, dtype=dtype)

        return (
            present,
            per_atom(self.residue_index, np.int64),
            per_atom(self.chain_index, np.int64),
            per_atom(self.sulfur_gamma, np.bool_),
            per_atom(self.radius, np.float64),
            per_atom(self.polar, np.bool_),
        )

    def junction_index(self, replicas: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Per peptide junction of ``replicas`` copies: replica, residue ``i``, the flat atom
        offsets of residues ``i`` and ``i + 1``, and whether ``i + 1`` is a proline (made once
        per batch size and device)."""
        memo = self.__dict__.setdefault("_junction_memo", {})
        key = (replicas, str(device))
        if key not in memo:
            slots = self.atom_mask.shape[-1]
            l = self.atom_mask.shape[0]
            junction = torch.nonzero(self.bonded)[:, 0].to(device)  # (J,)
            replica = torch.arange(replicas, device=device).repeat_interleave(len(junction))
            i = junction.repeat(replicas)
            base = (replica * l + i) * slots
            memo[key] = (replica, i, base, base + slots, self.pre_proline.to(device)[i])
        return memo[key]


def refine_topology(
    aatype: torch.Tensor,
    residue_index: torch.Tensor,
    chain_index: torch.Tensor,
    oxt_mask: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> RefineTopology:
    """The tables of one protein: ``aatype``, ``residue_index`` (segment index: gaps at chain
    breaks), ``chain_index``, ``oxt_mask``, all ``(L,)``."""
    device = aatype.device
    present = torch.ones_like(aatype, dtype=torch.bool)
    bonded = peptide_bonds(residue_index, chain_index, present)
    proline = aatype[1:] == PROLINE
    tables = {k: torch.as_tensor(v, device=device)[aatype] for k, v in atom15_tables().items()}
    return RefineTopology(
        aatype=aatype,
        atom_mask=geometry.rebuilt_atom_mask(aatype, oxt_mask),
        oxt_mask=oxt_mask,
        bonded=bonded,
        linked_prev=torch.cat([bonded.new_zeros(1), bonded]),
        bond_mean=torch.where(proline, PEPTIDE_BOND_A[1][0], PEPTIDE_BOND_A[0][0]).to(dtype),
        bond_sd=torch.where(proline, PEPTIDE_BOND_A[1][1], PEPTIDE_BOND_A[0][1]).to(dtype),
        pre_proline=proline,
        radius=tables["radius"].to(dtype),
        polar=tables["polar"],
        sulfur_gamma=tables["sulfur_gamma"],
        residue_index=residue_index,
        chain_index=chain_index,
        rama=(aatype != GLYCINE)
        & torch.cat([bonded.new_zeros(1), bonded])
        & torch.cat([bonded, bonded.new_zeros(1)]),
    )


@dataclass(frozen=True)
class _DistanceRestraints:
    """Atom pairs whose distance must lie in ``[low, high]`` (Angstrom): flat indices into the
    ``(B * L * 15)`` atoms, bounds and the unit ``sd`` of a violation, and the replica of each
    pair."""

    first: torch.Tensor
    second: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    sd: torch.Tensor
    replica: torch.Tensor

    @staticmethod
    def cat(parts: list[_DistanceRestraints]) -> _DistanceRestraints:
        return _DistanceRestraints(
            *(
                torch.cat([getattr(p, k) for p in parts])
                for k in _DistanceRestraints.__annotations__
            )
        )


def _clash_pairs(
    atoms: torch.Tensor, topology: RefineTopology, overlap_a: float, margin_a: float
) -> _DistanceRestraints:
    """Atom pairs of residues at least two apart (or in different chains) closer than their
    clash limit plus ``margin_a`` in ``atoms (B, L, 15, 3)``, each to stay beyond that limit;
    found on a grid of cells (the polish's search,
    :func:`starmd.structure.polish_kernel.watched_pairs`, with no pair of consecutive residues),
    so the cost follows the contacts."""
    from starmd.structure.polish_kernel import watched_pairs

    b, l, slots = atoms.shape[:3]
    present, residue_index, chain_index, sulfur, radius, polar = topology.clash_atoms
    xyz = atoms.detach().reshape(b, l * slots, 3)[:, torch.from_numpy(present).to(atoms.device)]
    frame, first, second, limit, _, _ = watched_pairs(
        np.ascontiguousarray(xyz.cpu().numpy(), dtype=np.float64),
        2 * max(VDW_RADIUS_A.values()) + margin_a,
        margin_a,
        residue_index,
        chain_index,
        sulfur,
        radius,
        polar,
        np.zeros(0, dtype=np.int64),
        POLAR_ALLOWANCE_A,
        overlap_a,
        math.inf,  # consecutive residues: never watched here (the junction terms hold them)
    )
    offset = frame * (l * slots)
    low = torch.from_numpy(limit).to(atoms)
    return _DistanceRestraints(
        first=torch.from_numpy(offset + present[first]).to(atoms.device),
        second=torch.from_numpy(offset + present[second]).to(atoms.device),
        low=low,
        high=torch.full_like(low, math.inf),
        sd=torch.full_like(low, CLASH_SD_A),
        replica=torch.from_numpy(frame).to(atoms.device),
    )


def _law_of_cosines(a: torch.Tensor, b: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Third side of a triangle with sides ``a``, ``b`` and the angle between them."""
    return torch.sqrt(a**2 + b**2 - 2 * a * b * math.cos(math.radians(angle_deg)))


def _junction_restraints(
    topology: RefineTopology,
    settings: RefineSettings,
    replicas: int,
    device: torch.device,
    dtype: torch.dtype,
) -> _DistanceRestraints:
    """The peptide bond C(i)-N(i+1) and the two junction angles, as the 1-3 distances that the
    angles fix (law of cosines with the residues' own rebuilt CA-C and N-CA lengths: N, CA and C
    sit in the backbone group, at the literature positions of their residue type in every
    rebuilt frame); CA(i)-N(i+1) for CA-C-N and C(i)-CA(i+1) for C-N-CA. An angle's tolerance
    becomes a distance tolerance through the derivative ``a b sin(angle) / d``. The same for
    every frame of a protein: made once per batch size, device, dtype and tolerances."""
    memo = topology.__dict__.setdefault("_restraint_memo", {})
    key = (replicas, str(device), dtype, settings.bond_tolerance_sd, settings.angle_tolerance_sd)
    if key in memo:
        return memo[key]
    replica, i, base, following, pro = topology.junction_index(replicas, device)
    local = geometry.residue_local_positions(topology.aatype).to(device, dtype)  # (L, 15, 3)
    ca_c = local[i, geometry.C_SLOT].norm(dim=-1)
    n_ca = local[i + 1, geometry.N_SLOT].norm(dim=-1)
    bond, bond_sd = topology.bond_mean[i].to(dtype), topology.bond_sd[i].to(dtype)
    parts = [
        (geometry.C_SLOT, geometry.N_SLOT, bond, bond_sd, settings.bond_tolerance_sd),
    ]
    for first, second, side, (angle, angle_sd) in (
        (geometry.CA_SLOT, geometry.N_SLOT, ca_c, CA_C_N_DEG),
        (geometry.C_SLOT, geometry.CA_SLOT, n_ca, C_N_CA_DEG),
    ):
        ideal = _law_of_cosines(side, bond, angle)
        per_rad = side * bond * math.sin(math.radians(angle)) / ideal
        parts.append(
            (first, second, ideal, per_rad * math.radians(angle_sd), settings.angle_tolerance_sd)
        )
    out = []
    for first, second, ideal, sd, tolerance in parts:
        out.append(
            _DistanceRestraints(
                first=base + first,
                second=following + second,
                low=ideal - tolerance * sd,
                high=ideal + tolerance * sd,
                sd=sd,
                replica=replica,
            )
        )
    # C(i) to CD(i+1) before a proline: the C-N-CD angle, which the proline's ring (rebuilt
    # with residue i + 1) and C(i) (with residue i) otherwise leave free
    length, spread = PROLINE_C_CD_A
    ideal = torch.full((int(pro.sum()),), length, dtype=dtype, device=device)
    out.append(
        _DistanceRestraints(
            first=base[pro] + geometry.C_SLOT,
            second=following[pro] + PROLINE_CD_SLOT,
            low=ideal - settings.angle_tolerance_sd * spread,
            high=ideal + settings.angle_tolerance_sd * spread,
            sd=torch.full_like(ideal, spread),
            replica=replica[pro],
        )
    )
    memo[key] = _DistanceRestraints.cat(out)
    return memo[key]


class _Energy:
    """The refinement energy of one batch of frames, per replica ``(B,)``."""

    def __init__(
        self,
        frames: Rigid,
        torsions: torch.Tensor,
        topology: RefineTopology,
        settings: RefineSettings,
    ):
        self.frames = frames
        self.topology = topology
        self.settings = settings
        from starmd.structure.atoms_kernel import heavy_atoms

        atoms = heavy_atoms(frames, torsions, topology.aatype, topology.oxt_mask)
        self.raw_atoms = atoms
        self.local = frames.unsqueeze(-1).invert_apply(atoms)  # (B, L, 15, 3)
        self.clash = _clash_pairs(atoms, topology, settings.clash_overlap_a, CLASH_SEARCH_MARGIN_A)
        self.restraints = _DistanceRestraints.cat(
            [
                _junction_restraints(topology, settings, atoms.shape[0], atoms.device, atoms.dtype),
                self.clash,
            ]
        )
        # cis where the prediction has it before a proline (omega measured at peptide bonds;
        # the omega terms weigh only those)
        omega = _backbone_torsions(atoms, atoms.new_zeros((*atoms.shape[:2], 7)), topology)
        self.cis = topology.pre_proline & (torch.rad2deg(omega[:, 1:, 0]).abs() < 90.0)

    def place(self, motion: torch.Tensor) -> tuple[Rigid, torch.Tensor]:
        """Frames ``(B, L)`` and atoms ``(B, L, 15, 3)`` after the local moves ``motion (B, L,
        6)`` (translation in Angstrom, then rotation vector in radians, both in the residue's
        frame)."""
        shift, rotvec = motion[..., :3], motion[..., 3:]
        rots = self.frames.rots @ exp_map(rotvec)
        trans = self.frames.trans + (self.frames.rots @ shift[..., None])[..., 0]
        atoms = self.local @ rots.transpose(-1, -2) + trans[..., None, :]
        return Rigid(rots, trans), atoms

    def violation(self, atoms: torch.Tensor) -> torch.Tensor:
        """Peptide-junction and clash terms ``(B,)`` of atoms ``(B, L, 15, 3)``."""
        r = self.restraints
        flat = atoms.reshape(-1, 3)
        d = torch.sqrt(((flat[r.first] - flat[r.second]) ** 2).sum(-1) + 1e-12)
        excess = (torch.relu(r.low - d) + torch.relu(d - r.high)) / r.sd
        total = atoms.new_zeros(atoms.shape[0]).index_add(0, r.replica, excess**2)
        omega_deg = torch.rad2deg(_omega(atoms)).abs()
        off = torch.where(self.cis, omega_deg, 180.0 - omega_deg)
        omega = torch.relu(off - self.settings.omega_tolerance_deg) / OMEGA_SD_DEG
        total = total + (omega**2 * self.topology.bonded).sum(-1)
        if self.settings.rama_weight > 0:
            total = total + self.settings.rama_weight * self.ramachandran(atoms)
        return total

    @functools.cached_property
    def reference_dihedrals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """phi and psi ``(B, L)`` of the predicted atoms (radians; 0 at the chain ends), the
        values :meth:`dihedral_restraint` keeps."""
        return _phi_psi(self.raw_atoms.detach())

    def dihedral_restraint(self, atoms: torch.Tensor) -> torch.Tensor:
        """The restraint ``(B,)`` on psi and phi across every peptide bond of atoms ``(B, L,
        15, 3)`` (module docstring)."""
        s = self.settings
        phi, psi = _phi_psi(atoms)
        phi0, psi0 = self.reference_dihedrals
        bonded = self.topology.bonded.to(atoms.dtype)
        change = (2 - 2 * torch.cos(phi[:, 1:] - phi0[:, 1:])) + (
            2 - 2 * torch.cos(psi[:, :-1] - psi0[:, :-1])
        )
        return s.dihedral_weight * (change * bonded).sum(-1) / math.radians(s.dihedral_sd_deg) ** 2

    def ramachandran(self, atoms: torch.Tensor) -> torch.Tensor:
        """Ramachandran term ``(B,)`` of atoms ``(B, L, 15, 3)`` (module docstring)."""
        s = self.settings
        phi, psi = _phi_psi(atoms)
        outside = ramachandran_distance_deg(phi, psi) + s.rama_margin_deg
        excess = torch.relu(outside) / s.rama_sd_deg
        return (excess**2 * self.topology.rama).sum(-1)

    def restraint(self, motion: torch.Tensor) -> torch.Tensor:
        weight = motion.new_tensor([1.0, 1.0, 1.0, LEVER_A**2, LEVER_A**2, LEVER_A**2])
        return (motion**2 * weight).sum((-1, -2)) / self.settings.restraint_a**2

    @functools.cached_property
    def kernel_terms(self) -> tuple:
        """The energy's restraints, junction tables and settings as the compiled loops of
        :mod:`starmd.sample.refine_kernel` take them (after the atoms or moves)."""
        r, top, s = self.restraints, self.topology, self.settings
        params = np.array(
            [
                s.step_a,
                s.step_rad,
                s.restraint_a,
                s.omega_tolerance_deg,
                OMEGA_SD_DEG,
                s.rama_weight,
                s.rama_sd_deg,
                s.rama_margin_deg,
                LEVER_A,
                RAMA_BIN_DEG,
                -180.0,
                s.dihedral_weight,
                math.radians(s.dihedral_sd_deg),
            ]
        )
        return (
            _host(r.first, np.int64),
            _host(r.second, np.int64),
            _host(r.low),
            _host(r.high),
            _host(r.sd),
            _host(top.bonded),
            _host(self.cis, np.bool_),
            _host(top.rama),
            distance_grid("rama"),
            np.array([geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT], dtype=np.int64),
            params,
        )


def _energy_and_grad(energy: _Energy, motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The descent's objective (violation + restraint) ``(B,)`` at ``motion (B, L, 6)`` and its
    gradient ``(B, L, 6)``, assembled in closed form: forces on atoms from each term
    (distances, dihedrals by Blondel and Karplus' formula, the Ramachandran field's slope), then
    per residue the summed force (translation) and torque (rotation, through the right Jacobian
    of the exponential map). Equals autograd's gradient to rounding (tested), with about half
    the tensor operations."""
    s, top = energy.settings, energy.topology
    moved, atoms = energy.place(motion)
    b = atoms.shape[0]
    force = torch.zeros_like(atoms)  # dE/d(atom), (B, L, 15, 3)
    flat, flat_force = atoms.reshape(-1, 3), force.view(-1, 3)
    # distance restraints: peptide junctions and watched overlaps
    r = energy.restraints
    bond = flat[r.first] - flat[r.second]
    d = torch.sqrt((bond**2).sum(-1) + 1e-12)
    below, above = torch.relu(r.low - d), torch.relu(d - r.high)
    excess = (below + above) / r.sd
    total = atoms.new_zeros(b).index_add(0, r.replica, excess**2)
    pull = (2 * excess / r.sd * (torch.sign(above) - torch.sign(below)) / d)[:, None] * bond
    flat_force.index_add_(0, r.first, pull)
    flat_force.index_add_(0, r.second, -pull)
    # omega beyond its tolerance of trans (or cis)
    n, ca, c = (atoms[..., k, :] for k in (geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT))
    # omega, phi (of residue i + 1) and psi (of residue i) across every junction, in one call
    points = (
        torch.stack([ca[:, :-1], c[:, :-1], n[:, :-1]]),
        torch.stack([c[:, :-1], n[:, 1:], ca[:, :-1]]),
        torch.stack([n[:, 1:], ca[:, 1:], c[:, :-1]]),
        torch.stack([ca[:, 1:], c[:, 1:], n[:, 1:]]),
    )
    angles, slopes = geometry.dihedral_gradient(*points)
    omega = angles[0]
    degrees = torch.rad2deg(omega).abs()
    off = torch.where(energy.cis, degrees, 180.0 - degrees)
    term = torch.relu(off - s.omega_tolerance_deg) / OMEGA_SD_DEG * top.bonded
    total = total + (term**2).sum(-1)
    slope = 2 * term / OMEGA_SD_DEG * torch.rad2deg(torch.sign(omega))
    dihedral_slopes = [torch.where(energy.cis, slope, -slope)]  # dE/d(omega), (B, J)
    # Ramachandran outliers
    if s.rama_weight > 0:
        pad = omega.new_zeros((b, 1))
        distance, slope_phi, slope_psi = ramachandran_distance_slope(
            torch.cat([pad, angles[1]], -1), torch.cat([angles[2], pad], -1)
        )
        outside = torch.relu(distance + s.rama_margin_deg) / s.rama_sd_deg * top.rama
        total = total + s.rama_weight * (outside**2).sum(-1)
        scale = 2 * s.rama_weight * outside / s.rama_sd_deg
        # phi of residue i + 1 and psi of residue i, both across junction i -> i + 1
        dihedral_slopes += [(scale * slope_phi)[:, 1:], (scale * slope_psi)[:, :-1]]
    # the restraint on the prediction's psi and phi
    if s.dihedral_weight > 0:
        phi0, psi0 = energy.reference_dihedrals
        bonded = top.bonded.to(atoms.dtype)
        unit = s.dihedral_weight / math.radians(s.dihedral_sd_deg) ** 2 * bonded
        phi_change, psi_change = angles[1] - phi0[:, 1:], angles[2] - psi0[:, :-1]
        total = total + (unit * (4 - 2 * torch.cos(phi_change) - 2 * torch.cos(psi_change))).sum(-1)
        keep = [2 * unit * torch.sin(phi_change), 2 * unit * torch.sin(psi_change)]
        if len(dihedral_slopes) == 1:
            dihedral_slopes += keep
        else:
            dihedral_slopes = [dihedral_slopes[0], *map(torch.add, dihedral_slopes[1:], keep)]
    # each dihedral's slope times its gradient, summed onto N, CA, C of residues i and i + 1
    count = len(dihedral_slopes)
    weighted = torch.stack(dihedral_slopes)[None, ..., None] * torch.stack(slopes)[:, :count]
    targets = _DIHEDRAL_TARGETS[..., :count].reshape(6, -1).to(weighted)
    junction = (targets @ weighted.reshape(4 * count, -1)).view(6, *weighted.shape[2:])
    force[:, :-1, : geometry.C_SLOT + 1] += junction[:3].permute(1, 2, 0, 3)
    force[:, 1:, : geometry.C_SLOT + 1] += junction[3:].permute(1, 2, 0, 3)
    total = total + energy.restraint(motion)
    # chain rule to the residue moves: x = R exp(w) local + t + R shift
    weight = motion.new_tensor([1.0, 1.0, 1.0, LEVER_A**2, LEVER_A**2, LEVER_A**2])
    grad = 2 * motion * weight / s.restraint_a**2
    frame_rots = energy.frames.rots
    summed = force.sum(-2)  # (B, L, 3)
    grad[..., :3] += (summed[..., None, :] @ frame_rots)[..., 0, :]  # R^T sum dE/dx
    in_frame = force @ moved.rots  # R'^T dE/dx, atom by atom
    torque = torch.linalg.cross(energy.local, in_frame, dim=-1).sum(-2)
    grad[..., 3:] += _right_jacobian_transpose(motion[..., 3:], torque)
    return total, grad


def _right_jacobian_transpose(rotvec: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
    """``J_r(w)^T torque`` for rotation vectors ``w (..., 3)``: turns a torque about the
    rotated frame's axes into the gradient with respect to ``w`` when ``R' = R exp(w)``
    (``J_r^T = I + a [w]x + b [w]x^2`` with ``a = (1 - cos t) / t^2``, ``b = (t - sin t) / t^3``;
    their Taylor series below 1e-3 rad)."""
    theta_sq = (rotvec * rotvec).sum(-1, keepdim=True)
    small = theta_sq < 1e-6
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    a = torch.where(small, 0.5 - theta_sq / 24.0, (1 - torch.cos(theta)) / theta**2)
    b = torch.where(small, 1.0 / 6.0 - theta_sq / 120.0, (theta - torch.sin(theta)) / theta**3)
    cross = torch.linalg.cross(rotvec, torque, dim=-1)
    return torque + a * cross + b * torch.linalg.cross(rotvec, cross, dim=-1)


def _phi_psi(atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi and psi ``(..., L)`` radians of atoms ``(..., L, 15, 3)`` across the junctions to
    both neighbours (0 at the chain ends, which :attr:`RefineTopology.rama` leaves out)."""
    n, ca, c = (atoms[..., s, :] for s in (geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT))
    phi = geometry.dihedral(c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :], c[..., 1:, :])
    psi = geometry.dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :])
    pad = phi.new_zeros((*phi.shape[:-1], 1))
    return torch.cat([pad, phi], -1), torch.cat([psi, pad], -1)


def _omega(atoms: torch.Tensor) -> torch.Tensor:
    """Dihedral CA(i)-C(i)-N(i+1)-CA(i+1) ``(..., L-1)`` radians of atoms ``(..., L, 15, 3)``."""
    ca, c, n = (atoms[..., s, :] for s in (geometry.CA_SLOT, geometry.C_SLOT, geometry.N_SLOT))
    return geometry.dihedral(ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :])


@dataclass(frozen=True)
class Refined:
    """A refined batch: ``frames (B, L)``, ``torsions (B, L, 7)``; per replica ``(B,)`` the
    energy's violation part before and after, the largest CA displacement (Angstrom), and the
    checks of :func:`frame_checks` on the raw and on the refined heavy atoms."""

    frames: Rigid
    torsions: torch.Tensor
    violation_before: torch.Tensor
    violation_after: torch.Tensor
    max_shift_a: torch.Tensor
    raw_checks: dict[str, torch.Tensor]
    checks: dict[str, torch.Tensor]


def refine(
    frames: Rigid,
    torsions: torch.Tensor,
    topology: RefineTopology,
    settings: RefineSettings = RefineSettings(),
) -> Refined:
    """Refine frames ``(B, L)`` + torsions ``(B, L, 7)`` (Angstrom, radians) of ``B`` replicas
    of one protein; see the module docstring for the energy and its bounds."""
    from starmd.structure.atoms_kernel import psi_atoms  # numba: imported on first use

    with torch.inference_mode(False), torch.enable_grad():
        frames = Rigid(frames.rots.clone(), frames.trans.clone())
        torsions = torsions.clone()
        energy = _Energy(frames, torsions, topology, settings)
        before = _violation(energy, energy.raw_atoms)
        motion = frames.trans.new_zeros((*frames.shape, 6))
        if settings.iterations > 0 and bool((before > 0).any()):
            _descend(energy, motion, settings)
        refined, atoms = _place(energy, motion)
        refined = Rigid(refined.rots.detach(), refined.trans.detach())
        after = _violation(energy, atoms)
    torsions = _backbone_torsions(atoms.detach(), torsions, topology)
    # the residues moved rigidly: only the atoms that the re-measured psi places change
    atoms = psi_atoms(atoms.detach(), torsions[..., 2], topology.aatype, topology.oxt_mask)
    return Refined(
        frames=refined,
        torsions=torsions,
        violation_before=before,
        violation_after=after,
        max_shift_a=distance(refined.trans, frames.trans).amax(-1),
        raw_checks=frame_checks(energy.raw_atoms.detach(), energy),
        checks=frame_checks(atoms, energy),
    )


def _host(x: torch.Tensor, dtype=np.float64) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy(), dtype=dtype)


def _violation(energy: _Energy, atoms: torch.Tensor) -> torch.Tensor:
    """:meth:`_Energy.violation` ``(B,)``, by the compiled loop for atoms on the CPU."""
    if atoms.device.type != "cpu":
        return energy.violation(atoms).detach()
    from starmd.sample.refine_kernel import violation

    value = violation(_host(atoms), *energy.kernel_terms)
    return torch.from_numpy(value).to(atoms.dtype)


def _place(energy: _Energy, motion: torch.Tensor) -> tuple[Rigid, torch.Tensor]:
    """:meth:`_Energy.place`, by the compiled loop of :mod:`starmd.sample.refine_kernel` for
    frames on the CPU (float64, returned in the frames' dtype)."""
    if motion.device.type != "cpu":
        return energy.place(motion)
    from starmd.sample.refine_kernel import place

    rots, trans, atoms = place(
        _host(energy.local), _host(energy.frames.rots), _host(energy.frames.trans), _host(motion)
    )
    dtype = energy.frames.dtype
    return Rigid(torch.from_numpy(rots).to(dtype), torch.from_numpy(trans).to(dtype)), (
        torch.from_numpy(atoms).to(dtype)
    )


def _descend(energy: _Energy, motion: torch.Tensor, settings: RefineSettings) -> None:
    """Clamped Adam steps on ``motion (B, L, 6)`` (in place), step size decaying to 0: the
    compiled loop of :mod:`starmd.sample.refine_kernel` for frames on the CPU, else
    :func:`_descend_torch` (the same steps as tensor operations)."""
    if motion.device.type != "cpu":
        _descend_torch(energy, motion, settings)
        return
    from starmd.sample.refine_kernel import descend

    moves = _host(motion)
    phi0, psi0 = energy.reference_dihedrals
    descend(
        _host(energy.local),
        _host(energy.frames.rots),
        _host(energy.frames.trans),
        *energy.kernel_terms,
        _host(phi0),
        _host(psi0),
        settings.iterations,
        moves,
    )
    motion.copy_(torch.from_numpy(moves))


def _descend_torch(energy: _Energy, motion: torch.Tensor, settings: RefineSettings) -> None:
    """Clamped Adam steps on ``motion (B, L, 6)`` (in place), step size decaying to 0."""
    beta1, beta2, eps = 0.9, 0.999, 1e-6
    limit = motion.new_tensor([settings.step_a] * 3 + [settings.step_rad] * 3)
    first, second = torch.zeros_like(motion), torch.zeros_like(motion)
    for k in range(settings.iterations):
        _, grad = _energy_and_grad(energy, motion)
        with torch.no_grad():
            first.mul_(beta1).add_(grad, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            scale = math.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1))
            step = torch.minimum(limit * scale * first.abs() / (second.sqrt() + eps), limit)
            motion.sub_((1.0 - k / settings.iterations) * step * first.sign())


def _backbone_torsions(
    atoms: torch.Tensor, torsions: torch.Tensor, topology: RefineTopology
) -> torch.Tensor:
    """``torsions (B, L, 7)`` with omega, phi (where bonded to the previous residue) and psi
    (where bonded to the next) measured on the backbone of ``atoms (B, L, 15, 3)``: by the
    compiled loop of :mod:`starmd.sample.refine_kernel` on the CPU (float64, returned in the
    torsions' dtype), else :func:`_backbone_torsions_torch`."""
    if atoms.device.type != "cpu":
        return _backbone_torsions_torch(atoms, torsions, topology)
    from starmd.sample.refine_kernel import backbone_torsions

    out = _host(torsions).copy()
    backbone_torsions(
        _host(atoms),
        out,
        _host(topology.bonded, np.bool_),
        np.array([geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT], dtype=np.int64),
    )
    return torch.from_numpy(out).to(torsions.dtype)


def _backbone_torsions_torch(
    atoms: torch.Tensor, torsions: torch.Tensor, topology: RefineTopology
) -> torch.Tensor:
    """:func:`_backbone_torsions` as tensor operations (any device; the reference)."""
    n, ca, c = (atoms[..., s, :] for s in (geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT))
    omega = geometry.dihedral(ca[:, :-1], c[:, :-1], n[:, 1:], ca[:, 1:])
    phi = geometry.dihedral(c[:, :-1], n[:, 1:], ca[:, 1:], c[:, 1:])
    psi = geometry.dihedral(n[:, :-1], ca[:, :-1], c[:, :-1], n[:, 1:])
    out = torsions.clone()
    bonded = topology.bonded
    out[:, 1:, 0] = torch.where(bonded, omega, torsions[:, 1:, 0])
    out[:, 1:, 1] = torch.where(bonded, phi, torsions[:, 1:, 1])
    out[:, :-1, 2] = torch.where(bonded, psi, torsions[:, :-1, 2])
    return out


def frame_checks(atoms: torch.Tensor, energy: _Energy) -> dict[str, torch.Tensor]:
    """Per-frame checks of heavy atoms ``(B, L, 15, 3)`` (Angstrom) by the evaluation's headline
    criteria that need no reference histogram.

    Approximation: heavy-atom clashes are looked for among the atom pairs the refinement
    watches (every pair within 1 A of clashing in the raw frame); ``starmd evaluate`` counts
    over all pairs of the written (refined) frames.

    Returns:
        ``(B,)`` each: ``ca_valid`` (no CA clash, no CA chain break: the evaluation's CA
        validity), ``aa_clash`` (a heavy-atom overlap above MolProbity's 0.4 A between residues
        two apart), ``aa_break`` (a C(i)-N(i+1) over 2 A), ``peptide_outside`` (peptide bonds
        outside 1.2-1.5 A, a count), ``rama_outliers`` (residues outside the evaluation's 99%
        Ramachandran region, a count), and the parts of ``ca_valid`` as
        :func:`~starmd.structure.checks.ca_health` gives them (``nan`` bool, ``breaks`` and
        ``clashes`` counts), so that a rollout screens its refined frames without a second CA
        check.
    """
    if atoms.device.type != "cpu":
        return frame_checks_torch(atoms, energy)
    from starmd.sample.refine_kernel import checks

    top, clash = energy.topology, energy.clash
    limits = np.array(
        [CA_CLASH_A, CA_BREAK_A, *PEPTIDE_RANGE_A, PEPTIDE_BREAK_A, RAMA_BIN_DEG], np.float64
    )
    counts = torch.from_numpy(
        checks(
            _host(atoms),
            _host(top.linked_prev, np.int64),
            _host(top.rama, np.int64),
            _host(clash.first, np.int64),
            _host(clash.second, np.int64),
            _host(_clash_check_limit(energy)),
            allowed_grid(),
            limits,
        )
    )
    nan, breaks, ca_clashes, aa_clashes, aa_break, outside, outliers = counts.unbind(-1)
    return {
        "nan": nan > 0,
        "breaks": breaks,
        "clashes": ca_clashes,
        "ca_valid": (nan == 0) & (breaks == 0) & (ca_clashes == 0),
        "aa_clash": aa_clashes > 0,
        "aa_break": aa_break > 0,
        "peptide_outside": outside,
        "rama_outliers": outliers,
    }


def _clash_check_limit(energy: _Energy) -> torch.Tensor:
    """Distance below which a watched pair clashes in :func:`frame_checks`: the watched limit
    allows ``clash_overlap_a`` of overlap, the check MolProbity's 0.4 A."""
    return energy.clash.low + energy.settings.clash_overlap_a - CLASH_OVERLAP_A


def frame_checks_torch(atoms: torch.Tensor, energy: _Energy) -> dict[str, torch.Tensor]:
    """:func:`frame_checks` as tensor operations (any device; the compiled loop's reference)."""
    top, clash = energy.topology, energy.clash
    b = atoms.shape[0]
    health = ca_health(atoms[..., geometry.CA_SLOT, :], top.linked_prev)
    c_n = distance(atoms[:, :-1, geometry.C_SLOT], atoms[:, 1:, geometry.N_SLOT])
    outside = ((c_n < PEPTIDE_RANGE_A[0]) | (c_n > PEPTIDE_RANGE_A[1])) & top.bonded
    flat = atoms.reshape(-1, 3)
    d = distance(flat[clash.first], flat[clash.second])
    clashing = d < _clash_check_limit(energy)
    per_replica = torch.zeros(b, dtype=torch.long, device=atoms.device)
    per_replica.index_add_(0, clash.replica, clashing.long())
    phi, psi = _phi_psi(atoms)
    allowed = ramachandran_allowed(phi.cpu().double().numpy(), psi.cpu().double().numpy())
    outliers = ~torch.from_numpy(allowed).to(atoms.device) & top.rama
    return {
        **health,
        "ca_valid": ~health["nan"] & (health["breaks"] == 0) & (health["clashes"] == 0),
        "aa_clash": per_replica > 0,
        "aa_break": ((c_n > PEPTIDE_BREAK_A) & top.bonded).any(-1),
        "peptide_outside": outside.sum(-1),
        "rama_outliers": outliers.sum(-1),
    }


class RefinementLedger:
    """Per-replica counts of the raw and refined frames' checks (:func:`frame_checks`), kept in
    a generation's resume record (``state``) so that a resumed run continues them;
    :meth:`summary` gives the sidecar's percentages, raw next to refined."""

    def __init__(
        self,
        state: dict,
        replicas: int,
        peptide_bonds_per_frame: int,
        rama_residues_per_frame: int = 0,
    ):
        self.bonds = peptide_bonds_per_frame
        self.rama_residues = rama_residues_per_frame
        self._validity_plan = None
        self.record = state.setdefault(
            "refinement",
            {
                "seconds": 0.0,
                "replicas": [
                    {
                        "frames": 0,
                        "max_shift_a": 0.0,
                        "raw": _zero_counts(),
                        "refined": _zero_counts(),
                    }
                    for _ in range(replicas)
                ],
            },
        )

    def add(self, refined: Refined, replicas: list[int], seconds: float) -> None:
        """Count one refined frame of the ``replicas`` written (0-based), which took
        ``seconds`` to refine."""
        self.record["seconds"] += seconds
        for r in replicas:
            record = self.record["replicas"][r]
            record["frames"] += 1
            record["max_shift_a"] = max(record["max_shift_a"], float(refined.max_shift_a[r]))
            for tag, checks in (("raw", refined.raw_checks), ("refined", refined.checks)):
                ca_valid = bool(checks["ca_valid"][r])
                clash, broken = bool(checks["aa_clash"][r]), bool(checks["aa_break"][r])
                counts = record[tag]
                counts["ca_valid"] += ca_valid
                counts["aa_clash"] += clash
                counts["aa_break"] += broken
                counts["ca_valid_no_clash_no_break"] += ca_valid and not clash and not broken
                counts["peptide_outside"] += int(checks["peptide_outside"][r])
                # a resume record written before this count existed starts it at zero
                counts.setdefault("rama_outliers", 0)
                counts["rama_outliers"] += int(checks["rama_outliers"][r])

    def prepare_written(self, xyz, topology) -> None:
        """Plan the written-frame checks for ``topology`` and run them once on ``xyz (F,
        n_atoms, 3)`` (e.g. frame 0), counting nothing: loading their compiled loops is then
        set-up time, not the first written chunk's."""
        from starmd.evaluate import validity

        if self._validity_plan is None:
            self._validity_plan = validity.plan_validity(topology)
        validity.check_validity(xyz, self._validity_plan)

    def add_written(self, replicas: list[int], xyz, topology, seconds: float) -> None:
        """Count written (polished) generated frames ``xyz (F, n_atoms, 3)`` Angstrom of the
        heavy-atom ``topology``, frame ``k`` from replica ``replicas[k]``, judged by the
        evaluation's own checks (:func:`starmd.evaluate.validity.check_validity`, all atom
        pairs, headline thresholds); ``seconds``: what polishing them took."""
        from starmd.evaluate import validity

        if self._validity_plan is None:
            self._validity_plan = validity.plan_validity(topology)
        plan = self._validity_plan
        self.record["polish_seconds"] = self.record.get("polish_seconds", 0.0) + seconds
        checks = validity.check_validity(xyz, plan)
        bonds = plan.peptide_bonds
        c_n = np.linalg.norm(xyz[:, bonds[:, 0]] - xyz[:, bonds[:, 1]], axis=-1)
        outside = ((c_n < PEPTIDE_RANGE_A[0]) | (c_n > PEPTIDE_RANGE_A[1])).sum(-1)
        rama = np.rint(checks["rama_outlier_fraction"] * plan.n_rama).astype(int)
        for k, r in enumerate(replicas):
            counts = self.record["replicas"][r].setdefault("written", _zero_written())
            counts["frames"] += 1
            counts["ca_valid"] += bool(checks["valid_ca"][k])
            counts["valid"] += bool(checks["valid"][k])
            counts["aa_clash"] += bool(checks["aa_clash"][k])
            counts["aa_break"] += bool(checks["aa_break"][k])
            counts["ca_valid_no_clash_no_break"] += bool(
                checks["valid_ca"][k] and not checks["aa_clash"][k] and not checks["aa_break"][k]
            )
            counts["peptide_outside"] += int(outside[k])
            counts["rama_outliers"] += int(rama[k])
        self.record["written_rama_residues"] = int(plan.n_rama)
        self.record["written_peptide_bonds"] = int(len(bonds))

    def summary(self) -> dict:
        """``ms_per_step`` (one refinement call, all replicas), ``ms_per_frame`` (per replica's
        frame) and per replica: ``frames``, ``max_shift_a`` and for ``raw`` and ``refined`` the
        percentages of frames ``ca_valid_pct``, ``aa_clash_pct``, ``aa_break_pct``,
        ``ca_valid_no_clash_no_break_pct``, of peptide bonds ``peptide_outside_pct``
        (outside 1.2-1.5 A) and of judged residues ``rama_outlier_pct`` (Ramachandran outliers;
        None without such residues)."""
        replicas = self.record["replicas"]
        frames = sum(r["frames"] for r in replicas)
        steps = max((r["frames"] for r in replicas), default=0)
        seconds = self.record["seconds"]
        out = {
            "ms_per_step": round(1000 * seconds / steps, 3) if steps else None,
            "ms_per_frame": round(1000 * seconds / frames, 3) if frames else None,
            "replicas": [],
        }
        for record in replicas:
            n = max(record["frames"], 1)
            row = {"frames": record["frames"], "max_shift_a": round(record["max_shift_a"], 3)}
            for tag in ("raw", "refined"):
                counts = record[tag]
                row[tag] = {
                    f"{key}_pct": round(100.0 * counts[key] / n, 2)
                    for key in ("ca_valid", "aa_clash", "aa_break", "ca_valid_no_clash_no_break")
                }
                row[tag]["peptide_outside_pct"] = round(
                    100.0 * counts["peptide_outside"] / max(n * self.bonds, 1), 3
                )
                rama = counts.get("rama_outliers", 0)
                row[tag]["rama_outlier_pct"] = (
                    round(100.0 * rama / (n * self.rama_residues), 3)
                    if self.rama_residues
                    else None
                )
            written = record.get("written")
            if written and written["frames"]:
                m = written["frames"]
                row["written"] = {
                    f"{key}_pct": round(100.0 * written[key] / m, 2)
                    for key in (
                        "ca_valid", "valid", "aa_clash", "aa_break", "ca_valid_no_clash_no_break"
                    )
                }  # fmt: skip
                row["written"]["peptide_outside_pct"] = round(
                    100.0
                    * written["peptide_outside"]
                    / max(m * self.record.get("written_peptide_bonds", 0), 1),
                    3,
                )
                rama_residues = self.record.get("written_rama_residues", 0)
                row["written"]["rama_outlier_pct"] = (
                    round(100.0 * written["rama_outliers"] / (m * rama_residues), 3)
                    if rama_residues
                    else None
                )
            out["replicas"].append(row)
        polished = sum(r.get("written", {}).get("frames", 0) for r in replicas)
        out["polish_ms_per_frame"] = (
            round(1000 * self.record.get("polish_seconds", 0.0) / polished, 3) if polished else None
        )
        return out


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(
        (
            "ca_valid", "aa_clash", "aa_break", "ca_valid_no_clash_no_break", "peptide_outside",
            "rama_outliers",
        ),
        0,
    )  # fmt: skip


def _zero_written() -> dict[str, int]:
    return dict.fromkeys(
        (
            "frames", "ca_valid", "valid", "aa_clash", "aa_break", "ca_valid_no_clash_no_break",
            "peptide_outside", "rama_outliers",
        ),
        0,
    )  # fmt: skip
