"""Invariant input features: residue embedding, per-frame pair features, (tau, log dt) embedding.

Everything here is a function of invariant quantities only (residue types, residue/chain indices,
inter-residue CA distances, torsion angles, diffusion and physical times), which is what makes
the network's SE(3) behaviour exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from starmd.model.config import DenoiserConfig
from starmd.model.inputs import FrameTokens, ProteinConditioning
from starmd.structure.rigid import Rigid

NUM_RESIDUE_TYPES = 21  # 20 standard + unknown/padding


def rbf(distances: torch.Tensor, n_bins: int, max_value: float) -> torch.Tensor:
    """Gaussian radial basis ``(...,) -> (..., n_bins)``, centres evenly on ``[0, max_value]``."""
    centres = torch.linspace(0.0, max_value, n_bins, dtype=distances.dtype, device=distances.device)
    width = max_value / (n_bins - 1)
    return torch.exp(-(((distances[..., None] - centres) / width) ** 2))


def ca_distances(frames: Rigid) -> torch.Tensor:
    """Pairwise CA-CA distances ``(..., L, L)`` in Angstrom of frames ``(..., L)``."""
    x = frames.trans
    return _distance(x[..., :, None, :], x[..., None, :, :])


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b|`` over the last dim; eps inside the sqrt keeps zero distances differentiable."""
    return torch.sqrt(((a - b) ** 2).sum(-1) + 1e-10)


def nearest_neighbours(
    points: torch.Tensor, residue_mask: torch.Tensor, k: int | None
) -> torch.Tensor | None:
    """Indices ``(B, L, k)`` of each residue's ``k`` nearest residues (itself first), by distance
    between ``points (B, L, 3)``; padding residues come last. None when ``k`` is None or
    ``L <= k`` (every pair is kept). Depends on distances only, so it is invariant to rigid
    motions of ``points``."""
    length = points.shape[-2]
    if k is None or length <= k:
        return None
    # (B, L, L) distances without a (B, L, L, 3) difference tensor; exact (no matmul expansion)
    distance = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
    distance = distance.masked_fill(~residue_mask[..., None, :], torch.inf)
    return torch.topk(distance, k, dim=-1, largest=False, sorted=True).indices


