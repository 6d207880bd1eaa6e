r"""An elastic-network Gaussian prior for the motion of residues over one trajectory step.

The posterior base (:meth:`SE3TorusDiffuser.posterior_base`) needs a prior for where a frame's
residues are given the previous frame. The simplest one moves every residue independently,
``x0 ~ N(x_prev, s^2 I)``; but over 10-100 ps of MD neighbouring C-alpha atoms move together:
in the bundled corpus the bonded CA-CA distance changes by 0.08 A RMS, i/i+2 distances by ~0.3 A
and distances between residues in contact by ~0.55 A, while each residue moves 1.1-1.5 A. An
independent prior changes every distance by ~1.4 A and breaks most CA-CA bonds.

Here the prior precision (A^-2) on the 3L displacement coordinates is that of an anisotropic
network model (ANM; Atilgan et al. 2001) on the previous frame's C-alpha atoms plus an
isotropic tether:

.. math::

    P = I / s^2 + \sum_{(i, j)} k_{ij}\, (e_i - e_j)(e_i - e_j)^T \otimes u_{ij} u_{ij}^T,

with ``u_ij`` the unit vector from ``i`` to ``j``, ``k_ij = k_bond`` for residues bonded in
sequence (same chain, consecutive residue numbers) and ``k_contact`` for other pairs closer than
``cutoff``. The springs penalize (to first order) changes of inter-residue distances and leave
rigid motions and hinge-like moves to the tether ``s``. Bonds have rest lengths (those of the
input structure), so that a strained bond pulls back: the prior mean is the previous frame plus
one Newton step of the linearized spring energy. Contact springs are split: a fraction
``contact_restoring`` has the input structure's distances as rest lengths (an elastic network
around the input, as the classic ANM), the rest is relaxed at the previous frame's distances
(it correlates motion without pulling anywhere). Without rest lengths an autoregressive rollout
random-walks: its bond lengths (measured: 60% of CA-CA bonds out of 3.0-4.5 A after 20 frames
of the untrained sampler) and, with a trained network that errs slightly inwards at every
step, its size (2WQG, 40 frames at 10 ps: CA radius of gyration 9.12 -> 8.19 A without
restoring contacts, 8.9-9.1 A with 0.25-1; MD 9.2-9.9 A). The restoring part is a bias
towards the input structure: it keeps long rollouts folded but damps departures from it.
``contact_deadband`` makes it flat-bottomed: a restoring contact then pulls only on the part
of its distance change beyond the band (docs/ablations.md, "Flat-bottomed restoring springs").

Under the independent Gaussian likelihood of the VP forward process,
``x_tau = alpha x0 + sigma eps``, the posterior mean is

.. math::

    \hat x_0 = m + (P + \tfrac{\alpha^2}{\sigma^2} I)^{-1} \tfrac{\alpha}{\sigma^2}
    (x_\tau - \alpha m),

with ``m`` the prior mean: one Cholesky solve of ``P + alpha^2 / sigma^2 I`` per posterior mean
(``O((3L)^3 / 3)``, ~0.1 ms for 48 residues on one CPU thread; batched, any device; a
rollout needs one per denoising step, training one per window frame). ``P`` is sparse (bonds
and contacts within ``cutoff``: a few dozen 3x3 blocks per residue), so above
:data:`SPARSE_ABOVE` residues it is kept as a sparse matrix and each posterior mean is a sparse
direct solve (SciPy's SuperLU, float64, exact to rounding): at 1,000 residues ~10 ms per solve
against 1.8 s for the dense eigendecomposition this module used before. With ``k_bond =
k_contact = 0`` this is the independent prior exactly.

This is a modelling choice of starmd, not of the STAR-MD paper: the base is only what the
network's prediction is an update of (the network still sees the noisy state and the history),
but a base that already keeps the chain intact leaves the network less to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# above this many residues the prior is a sparse matrix with sparse direct solves (a dense
# Cholesky factorization is O(L^3) per solve)
SPARSE_ABOVE = 256


class _GaussianPosterior:
    """The posterior mean shared by the dense and sparse priors (``_update`` differs)."""

    mean_shift: torch.Tensor

    def posterior_mean(
        self,
        noisy: torch.Tensor,
        prior_mean: torch.Tensor,
        alpha: torch.Tensor,
        sigma: torch.Tensor,
    ) -> torch.Tensor:
        """Posterior mean of ``x0 (..., L, 3)`` given ``x_tau = alpha x0 + sigma eps``.

        Args:
            noisy: ``x_tau`` ``(..., L, 3)`` in Angstrom.
            prior_mean: ``(..., L, 3)`` in Angstrom (the previous frame; ``mean_shift`` is
                added to it).
            alpha, sigma: ``(...)`` mean coefficient and noise std in Angstrom, one per frame.
        """
        shape = noisy.shape
        f64 = torch.float64
        prior_mean = prior_mean.to(f64) + self.mean_shift
        alpha = alpha.to(f64).expand(shape[:-2])
        residual = (noisy.to(f64) - alpha[..., None, None] * prior_mean).flatten(-2)
        update = self._update(residual, alpha, sigma.to(f64).expand(shape[:-2]) ** 2)
        return (prior_mean + update.reshape(shape)).to(noisy.dtype)

    def _update(
        self, residual: torch.Tensor, alpha: torch.Tensor, sigma2: torch.Tensor
    ) -> torch.Tensor:
        """``(P + alpha^2 / sigma^2 I)^-1 alpha / sigma^2 r`` for ``residual (..., 3L)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class ElasticPrior(_GaussianPosterior):
    """A prior precision ``P`` on ``3L`` coordinates, as a dense matrix.

    Attributes:
        precision: ``(..., 3L, 3L)`` in A^-2, coordinates ordered residue-major (``x_1, y_1,
            z_1, x_2, ...``); symmetric positive definite (all eigenvalues >= ``1 / s^2``).
        mean_shift: ``(..., L, 3)`` Angstrom, the prior mean minus the previous frame (the
            linearized relaxation of strained bonds towards their rest lengths).
    """

    precision: torch.Tensor
    mean_shift: torch.Tensor

    def _update(
        self, residual: torch.Tensor, alpha: torch.Tensor, sigma2: torch.Tensor
    ) -> torch.Tensor:
        ratio = (alpha**2 / sigma2)[..., None, None]
        eye = torch.eye(self.precision.shape[-1], dtype=residual.dtype, device=residual.device)
        factor = torch.linalg.cholesky(self.precision + ratio * eye)
        rhs = (alpha / sigma2)[..., None, None] * residual[..., None]
        return torch.cholesky_solve(rhs, factor)[..., 0]


