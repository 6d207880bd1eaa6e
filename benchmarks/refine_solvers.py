"""The refinement's clamped Adam descent against a damped Gauss-Newton solve of the same energy.

    python benchmarks/refine_solvers.py [--model starmd-small] [--structure corpus/md/1enh/1enh.pdb]
        [--frames 12] [--replicas 2]

Runs a refined rollout at the model's defaults on one CPU thread, keeps the raw frames (frames +
torsions) handed to :func:`starmd.sample.refine.refine`, then minimises each of them again with
the library's descent (:func:`starmd.sample.refine._descend`, 40 clamped Adam steps) and with a
Gauss-Newton (Levenberg-Marquardt) solve written here for the comparison. Prints, per solver,
the time per frame and the violation and restraint parts of the final energy (median, 90th
percentile, maximum over frames x replicas).

The Gauss-Newton solve: every active flat-bottomed term is a residual (distances, omega, the
Ramachandran distance; each in units of its spread, so that the energy is the sum of their
squares), the restraint to the prediction a diagonal; the Jacobian with respect to the residue
moves (translation and rotation vector in the residue's frame) is assembled from the forces on
the atoms as in :func:`starmd.sample.refine._energy_and_grad`, sparse (12 nonzeros per distance
row), and the damped normal equations ``(J^T J + W + lam diag(J^T J + W)) d = -g`` are solved
with SciPy's sparse LU. ``--damping`` fixes ``lam``; the step is clamped per element. A
restraint that is satisfied has no row, so a step that makes a new overlap is not seen coming:
that is what limits the solve on these terms.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
import torch

import starmd.sample.rollout as rollout_module
from starmd.errors import StarmdError
from starmd.modelfile import load_model, resolve_model
from starmd.sample import refine as refinement
from starmd.sample.generate import GenerationSettings, with_model_defaults
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure import geometry
from starmd.structure.io import load_structure
from starmd.structure.ramachandran import ramachandran_distance_slope
from starmd.structure.rigid import Rigid

SLOTS = 15


def capture(model: str, structure: str, frames: int, replicas: int) -> tuple[list, object]:
    """Raw ``(frames, torsions)`` of every refinement call of a default rollout, and the
    refinement tables of the protein."""
    kept = []
    library_refine = rollout_module.refine

    def keep(frames_, torsions, topology, settings):
        kept.append((Rigid(frames_.rots.clone(), frames_.trans.clone()), torsions.clone()))
        return library_refine(frames_, torsions, topology, settings)

    loaded = load_model(resolve_model(model))
    defaults = with_model_defaults(GenerationSettings(frames=frames), loaded.config)
    protein, positions = load_structure(structure)
    inputs = protein_input(protein, positions, defaults.dt_ps, replicas)
    settings = RolloutSettings(
        steps=defaults.steps, sampler=defaults.sampler, refine=refinement.RefineSettings()
    )
    rollout_module.refine = keep
    try:
        rollout = Rollout(loaded, inputs, settings, seed=0)
        for _ in rollout.states(frames):
            pass
    finally:
        rollout_module.refine = library_refine
    return kept, rollout.refine_topology


def _rows(energy, motion: torch.Tensor):
    """Active residuals ``(n,)`` and their per-atom gradients: row, flat atom index, ``(3,)``."""
    s, top = energy.settings, energy.topology
    moved, atoms = energy.place(motion)
    b, length = atoms.shape[:2]
    values, rows, atom_index, grads = [], [], [], []
    count = 0

    def add(value: torch.Tensor, members: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        nonlocal count
        row = torch.arange(len(value)) + count
        values.append(value)
        for index, grad in members:
            rows.append(row)
            atom_index.append(index)
            grads.append(grad)
        count += len(value)

    flat = atoms.reshape(-1, 3)
    r = energy.restraints
    bond = flat[r.first] - flat[r.second]
    d = torch.sqrt((bond**2).sum(-1) + 1e-12)
    value = (torch.relu(d - r.high) - torch.relu(r.low - d)) / r.sd
    on = value != 0
    unit = bond[on] / (r.sd[on] * d[on])[:, None]
    add(value[on], [(r.first[on], unit), (r.second[on], -unit)])

    def flat_slot(replica: torch.Tensor, residue: torch.Tensor, slot: int) -> torch.Tensor:
        return (replica * length + residue) * SLOTS + slot

    n, ca, c = (atoms[..., k, :] for k in (geometry.N_SLOT, geometry.CA_SLOT, geometry.C_SLOT))
    omega, slopes = geometry.dihedral_gradient(ca[:, :-1], c[:, :-1], n[:, 1:], ca[:, 1:])
    degrees = torch.rad2deg(omega).abs()
    off = torch.where(energy.cis, degrees, 180.0 - degrees)
    term = torch.relu(off - s.omega_tolerance_deg) / refinement.OMEGA_SD_DEG * top.bonded
    per_rad = torch.rad2deg(torch.sign(omega)) / refinement.OMEGA_SD_DEG
    per_rad = torch.where(energy.cis, per_rad, -per_rad)
    replica, junction = (term > 0).nonzero(as_tuple=True)
    scale = per_rad[replica, junction][:, None]
    members = [
        (flat_slot(replica, junction, geometry.CA_SLOT), slopes[0][replica, junction] * scale),
        (flat_slot(replica, junction, geometry.C_SLOT), slopes[1][replica, junction] * scale),
        (flat_slot(replica, junction + 1, geometry.N_SLOT), slopes[2][replica, junction] * scale),
        (flat_slot(replica, junction + 1, geometry.CA_SLOT), slopes[3][replica, junction] * scale),
    ]
    add(term[replica, junction], members)

    if s.rama_weight > 0:
        phi, psi = refinement._phi_psi(atoms)
        distance, slope_phi, slope_psi = ramachandran_distance_slope(phi, psi)
        weight = math.sqrt(s.rama_weight) / s.rama_sd_deg
        outside = torch.relu(distance + s.rama_margin_deg) * weight * top.rama
        replica, i = (outside > 0).nonzero(as_tuple=True)
        _, g_phi = geometry.dihedral_gradient(
            c[replica, i - 1], n[replica, i], ca[replica, i], c[replica, i]
        )
        _, g_psi = geometry.dihedral_gradient(
            n[replica, i], ca[replica, i], c[replica, i], n[replica, i + 1]
        )
        s_phi = (weight * slope_phi[replica, i])[:, None]
        s_psi = (weight * slope_psi[replica, i])[:, None]
        members = [
            (flat_slot(replica, i - 1, geometry.C_SLOT), g_phi[0] * s_phi),
            (flat_slot(replica, i, geometry.N_SLOT), g_phi[1] * s_phi + g_psi[0] * s_psi),
            (flat_slot(replica, i, geometry.CA_SLOT), g_phi[2] * s_phi + g_psi[1] * s_psi),
            (flat_slot(replica, i, geometry.C_SLOT), g_phi[3] * s_phi + g_psi[2] * s_psi),
            (flat_slot(replica, i + 1, geometry.N_SLOT), g_psi[3] * s_psi),
        ]
        add(outside[replica, i], members)
    return torch.cat(values), torch.cat(rows), torch.cat(atom_index), torch.cat(grads), moved


def _jacobian(energy, motion: torch.Tensor):
    """Residuals ``(n,)`` and their sparse Jacobian ``(n, 6 B L)`` at ``motion (B, L, 6)``."""
    values, rows, atom_index, grads, moved = _rows(energy, motion)
    residue = atom_index // SLOTS
    local = energy.local.reshape(-1, 3)[atom_index]
    start = energy.frames.rots.reshape(-1, 3, 3)[residue]
    now = moved.rots.reshape(-1, 3, 3)[residue]
    d_shift = (grads[:, None, :] @ start)[:, 0]
    torque = torch.linalg.cross(local, (grads[:, None, :] @ now)[:, 0], dim=-1)
    d_turn = refinement._right_jacobian_transpose(motion.reshape(-1, 6)[residue, 3:], torque)
    entries = torch.cat([d_shift, d_turn], -1).reshape(-1).double().numpy()
    columns = (residue[:, None] * 6 + torch.arange(6)).reshape(-1).numpy()
    row_of = rows[:, None].expand(-1, 6).reshape(-1).numpy()
    shape = (len(values), motion[..., 0].numel() * 6)
    return values.double().numpy(), sparse.csr_matrix((entries, (row_of, columns)), shape=shape)


def gauss_newton(
    energy,
    motion: torch.Tensor,
    iterations: int,
    damping: float,
    step_a: float = 1.0,
    step_rad: float = 0.4,
) -> None:
    """Damped Gauss-Newton on ``motion (B, L, 6)`` in place (module docstring)."""
    count = motion[..., 0].numel()
    lever = refinement.LEVER_A**2
    weight = np.tile([1.0, 1.0, 1.0, lever, lever, lever], count) / energy.settings.restraint_a**2
    limit = np.tile([step_a] * 3 + [step_rad] * 3, count)
    for _ in range(iterations):
        values, jacobian = _jacobian(energy, motion)
        x = motion.reshape(-1).double().numpy()
        normal = (jacobian.T @ jacobian).tocsr()
        gradient = jacobian.T @ values + weight * x
        diagonal = normal.diagonal() + weight
        system = (normal + sparse.diags(weight + damping * diagonal)).tocsc()
        step = np.clip(sparse_linalg.spsolve(system, -gradient), -limit, limit)
        motion += torch.from_numpy(step).to(motion).view_as(motion)


def score(kept, topology, solve) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Seconds per call, violation and restraint ``(frames x replicas,)`` after ``solve``."""
    settings = refinement.RefineSettings()
    seconds, violation, restraint = 0.0, [], []
    for frames, torsions in kept:
        with torch.inference_mode(False), torch.enable_grad():
            energy = refinement._Energy(frames, torsions, topology, settings)
            motion = frames.trans.new_zeros((*frames.shape, 6))
            start = time.perf_counter()
            solve(energy, motion)
            seconds += time.perf_counter() - start
            _, atoms = energy.place(motion)
            violation.append(energy.violation(atoms).detach())
            restraint.append(energy.restraint(motion).detach())
    return seconds / len(kept), torch.cat(violation), torch.cat(restraint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starmd-small")
    parser.add_argument("--structure", default="corpus/md/1enh/1enh.pdb")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--iterations", type=int, nargs="+", default=[6, 10])
    parser.add_argument("--damping", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    kept, topology = capture(args.model, args.structure, args.frames, args.replicas)
    kept = kept[2:]  # the first calls also pay for warm-up
    quantiles = torch.tensor([0.5, 0.9, 1.0])

    def report(name: str, solve) -> None:
        seconds, violation, restraint = score(kept, topology, solve)
        v = ", ".join(f"{x:.1f}" for x in torch.quantile(violation, quantiles).tolist())
        r = ", ".join(f"{x:.1f}" for x in torch.quantile(restraint, quantiles).tolist())
        print(f"| {name} | {1000 * seconds:.1f} | {v} | {r} |")

    print(
        f"{args.model}, {args.structure}: {len(kept)} refinement calls x {args.replicas} replicas"
    )
    print("| solver | ms per call | violation median, p90, max | restraint median, p90, max |")
    print("|---|---|---|---|")
    report("Adam x 40 (library)", lambda e, m: refinement._descend(e, m, e.settings))
    for damping in args.damping:
        for iterations in args.iterations:
            report(
                f"Gauss-Newton x {iterations}, damping {damping}",
                lambda e, m, k=iterations, lam=damping: gauss_newton(e, m, k, lam),
            )


if __name__ == "__main__":
    try:
        main()
    except StarmdError as exc:  # an unknown model, an unreadable structure: one line
        raise SystemExit(f"error: {exc}") from None