def gather_neighbours(x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Per-residue values of the neighbours: ``x (N, L, *f)``, ``neighbours (N, L, k)`` ->
    ``(N, L, k, *f)``."""
    rows = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return x[rows, neighbours]


def neighbours_per_group(neighbours: torch.Tensor, groups: int) -> torch.Tensor:
    """The same neighbour lists ``(B, L, k)`` for each of ``groups`` frame groups, as
    ``(B G, L, k)``: for :func:`gather_neighbours` on ``(B G, L, ...)`` tensors."""
    b, l, k = neighbours.shape
    return neighbours[:, None].expand(b, groups, l, k).flatten(0, 1)


def gather_pairs(z: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Pair values of the neighbour pairs: ``z (N, L, L, *f)``, ``neighbours (N, L, k)`` ->
    ``(N, L, k, *f)`` with entry ``[n, i, j] = z[n, i, neighbours[n, i, j]]``."""
    rows = torch.arange(z.shape[0], device=z.device)[:, None, None]
    cols = torch.arange(z.shape[1], device=z.device)[None, :, None]
    return z[rows, cols, neighbours]


def fourier_features(x: torch.Tensor, n: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sin/cos features ``(...,) -> (..., 2n)`` with log-spaced periods on [min, max]."""
    periods = torch.logspace(
        math.log10(min_period), math.log10(max_period), n, dtype=x.dtype, device=x.device
    )
    angles = 2 * math.pi * x[..., None] / periods
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConditioningEmbedding(nn.Module):
    """Embedding of (diffusion time tau, log dt) per group, the input of adaptive LayerNorm.

    ``tau (B, G)``, ``dt_ps (B,)`` -> ``(B, G, c_cond)``.
    """

    n_fourier = 16

    def __init__(self, c_cond: int) -> None:
        super().__init__()
        self.tau_mlp = nn.Sequential(
            nn.Linear(2 * self.n_fourier, c_cond), nn.SiLU(), nn.Linear(c_cond, c_cond)
        )
        self.dt_mlp = nn.Sequential(
            nn.Linear(2 * self.n_fourier, c_cond), nn.SiLU(), nn.Linear(c_cond, c_cond)
        )

    def forward(
        self, tau: torch.Tensor, dt_ps: torch.Tensor, dt_embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``dt_embedding``: :meth:`embed_dt` of ``dt_ps``, if already known (it is fixed for a
        rollout)."""
        tau_feat = fourier_features(tau, self.n_fourier, 0.05, 8.0)
        if dt_embedding is None:
            dt_embedding = self.embed_dt(dt_ps)
        return self.tau_mlp(tau_feat) + dt_embedding

    def embed_dt(self, dt_ps: torch.Tensor) -> torch.Tensor:
        """The log dt part ``(B, 1, c_cond)`` of ``dt_ps (B,)``."""
        # log10(dt / 1 ps) spans about -2..5 for dt in 0.01 ps..100 ns.
        log_dt = torch.log10(dt_ps.clamp_min(1e-6))
        dt_feat = fourier_features(log_dt, self.n_fourier, 0.5, 40.0)
        return self.dt_mlp(dt_feat)[:, None, :]


class SingleEmbedding(nn.Module):
    """Initial single features per token: residue type, torsion (sin, cos), optional prior.

    ``-> (B, G, L, c_s)``.
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.aatype = nn.Embedding(NUM_RESIDUE_TYPES, config.c_s)
        self.torsion = nn.Linear(7 * 2 + 7, config.c_s)
        self.prior = (
            nn.Sequential(
                nn.LayerNorm(config.c_prior_single), nn.Linear(config.c_prior_single, config.c_s)
            )
            if config.c_prior_single
            else None
        )

    def forward(
        self,
        cond: ProteinConditioning,
        tokens: FrameTokens,
        residue: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``residue``: :meth:`residue_features` of ``cond``, if already known."""
        aatype, prior = self.residue_features(cond) if residue is None else residue
        mask = cond.torsion_mask.to(tokens.torsions.dtype)[:, None]  # (B, 1, L, 7)
        angles = tokens.torsions
        feats = torch.cat(
            [angles.sin() * mask, angles.cos() * mask, mask.expand_as(angles)], dim=-1
        )
        s = self.torsion(feats) + aatype
        if prior is not None:
            s = s + prior
        return s

    def residue_features(
        self, cond: ProteinConditioning
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frame-independent terms ``(B, 1, L, c_s)``: residue type embedding and, when the
        model has one, the prior single features' projection (else None)."""
        aatype = self.aatype(cond.aatype)[:, None]
        prior = None if self.prior is None else self.prior(cond.prior_single)[:, None]
        return aatype, prior


class PairEmbedding(nn.Module):
    """Per-frame pair features: relative position, CA distances of the frame and of the
    initial structure, optional prior pair features.

    The frame-independent part (:meth:`protein_pair`, ``(B, L, L, c_z)``) is computed once per
    call; :meth:`forward` adds the frame's distances, giving ``(B, G, L, L, c_z)``.
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        n_rel = 2 * config.relpos_clip + 2  # clipped offsets + "other chain"
        self.relpos = nn.Embedding(n_rel, config.c_z)
        self.init_dist = nn.Linear(config.n_rbf, config.c_z, bias=False)
        self.frame_dist = nn.Linear(config.n_rbf, config.c_z, bias=False)
        self.prior = (
            nn.Sequential(
                nn.LayerNorm(config.c_prior_pair), nn.Linear(config.c_prior_pair, config.c_z)
            )
            if config.c_prior_pair
            else None
        )

    def relative_position_bins(self, cond: ProteinConditioning) -> torch.Tensor:
        """Bins ``(B, L, L)``: clipped offset ``j - i`` within a chain, a last bin across chains."""
        clip = self.config.relpos_clip
        offset = cond.residue_index[:, None, :] - cond.residue_index[:, :, None]
        bins = offset.clamp(-clip, clip) + clip
        same_chain = cond.chain_index[:, None, :] == cond.chain_index[:, :, None]
        return torch.where(same_chain, bins, torch.full_like(bins, 2 * clip + 1))

    def protein_pair(
        self, cond: ProteinConditioning, neighbours: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Frame-independent pair features ``(B, L, L, c_z)``, or ``(B, L, k, c_z)`` over
        ``neighbours (B, L, k)`` (:func:`nearest_neighbours`)."""
        c = self.config
        bins = self.relative_position_bins(cond)
        distances = ca_distances(cond.init_frames)
        prior = None if self.prior is None else cond.prior_pair
        if neighbours is not None:
            bins, distances = gather_pairs(bins, neighbours), gather_pairs(distances, neighbours)
            prior = None if prior is None else gather_pairs(prior, neighbours)
        z = self.relpos(bins) + self.init_dist(rbf(distances, c.n_rbf, c.rbf_max_angstrom))
        if prior is not None:
            z = z + self.prior(prior)
        return z

    def forward(
        self, protein_pair: torch.Tensor, frames: Rigid, neighbours: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``protein_pair (B, L, L | k, c_z)``, ``frames (B, G, L)`` -> ``(B, G, L, L | k, c_z)``
        (``k`` with ``neighbours (B, L, k)``)."""
        c = self.config
        if neighbours is None:
            distances = ca_distances(frames)
        else:
            b, g = frames.shape[:2]
            x = frames.trans.flatten(0, 1)  # (B G, L, 3)
            near = gather_neighbours(x, neighbours_per_group(neighbours, g))
            distances = _distance(x[:, :, None], near).unflatten(0, (b, g))
        d = rbf(distances, c.n_rbf, c.rbf_max_angstrom)
        return protein_pair[:, None] + self.frame_dist(d)