@dataclass(frozen=True)
class SparseElasticPrior(_GaussianPosterior):
    """The prior of :class:`ElasticPrior` as sparse precision matrices (large proteins).

    Attributes:
        precisions: one SciPy CSC matrix ``(3L, 3L)`` per batch element (batch dims flattened,
            row-major), coordinates residue-major as in :class:`ElasticPrior`.
        mean_shift: ``(..., L, 3)`` Angstrom, as in :class:`ElasticPrior`.
    """

    precisions: tuple
    mean_shift: torch.Tensor

    def _update(
        self, residual: torch.Tensor, alpha: torch.Tensor, sigma2: torch.Tensor
    ) -> torch.Tensor:
        from scipy.sparse import identity
        from scipy.sparse.linalg import splu

        flat = residual.reshape(len(self.precisions), -1).cpu().numpy()
        alphas = alpha.reshape(-1).cpu().numpy()
        sigma2s = sigma2.reshape(-1).cpu().numpy()
        update = np.empty_like(flat)
        for i, precision in enumerate(self.precisions):
            ratio = alphas[i] ** 2 / sigma2s[i]
            system = precision + ratio * identity(precision.shape[0], format="csc")
            update[i] = splu(system).solve(flat[i] * (alphas[i] / sigma2s[i]))
        return torch.from_numpy(update).to(residual.device).reshape(residual.shape)


