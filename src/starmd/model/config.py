"""Typed configuration of the denoiser network.

Three presets: :meth:`DenoiserConfig.tiny` (tests), :meth:`DenoiserConfig.small` (CPU default) and
:meth:`DenoiserConfig.base` (GPU; the STAR-MD paper's sizes: hidden 256, 8 heads, 4 blocks,
pair 128). ``starmd.model.count_parameters`` gives their sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ATTENTION_LAYOUTS = ("joint", "factorized")


@dataclass(frozen=True)
class DenoiserConfig:
    """Sizes and options of :class:`starmd.model.StarDenoiser`.

    Attributes:
        c_s: single (per-token) feature width.
        c_z: pair feature width (per frame only; never crosses time, never cached).
        c_cond: width of the (diffusion time, log dt) embedding that drives adaptive LayerNorm.
        n_blocks: number of blocks (IPA -> 2 joint attention layers -> pair update -> rigid update).
        n_heads: heads of the joint spatio-temporal attention.
        c_head: scalar head width of the joint attention; ``rope_residue_dims`` of it rotate with
            residue index, ``rope_time_dims`` with physical time, the rest are plain.
        n_qk_points / n_v_points: query/key and value points per head of the point term inside the
            joint attention.
        ipa_heads, ipa_c_head, ipa_qk_points, ipa_v_points: per-frame IPA sizes (AlphaFold Alg. 22).
        c_outer: rank of the per-frame outer-product pair update.
        transition_factor: hidden width of transition MLPs as a multiple of ``c_s``.
        relpos_clip: relative residue offsets are clipped to ``[-relpos_clip, relpos_clip]``.
        n_rbf, rbf_max_angstrom: Gaussian radial basis of CA-CA distances, centres on
            ``[0, rbf_max_angstrom]``.
        rope_time_min_ns / rope_time_max_ns: the time rotary periods are log-spaced over this range.
        rope_residue_base: base of the (geometric) residue-index rotary frequencies.
        c_prior_single / c_prior_pair: widths of optional pretrained single/pair features; 0 means
            the model has no prior input (and no parameters for it, so DDP sees no unused ones).
        stop_rotation_gradient: detach frame rotations between blocks (AlphaFold); pair it with an
            auxiliary loss on :attr:`DenoiserOutput.frames_per_block`, otherwise the rotation
            updates of all but the last block receive no gradient.
        trans_scale: Angstrom -> internal length unit (0.1: nanometres), so coordinates and
            predicted translation updates are O(1).
        pair_neighbours: per-frame pair features, the pair update and IPA cover each residue's
            ``pair_neighbours`` nearest residues (C-alpha distance in the input structure,
            itself included) when a protein has more residues; all pairs otherwise. Keeps their
            cost O(L k) instead of O(L^2); the joint attention still sees every residue. Each
            preset's value equals its configs' training crop (64 for tiny/small, 256 for base),
            so a model never meets more partners than it learned with, and proteins up to the
            crop size see every pair, as before this option. ``None``: always all pairs.
        attention_neighbours: restrict the joint attention across frames: a token sees, in every
            other frame it may see, only its ``attention_neighbours`` nearest residues (C-alpha
            distance in the input structure, itself included), and every residue of its own
            frame. ``None`` (default, the paper's joint attention): every residue of every
            visible frame. Implemented as a key mask on the same attention call, so it changes
            what is attended, not the cost (gathered forms measured slower on a CPU up to
            1,000 residues: docs/profile_step.md); no bundled model uses it.
        attention_layout: ``"joint"`` (default, the paper's model): both attention layers of a
            block see every visible token. ``"factorized"`` (the paper's ablation, space then
            time): a block's first attention layer is spatial (a token sees only the residues
            of its own frame) and its second temporal (a token sees only its own residue, in
            its own frame and the earlier frames the causal layout allows). Key masks on the
            same layers: no parameters change, so a factorized model can start from joint
            weights; no bundled model uses it.
        torsion_skip: predict each clean torsion as the posterior mean direction of a von
            Mises belief from the context (the torsion head's output ``kappa (sin, cos)`` of its
            mean direction, the natural parameters) times the noisy torsion's likelihood
            (``(sin, cos)`` of the noisy angle times ``1 / sigma(tau)^2``, the wrapped normal's
            concentration for small sigma): the noisy torsion passes straight through at low
            noise, as an EDM skip connection, and the head only has to say how sure the context
            is. Off (default, every bundled model before version 4): the head predicts the
            clean torsion alone, and a trained head follows the noisy torsion only part of the
            way even at the lowest noise (docs/model_card.md, "Version 4").
        torsion_sigma_min, torsion_sigma_max: the torsion diffusion's noise range (radians),
            needed by ``torsion_skip``; set from the training configuration's diffusion section
            (:meth:`starmd.modelfile.config.TrainConfig.denoiser`), not by hand.
    """

    c_s: int = 128
    c_z: int = 32
    c_cond: int = 128
    n_blocks: int = 2
    n_heads: int = 4
    c_head: int = 32
    n_qk_points: int = 4
    n_v_points: int = 4
    ipa_heads: int = 4
    ipa_c_head: int = 16
    ipa_qk_points: int = 4
    ipa_v_points: int = 8
    c_outer: int = 8
    transition_factor: int = 2
    relpos_clip: int = 32
    n_rbf: int = 16
    rbf_max_angstrom: float = 22.0
    rope_residue_dims: int = 8
    rope_time_dims: int = 8
    rope_residue_base: float = 1000.0
    rope_time_min_ns: float = 0.01
    rope_time_max_ns: float = 1000.0
    c_prior_single: int = 0
    c_prior_pair: int = 0
    stop_rotation_gradient: bool = True
    trans_scale: float = 0.1
    pair_neighbours: int | None = 64
    attention_neighbours: int | None = None
    attention_layout: Literal["joint", "factorized"] = "joint"
    torsion_skip: bool = False
    torsion_sigma_min: float = 0.01
    torsion_sigma_max: float = math.pi

    def __post_init__(self) -> None:
        if self.rope_residue_dims % 2 or self.rope_time_dims % 2:
            raise ValueError("rotary dimensions must be even")
        if self.rope_residue_dims + self.rope_time_dims > self.c_head:
            raise ValueError(
                f"rotary dims {self.rope_residue_dims}+{self.rope_time_dims} exceed c_head "
                f"{self.c_head}"
            )
        if self.n_blocks < 1:
            raise ValueError("n_blocks must be >= 1")
        if self.pair_neighbours is not None and self.pair_neighbours < 1:
            raise ValueError(f"pair_neighbours must be >= 1 or None, got {self.pair_neighbours}")
        if self.attention_neighbours is not None and self.attention_neighbours < 1:
            raise ValueError(
                f"attention_neighbours must be >= 1 or None, got {self.attention_neighbours}"
            )
        if not 0 < self.torsion_sigma_min < self.torsion_sigma_max:
            raise ValueError(
                "torsion noise range must satisfy 0 < min < max, got "
                f"{self.torsion_sigma_min}, {self.torsion_sigma_max}"
            )
        if self.attention_layout not in ATTENTION_LAYOUTS:
            raise ValueError(
                f"attention_layout must be one of {ATTENTION_LAYOUTS}, "
                f"got {self.attention_layout!r}"
            )

    @classmethod
    def tiny(cls, **overrides: object) -> DenoiserConfig:
        """Test-sized model (about 0.15 M parameters)."""
        base = dict(
            c_s=32,
            c_z=16,
            c_cond=32,
            n_blocks=2,
            n_heads=4,
            c_head=16,
            n_qk_points=2,
            n_v_points=2,
            ipa_heads=4,
            ipa_c_head=8,
            ipa_qk_points=2,
            ipa_v_points=4,
            c_outer=4,
            n_rbf=8,
            rope_residue_dims=4,
            rope_time_dims=4,
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    @classmethod
    def small(cls, **overrides: object) -> DenoiserConfig:
        """CPU default (about 1.6 M parameters)."""
        return cls(**overrides)  # type: ignore[arg-type]

    @classmethod
    def base(cls, **overrides: object) -> DenoiserConfig:
        """GPU size of the STAR-MD paper (about 14 M parameters): hidden 256, 8 heads, 4 blocks,
        pair 128; pair features over 256 neighbours (its configs train on 256-residue crops)."""
        base = dict(
            pair_neighbours=256,
            c_s=256,
            c_z=128,
            c_cond=256,
            n_blocks=4,
            n_heads=8,
            c_head=32,
            n_qk_points=4,
            n_v_points=8,
            ipa_heads=8,
            ipa_c_head=16,
            ipa_qk_points=4,
            ipa_v_points=8,
            c_outer=16,
            n_rbf=32,
            rope_residue_dims=8,
            rope_time_dims=16,
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    @classmethod
    def preset(cls, name: str, **overrides: object) -> DenoiserConfig:
        """``"tiny"``, ``"small"`` or ``"base"``."""
        presets = {"tiny": cls.tiny, "small": cls.small, "base": cls.base}
        if name not in presets:
            raise ValueError(f"unknown denoiser preset {name!r}; choose from {sorted(presets)}")
        return presets[name](**overrides)