TransPrior = ElasticPrior | SparseElasticPrior
"""Either form of the prior (:func:`elastic_prior` picks by protein size)."""


def bonded_pairs(residue_index: torch.Tensor, chain_index: torch.Tensor) -> torch.Tensor:
    """``(..., L, L)`` bool: residues consecutive in the same chain (symmetric)."""
    consecutive = (residue_index[..., :, None] - residue_index[..., None, :]).abs() == 1
    same_chain = chain_index[..., :, None] == chain_index[..., None, :]
    return consecutive & same_chain


def elastic_prior(
    ca: torch.Tensor,
    rest_ca: torch.Tensor,
    residue_mask: torch.Tensor,
    bonded: torch.Tensor,
    spread: float,
    k_bond: float,
    k_contact: float,
    cutoff: float,
    contact_restoring: float = 0.0,
    contact_deadband: float = 0.0,
) -> ElasticPrior:
    """The prior of the module docstring for C-alpha positions ``ca (..., L, 3)`` (Angstrom).

    Args:
        ca: positions the springs are built on (the previous frame), Angstrom.
        rest_ca: positions ``(..., L, 3)`` whose bonded CA-CA distances are the bonds' rest
            lengths (the input structure: 3.8 A, or 2.9 A before a cis-proline).
        residue_mask: ``(..., L)`` bool; masked (padding) residues get no springs.
        bonded: ``(..., L, L)`` bool, see :func:`bonded_pairs`.
        spread: tether ``s`` in Angstrom per coordinate.
        k_bond, k_contact: spring constants in A^-2 (precision units).
        cutoff: contact distance in Angstrom.
        contact_restoring: fraction of each contact spring whose rest length is the distance in
            ``rest_ca`` (the input structure) rather than in ``ca`` (0: contacts only correlate
            motion; 1: a full elastic network around the input structure).
        contact_deadband: Angstrom; a restoring contact pulls only on the part of its
            distance change beyond this (flat-bottomed: within the band around the input's
            distance it correlates motion without pulling; 0: linear, as a plain ANM).

    Returns:
        :class:`ElasticPrior` in float64, or :class:`SparseElasticPrior` above
        :data:`SPARSE_ABOVE` residues.
    """
    if spread <= 0 or k_bond < 0 or k_contact < 0 or cutoff <= 0 or contact_deadband < 0:
        raise ValueError(
            f"need spread > 0, stiffnesses >= 0, cutoff > 0 and deadband >= 0, got {spread}, "
            f"{k_bond}, {k_contact}, {cutoff}, {contact_deadband}"
        )
    x = ca.to(torch.float64)
    *batch, length, _ = x.shape
    if length > SPARSE_ABOVE:
        return _sparse_prior(
            x,
            rest_ca,
            residue_mask,
            bonded,
            spread,
            (k_bond, k_contact),
            cutoff,
            (contact_restoring, contact_deadband),
        )
    if x.device.type == "cpu" and not x.requires_grad:
        precision, gradient = _dense_system_compiled(
            x, rest_ca, residue_mask, bonded, spread, k_bond, k_contact, cutoff,
            contact_restoring, contact_deadband,
        )  # fmt: skip
    else:
        precision, gradient = _dense_system(
            x, rest_ca, residue_mask, bonded, spread, k_bond, k_contact, cutoff,
            contact_restoring, contact_deadband,
        )  # fmt: skip
    shift = -torch.cholesky_solve(gradient[..., None], torch.linalg.cholesky(precision))[..., 0]
    return ElasticPrior(precision=precision, mean_shift=shift.reshape(*batch, length, 3))


def _dense_system_compiled(
    x, rest_ca, residue_mask, bonded, spread, k_bond, k_contact, cutoff, restoring, deadband
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_dense_system` by the compiled loop of :mod:`starmd.diffusion.kernels`
    (CPU frames without gradient)."""
    from starmd.diffusion.kernels import dense_system  # numba: imported on first use

    *batch, length, _ = x.shape
    precision, gradient = dense_system(
        np.ascontiguousarray(x.reshape(-1, length, 3).numpy()),
        np.ascontiguousarray(
            rest_ca.to(torch.float64).expand(*batch, length, 3).reshape(-1, length, 3).numpy()
        ),
        np.ascontiguousarray(residue_mask.expand(*batch, length).reshape(-1, length).numpy()),
        np.ascontiguousarray(
            bonded.expand(*batch, length, length).reshape(-1, length, length).numpy()
        ),
        float(spread),
        float(k_bond),
        float(k_contact),
        float(cutoff),
        float(restoring),
        float(deadband),
    )
    size = 3 * length
    return (
        torch.from_numpy(precision).reshape(*batch, size, size),
        torch.from_numpy(gradient).reshape(*batch, size),
    )


def _dense_system(
    x, rest_ca, residue_mask, bonded, spread, k_bond, k_contact, cutoff, restoring, deadband
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense prior's precision ``(..., 3L, 3L)`` and the strained springs' energy gradient
    ``(..., 3L)`` for float64 C-alpha positions ``x (..., L, 3)`` (tensor operations: any
    device, differentiable; the compiled loop's reference)."""
    contact_restoring, contact_deadband = restoring, deadband
    *batch, length, _ = x.shape
    offsets = x[..., None, :, :] - x[..., :, None, :]  # (..., L, L, 3): x_j - x_i
    distance2 = (offsets**2).sum(-1)
    pair_mask = residue_mask[..., :, None] & residue_mask[..., None, :]
    pair_mask = pair_mask & ~torch.eye(length, dtype=torch.bool, device=x.device)
    contact = distance2 < cutoff**2
    k = torch.where(bonded, k_bond, torch.where(contact, k_contact, 0.0)).to(x.dtype)
    k = torch.where(pair_mask, k, 0.0)
    # springs strained away from their rest length pull back: the prior mean is one Newton step
    # of the linearized energy, d* = -P^-1 grad, grad_i = -sum_j k_ij (|r_ij| - r0_ij) u_ij
    rest = rest_ca.to(torch.float64)
    rest_distance = ((rest[..., None, :, :] - rest[..., :, None, :]) ** 2).sum(-1).sqrt()
    distance = distance2.sqrt()
    spring = torch.where(bonded, k_bond, k_contact * contact_restoring)
    excess = _beyond_band(distance - rest_distance, bonded, contact_deadband)
    strain = torch.where(bonded | contact, excess, 0.0) * spring
    strain = torch.where(pair_mask, strain, 0.0)
    unit = offsets / distance.clamp_min(1e-6)[..., None]
    gradient = -(strain[..., None] * unit).sum(-2).flatten(-2)  # (..., 3L)
    outer = offsets[..., :, None] * offsets[..., None, :]  # (..., L, L, 3, 3)
    blocks = -(k / distance2.clamp_min(1e-6))[..., None, None] * outer
    diagonal = -blocks.sum(-3)  # (..., L, 3, 3)
    eye_l = torch.eye(length, dtype=x.dtype, device=x.device)
    blocks = blocks + eye_l[..., None, None] * diagonal[..., :, None, :, :]
    hessian = blocks.transpose(-3, -2).reshape(*batch, 3 * length, 3 * length)
    precision = hessian + torch.eye(3 * length, dtype=x.dtype, device=x.device) / spread**2
    return precision, gradient


def _sparse_prior(
    x: torch.Tensor,
    rest_ca: torch.Tensor,
    residue_mask: torch.Tensor,
    bonded: torch.Tensor,
    spread: float,
    stiffness: tuple[float, float],
    cutoff: float,
    restoring: tuple[float, float],
) -> SparseElasticPrior:
    """:func:`elastic_prior` as sparse matrices, built from the list of springs (bonded pairs
    and contacts): no ``L x L x 3`` tensors, the Hessian's 3x3 blocks of the springs only.
    ``stiffness`` is ``(k_bond, k_contact)``, ``restoring`` ``(contact_restoring,
    contact_deadband)``."""
    from scipy.sparse import coo_matrix, identity
    from scipy.sparse.linalg import splu

    (k_bond, k_contact), (contact_restoring, contact_deadband) = stiffness, restoring
    *batch, length, _ = x.shape
    n = 3 * length
    flat_x = x.reshape(-1, length, 3)
    flat_rest = rest_ca.to(torch.float64).expand(*batch, length, 3).reshape(-1, length, 3)
    flat_mask = residue_mask.expand(*batch, length).reshape(-1, length)
    flat_bonded = bonded.expand(*batch, length, length).reshape(-1, length, length)
    tether = identity(n, format="csc") / spread**2
    residues = torch.arange(length, device=x.device)
    precisions, shifts = [], []
    for e in range(flat_x.shape[0]):
        springs = flat_bonded[e] | (torch.cdist(flat_x[e], flat_x[e]) < cutoff)
        springs &= flat_mask[e][:, None] & flat_mask[e][None, :]
        springs.fill_diagonal_(False)
        i, j = torch.nonzero(springs, as_tuple=True)  # both orders of every spring
        is_bond = flat_bonded[e, i, j]
        offsets = flat_x[e, j] - flat_x[e, i]
        distance2 = (offsets**2).sum(-1)
        distance = distance2.sqrt()
        k = torch.where(is_bond, k_bond, k_contact).to(x.dtype)
        block = -(k / distance2.clamp_min(1e-6))[:, None, None] * (
            offsets[:, :, None] * offsets[:, None, :]
        )  # (E, 3, 3): off-diagonal block (i, j)
        diagonal = torch.zeros(length, 3, 3, dtype=block.dtype, device=block.device)
        diagonal.index_add_(0, i, -block)
        rows, cols = _block_entries(torch.cat([i, residues]), torch.cat([j, residues]))
        values = torch.cat([block.reshape(-1), diagonal.reshape(-1)])
        hessian = coo_matrix((values.cpu().numpy(), (rows, cols)), shape=(n, n)).tocsc()
        precision = hessian + tether
        # the strained springs' pull, as in the dense code
        rest_distance = (flat_rest[e, j] - flat_rest[e, i]).norm(dim=-1)
        spring = torch.where(is_bond, k_bond, k_contact * contact_restoring)
        excess = _beyond_band(distance - rest_distance, is_bond, contact_deadband)
        pull = (excess * spring)[:, None] * offsets
        pull = pull / distance.clamp_min(1e-6)[:, None]
        gradient = -torch.zeros(length, 3, dtype=x.dtype, device=x.device).index_add_(0, i, pull)
        precisions.append(precision)
        shifts.append(-splu(precision).solve(gradient.reshape(-1).cpu().numpy()))
    shift = torch.from_numpy(np.stack(shifts)).to(x.device)
    return SparseElasticPrior(tuple(precisions), shift.reshape(*batch, length, 3))


def _beyond_band(change: torch.Tensor, bonded: torch.Tensor, band: float) -> torch.Tensor:
    """Distance changes from the rest length, less ``band`` towards zero for contacts (bonds
    keep the whole change): the strain a flat-bottomed restoring spring acts on."""
    if band <= 0:
        return change
    soft = torch.sign(change) * torch.relu(change.abs() - band)
    return torch.where(bonded, change, soft)


def _block_entries(block_rows: torch.Tensor, block_cols: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Matrix row and column indices of the 3x3 blocks ``(block_rows[e], block_cols[e])``,
    flattened block by block in row-major order."""
    xyz = torch.arange(3, device=block_rows.device)
    rows = 3 * block_rows[:, None, None] + xyz[None, :, None]
    cols = 3 * block_cols[:, None, None] + xyz[None, None, :]
    rows, cols = torch.broadcast_tensors(rows, cols)
    return rows.reshape(-1).cpu().numpy(), cols.reshape(-1).cpu().numpy()
