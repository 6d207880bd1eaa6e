"""The STAR-MD denoiser: a causal diffusion transformer over (frame, residue) tokens.

Block (repeated ``n_blocks`` times), every sublayer a residual branch with DiT-style adaptive
LayerNorm (shift, scale, gate from the (tau, log dt) embedding of the token's group):

1. per-frame invariant point attention (:class:`~starmd.model.ipa.InvariantPointAttention`) with
   that frame's pair features, then a transition MLP;
2. two joint spatio-temporal attention layers
   (:class:`~starmd.model.joint_attention.JointSpatioTemporalAttention`), each with an MLP;
   with ``DenoiserConfig.attention_layout="factorized"`` the first is spatial (own frame only)
   and the second temporal (own residue only), by key masks on the same layers;
3. a per-frame pair update (outer product of single features; skipped in the last block, whose
   pair would feed nothing) and a rigid update in each token's local frame.

The output frames are the input frames composed with the accumulated local updates; the network
sees only invariant features (distances, residue types, torsions, times) and expresses geometry
through local frames, so a global rigid motion of all inputs moves the predicted frames by the
same motion and leaves torsions unchanged.

Three entry points share one trunk:

* :meth:`StarDenoiser.forward` -- the training layout (clean + noisy copies of a window);
* :meth:`StarDenoiser.append_clean` / :meth:`StarDenoiser.denoise` -- rollout with a
  :class:`~starmd.model.kv_cache.KVCache`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from starmd.errors import StarmdError, StarmdInputError
from starmd.model.config import DenoiserConfig
from starmd.model.features import (
    ConditioningEmbedding,
    PairEmbedding,
    SingleEmbedding,
    nearest_neighbours,
    neighbours_per_group,
)
from starmd.model.inputs import DenoiserOutput, FrameTokens, ProteinConditioning, WindowOutput
from starmd.model.ipa import InvariantPointAttention
from starmd.model.joint_attention import (
    AttentionContext,
    CacheContext,
    GroupRotary,
    JointSpatioTemporalAttention,
    MaskedContext,
    factorized_contexts,
)
from starmd.model.kv_cache import KVCache
from starmd.model.layers import OuterProductPairUpdate, RigidUpdate, TorsionHead, Transition
from starmd.model.masks import training_attention_mask, training_block_mask
from starmd.structure.rigid import Rigid

ATTENTION_LAYERS_PER_BLOCK = 2


def masked_centroid(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``points (..., L, 3)`` over ``mask (..., L)`` -> ``(..., 3)``."""
    weights = mask.to(points.dtype)[..., None]
    return (points * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)


@dataclass(frozen=True)
class ProteinFeatures:
    """What the trunk derives from :class:`ProteinConditioning` alone (the same for every frame).

    Attributes:
        neighbours: pair partners ``(B, L, k)`` (None: all pairs; see ``pair_neighbours``).
        protein_pair: frame-independent pair features ``(B, L, L | k, c_z)``.
        residue: residue type embedding and prior single term, each ``(B, 1, L, c_s)`` (the
            prior None without one).
        dt_embedding: the log dt part of the adaLN conditioning ``(B, 1, c_cond)``.
        reference: ``(B, 3)`` Angstrom, the initial structure's centroid, origin of the joint
            attention's global points.
        rotary: the rotary tables' residue part.
        attention_near: ``(B, L, L)`` bool, the residues a token sees in other frames (None:
            all; see ``DenoiserConfig.attention_neighbours``).
    """

    neighbours: torch.Tensor | None
    protein_pair: torch.Tensor
    residue: tuple[torch.Tensor, torch.Tensor | None]
    dt_embedding: torch.Tensor
    reference: torch.Tensor
    rotary: GroupRotary
    attention_near: torch.Tensor | None = None


class DenoiserBlock(nn.Module):
    """IPA -> 2 x joint attention -> pair update -> rigid update (see module docstring)."""

    n_sublayers = 2 + 2 * ATTENTION_LAYERS_PER_BLOCK

    def __init__(self, config: DenoiserConfig, pair_update: bool) -> None:
        super().__init__()
        c = config
        self.config = config
        self.modulation = nn.Linear(c.c_cond, self.n_sublayers * 3 * c.c_s)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.norm = nn.LayerNorm(c.c_s, elementwise_affine=False)
        self.ipa = InvariantPointAttention(
            c.c_s, c.c_z, c.ipa_heads, c.ipa_c_head, c.ipa_qk_points, c.ipa_v_points
        )
        self.ipa_transition = Transition(c.c_s, c.transition_factor)
        self.attention = nn.ModuleList(
            JointSpatioTemporalAttention(c) for _ in range(ATTENTION_LAYERS_PER_BLOCK)
        )
        self.attention_transition = nn.ModuleList(
            Transition(c.c_s, c.transition_factor) for _ in range(ATTENTION_LAYERS_PER_BLOCK)
        )
        self.pair_update = OuterProductPairUpdate(c.c_s, c.c_z, c.c_outer) if pair_update else None
        self.pair_norm = nn.LayerNorm(c.c_z)
        self.rigid_update = RigidUpdate(c.c_s, c.trans_scale)

    def forward(
        self,
        s: torch.Tensor,
        z: torch.Tensor,
        frames: Rigid,
        cond_emb: torch.Tensor,
        residue_mask: torch.Tensor,
        reference: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: AttentionContext,
        first_layer: int,
        neighbours: torch.Tensor | None = None,
        keep: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Rigid]:
        """One block.

        Args:
            s: single ``(B, G, L, c_s)``; z: pair ``(B, G, L, L, c_z)`` (``(B, G, L, k, c_z)``
                with ``neighbours (B, L, k)``, see ``DenoiserConfig.pair_neighbours``).
            frames: :class:`Rigid` ``(B, G, L)`` in Angstrom.
            cond_emb: ``(B, G, c_cond)``; residue_mask: ``(B, L)`` bool.
            reference: ``(B, 3)`` Angstrom, origin of the joint attention's global points.
            rope: rotary cos/sin for the ``G*L`` tokens; context: attention visibility.
            first_layer: cache index of this block's first attention layer.
            keep: only the last ``keep`` groups' outputs are wanted (a block without pair
                update only): the others still give the keys/values of every attention layer,
                but skip the last layer's queries and everything after it.

        Returns:
            updated ``s``, ``z`` (None after the last block) and frames, of the kept groups.
        """
        if keep is not None and self.pair_update is not None:
            raise ValueError("keep needs a block without pair update (the last one)")
        cfg = self.config
        b, g, l, _ = s.shape
        mods = self.modulation(nn.functional.silu(cond_emb))  # (B, G, 18 c_s)
        # (shift, 1 + scale, gate) of each sublayer, each (B, G, 1, c_s); 1 + scale at once
        shift, scale, gate = mods.view(b, g, 1, self.n_sublayers, 3, -1).unbind(-2)
        shifts, scales, gates = shift.unbind(-2), (1 + scale).unbind(-2), gate.unbind(-2)
        token_mask = residue_mask[:, None, :, None].to(s.dtype)

        def residual(x: torch.Tensor, index: int, fn) -> torch.Tensor:
            modulated = self.norm(x) * scales[index] + shifts[index]
            return x + gates[index] * fn(modulated)

        # 1. per-frame IPA, coordinates centred on each frame's centroid.
        frame_mask = residue_mask[:, None].expand(b, g, l)
        centre = masked_centroid(frames.trans, frame_mask)
        ipa_frames = Rigid(frames.rots, (frames.trans - centre[:, :, None]) * cfg.trans_scale)
        z_in = self.pair_norm(z)
        ipa_neighbours = None if neighbours is None else neighbours_per_group(neighbours, g)

        def ipa(x: torch.Tensor) -> torch.Tensor:
            out = self.ipa(
                x.reshape(b * g, l, -1),
                z_in.flatten(0, 1),
                ipa_frames.map_tensors(lambda t: t.flatten(0, 1)),
                frame_mask.reshape(b * g, l),
                ipa_neighbours,
            )
            return out.view(b, g, l, -1)

        s = residual(s, 0, ipa)
        s = residual(s, 1, self.ipa_transition)

        # 2. joint attention over all G*L tokens.
        joint_frames = Rigid(
            frames.rots.reshape(b, g * l, 3, 3),
            (frames.trans - reference[:, None, None]).reshape(b, g * l, 3) * cfg.trans_scale,
        )
        for i, (attention, transition) in enumerate(
            zip(self.attention, self.attention_transition, strict=True)
        ):
            last = i + 1 == ATTENTION_LAYERS_PER_BLOCK
            out_groups = keep if keep is not None and last else g

            def attend(
                x: torch.Tensor, attention=attention, layer=first_layer + i, out_groups=out_groups
            ) -> torch.Tensor:
                x = x.reshape(b, g * l, -1)
                out = attention(x, joint_frames, rope, context, layer, queries=out_groups * l)
                return out.view(b, out_groups, l, -1)

            if out_groups == g:
                s = residual(s, 2 + 2 * i, attend)
            else:  # the dropped groups' outputs are not wanted: residual of the kept ones
                drop = g - out_groups
                modulated = self.norm(s) * scales[2 + 2 * i] + shifts[2 + 2 * i]
                s = s[:, drop:] + gates[2 + 2 * i][:, drop:] * attend(modulated)
                shifts, scales, gates = ([m[:, drop:] for m in x] for x in (shifts, scales, gates))
                frames = frames[:, drop:]
            s = residual(s, 3 + 2 * i, transition)
        s = s * token_mask

        # 3. pair and rigid updates.
        z_out = z + self.pair_update(s, neighbours) if self.pair_update is not None else None
        # Frames are composed in full precision even under autocast (errors would accumulate).
        with torch.autocast(device_type=s.device.type, enabled=False):
            frames = frames.compose(self.rigid_update(s.to(frames.dtype)))
        return s, z_out, frames


def torsion_posterior(
    context: torch.Tensor,
    noisy: torch.Tensor,
    tau: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
) -> torch.Tensor:
    """Unit ``(sin, cos)`` ``(B, G, L, 7, 2)`` of the posterior mean direction of each clean
    torsion (``DenoiserConfig.torsion_skip``).

    ``context`` ``(B, G, L, 7, 2)``: the torsion head's output, read as the natural parameters
    ``kappa (sin mu, cos mu)`` of a von Mises belief from everything but the noisy torsion;
    ``noisy`` ``(B, G, L, 7)`` radians at diffusion times ``tau (B, G)``, whose likelihood is a
    wrapped normal of scale ``sigma(tau) = sigma_min^(1 - tau) sigma_max^tau``, approximated by
    the von Mises of concentration ``1 / sigma^2`` (exact as sigma -> 0). The product of two von
    Mises densities is a von Mises whose natural parameters are the sum, so the prediction is
    the direction of ``context + (sin, cos)(noisy) / sigma^2``: the noisy torsion itself at low
    noise, the context's mean at high noise.
    """
    log_sigma = (1.0 - tau) * math.log(sigma_min) + tau * math.log(sigma_max)
    concentration = torch.exp(-2.0 * log_sigma).to(context.dtype)[..., None, None, None]
    observed = torch.stack([torch.sin(noisy), torch.cos(noisy)], dim=-1).to(context.dtype)
    natural = context + concentration * observed
    return natural / torch.sqrt((natural**2).sum(-1, keepdim=True) + 1e-8)


class StarDenoiser(nn.Module):
    """Causal spatio-temporal SE(3) denoiser; predicts clean frames and torsions per token."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        self.single_embedding = SingleEmbedding(config)
        self.pair_embedding = PairEmbedding(config)
        self.conditioning = ConditioningEmbedding(config.c_cond)
        self.blocks = nn.ModuleList(
            DenoiserBlock(config, pair_update=i < config.n_blocks - 1)
            for i in range(config.n_blocks)
        )
        self.torsion_head = TorsionHead(config.c_s)
        # the reference's pose in each token's frame (nm translation + 2 rotation columns) ...
        self.reference_embedding = nn.Linear(9, config.c_s)
        # ... and the clean prediction as an update of the reference (zero-init: "no motion")
        self.reference_update = RigidUpdate(config.c_s, config.trans_scale)
        self._compiled_trunk = None  # compile_rollout()

    @property
    def num_attention_layers(self) -> int:
        """Joint attention layers, i.e. layers of a :class:`KVCache`."""
        return ATTENTION_LAYERS_PER_BLOCK * self.config.n_blocks

    # entry points -------------------------------------------------------------------------------
    def forward(
        self,
        cond: ProteinConditioning,
        clean: FrameTokens,
        noisy: FrameTokens,
        window: int | None = None,
        sink: bool = False,
        attention: Literal["sdpa", "flex"] = "sdpa",
    ) -> WindowOutput:
        """Training layout: clean copies ``c_0..c_{K-1}`` and noisy copies ``n_0..n_{K-1}``.

        Args:
            cond: per-protein inputs, ``(B, L)``.
            clean: the window's clean (contextually noised) frames, ``G = K``.
            noisy: the same frames at diffusion times ``noisy.tau``, ``G = K``.
            window: context window ``W`` (None: all earlier frames); see :mod:`starmd.model.masks`.
            sink: keep ``c_0`` visible outside the window.
            attention: ``"sdpa"`` (dense boolean mask ``(B, 1, 2KL, 2KL)``) or ``"flex"``
                (FlexAttention block mask, compiled on GPU; on CPU it runs eagerly and
                forward-only, as PyTorch has no FlexAttention backward on CPU).

        Returns:
            :class:`WindowOutput` with predictions for both copies, each ``G = K``.
        """
        k = clean.num_groups
        if noisy.num_groups != k:
            raise StarmdInputError(f"clean has {k} frames but noisy has {noisy.num_groups}")
        if attention == "sdpa":
            mask = training_attention_mask(k, cond.residue_mask, window, sink)
        elif attention == "flex":
            mask = training_block_mask(k, cond.residue_mask, window, sink)
        else:
            raise ValueError(f"attention must be 'sdpa' or 'flex', got {attention!r}")
        out = self._trunk(cond, FrameTokens.cat([clean, noisy]), MaskedContext(mask))
        return WindowOutput(clean=out[:k], noisy=out[k:])

    @torch.inference_mode()
    def append_clean(
        self, cache: KVCache, cond: ProteinConditioning, tokens: FrameTokens
    ) -> DenoiserOutput:
        """Encode one clean frame (``G = 1``) attending to the cache and itself; append its
        keys/values to ``cache`` (evicting outside the window). Runs in ``torch.inference_mode``.
        """
        slot = self._open_slot(cache, cond, tokens)
        out = self._rollout_trunk(cache)(cond, tokens, CacheContext(cache, slot))
        cache.commit(slot)
        return out

    @torch.inference_mode()
    def append_and_denoise(
        self, cache: KVCache, cond: ProteinConditioning, clean: FrameTokens, noisy: FrameTokens
    ) -> DenoiserOutput:
        """:meth:`append_clean` of ``clean`` and :meth:`denoise` of the next frame's ``noisy``
        in one pass (``G = 2``: the noisy group also attends to the clean one). Same result as
        the two calls, at the cost of little more than one where the pass is overhead-bound
        (small proteins on CPU). Returns the noisy group's prediction.
        """
        slots = self._open_slot(cache, cond, clean, count=2)
        tokens = FrameTokens.cat([clean, noisy])
        out = self._rollout_trunk(cache)(cond, tokens, CacheContext(cache, slots), keep=1)
        cache.commit(slots[0])
        return out

    @torch.inference_mode()
    def denoise(
        self, cache: KVCache, cond: ProteinConditioning, tokens: FrameTokens
    ) -> DenoiserOutput:
        """Predict the clean version of one noisy frame (``G = 1``) attending to the cache and
        itself; the cache's content is unchanged. Inference only (no gradients).
        """
        slot = self._open_slot(cache, cond, tokens)
        return self._rollout_trunk(cache)(cond, tokens, CacheContext(cache, slot))

    def new_cache(
        self, window: int | None = None, sink: bool = False, static: bool = False
    ) -> KVCache:
        """An empty :class:`KVCache` (storage is allocated on first use); ``static`` for a
        compiled rollout (:meth:`compile_rollout`)."""
        return KVCache(window=window, sink=sink, static=static)

    def compile_rollout(self) -> None:
        """Run the rollout passes over a static cache (``new_cache(static=True)``) through
        ``torch.compile`` of the trunk (Inductor: fused C++ kernels on CPU, Triton on GPU).

        Opt-in, for long rollouts: on one CPU thread it takes ~15-25% off the network's time
        per frame, after a one-off compile of ~10-40 s per protein size and replica count (one
        graph per pass layout; Inductor keeps its kernels in an on-disk cache, so a later run
        pays the lower figure). Outputs equal the eager ones to float rounding, not bit for bit.
        Passes over other caches stay eager. Shapes are static (``dynamic=False``): each new
        protein size or batch compiles its own graphs, up to Dynamo's recompile limit (raised
        here to 64), after which passes run eagerly.
        """
        if self._compiled_trunk is None:
            from torch import _dynamo
            from torch._dynamo.exc import BackendCompilerFailed

            _dynamo.config.recompile_limit = max(_dynamo.config.recompile_limit, 64)
            # rigid.py's constant tables are functools.cache'd pure functions: Dynamo traces
            # through the cache, which is what they need; its warning would only alarm users
            warnings.filterwarnings(
                "ignore", message="Dynamo detected a call to a `functools.lru_cache`"
            )
            compiled = torch.compile(self._trunk, dynamic=False)

            def trunk(*args, **kwargs) -> DenoiserOutput:
                try:
                    return compiled(*args, **kwargs)
                except BackendCompilerFailed as exc:
                    inner = exc.inner_exception
                    first = (str(inner).strip().splitlines() or [""])[0][:200]
                    raise StarmdError(
                        f"torch.compile failed ({type(inner).__name__}: {first}); on a CPU it "
                        "needs a working C++ compiler (g++); run without --compile"
                    ) from exc

            self._compiled_trunk = trunk

    def _rollout_trunk(self, cache: KVCache):
        """The compiled trunk for a static cache once :meth:`compile_rollout` was called, else
        the eager one."""
        if cache.static and self._compiled_trunk is not None:
            return self._compiled_trunk
        return self._trunk

    # internals ----------------------------------------------------------------------------------
    def _open_slot(
        self, cache: KVCache, cond: ProteinConditioning, tokens: FrameTokens, count: int = 1
    ) -> int | list[int]:
        if tokens.num_groups != 1:
            raise StarmdInputError(f"rollout takes one frame at a time, got {tokens.num_groups}")
        attention = self.blocks[0].attention[0]
        return cache.open_slot(
            cond.residue_mask,
            self.num_attention_layers,
            self.config.n_heads,
            attention.key_dim,
            attention.value_dim,
            tokens.torsions.dtype,
            count=count,
        )

    def pair_neighbours(self, cond: ProteinConditioning) -> torch.Tensor | None:
        """Each residue's ``config.pair_neighbours`` nearest residues in the input structure
        ``(B, L, k)``, the partners of its pair features and IPA; None when every pair is kept
        (``L <= k``)."""
        return nearest_neighbours(
            cond.init_frames.trans, cond.residue_mask, self.config.pair_neighbours
        )

    def attention_near(self, cond: ProteinConditioning) -> torch.Tensor | None:
        """``(B, L, L)`` bool: which residues a token sees in frames other than its own, its
        ``config.attention_neighbours`` nearest in the input structure; None when unrestricted
        (the option off, or ``L`` not above it)."""
        near = nearest_neighbours(
            cond.init_frames.trans, cond.residue_mask, self.config.attention_neighbours
        )
        if near is None:
            return None
        b, l, _ = near.shape
        allowed = torch.zeros(b, l, l, dtype=torch.bool, device=near.device)
        return allowed.scatter_(-1, near, True)

    def _protein_features(
        self, cond: ProteinConditioning, context: AttentionContext
    ) -> ProteinFeatures:
        """The frame-independent features of ``cond``: in a rollout computed once per cache and
        conditioning object (:meth:`KVCache.memo`)."""

        def compute() -> ProteinFeatures:
            neighbours = self.pair_neighbours(cond)
            return ProteinFeatures(
                neighbours=neighbours,
                protein_pair=self.pair_embedding.protein_pair(cond, neighbours),
                residue=self.single_embedding.residue_features(cond),
                dt_embedding=self.conditioning.embed_dt(cond.dt_ps),
                reference=masked_centroid(cond.init_frames.trans, cond.residue_mask),
                rotary=GroupRotary(self.config, cond.residue_index),
                attention_near=self.attention_near(cond),
            )

        if isinstance(context, CacheContext) and not torch.is_grad_enabled():
            return context.cache.memo(cond, compute)
        return compute()

    def _check_prior(self, cond: ProteinConditioning) -> None:
        cfg = self.config
        for name, width, value in (
            ("prior_single", cfg.c_prior_single, cond.prior_single),
            ("prior_pair", cfg.c_prior_pair, cond.prior_pair),
        ):
            if width and (value is None or value.shape[-1] != width):
                got = None if value is None else tuple(value.shape)
                raise StarmdInputError(f"model expects {name} of width {width}, got {got}")
            if not width and value is not None:
                raise StarmdInputError(f"{name} given but the model has no {name} input (width 0)")

    def _trunk(
        self,
        cond: ProteinConditioning,
        tokens: FrameTokens,
        context: AttentionContext,
        keep: int | None = None,
    ) -> DenoiserOutput:
        """Run all blocks over ``G`` groups of tokens with the given attention context; with
        ``keep``, predict only the last ``keep`` groups (the others give keys/values only)."""
        cond.validate()
        tokens.validate(cond)
        self._check_prior(cond)
        residue_mask = cond.residue_mask

        reference_frames = tokens.reference_frames
        relative = tokens.frames.invert().compose(reference_frames)
        pose = torch.cat(
            [
                relative.trans * self.config.trans_scale,
                relative.rots[..., :, 0],
                relative.rots[..., :, 1],
            ],
            dim=-1,
        )
        features = self._protein_features(cond, context)
        if features.attention_near is not None:
            context = context.restrict(features.attention_near)
        if self.config.attention_layout == "factorized":
            context = factorized_contexts(context, residue_mask)
            assert len(context.contexts) == ATTENTION_LAYERS_PER_BLOCK  # one per layer of a block
        neighbours = features.neighbours
        s = self.single_embedding(cond, tokens, features.residue) + self.reference_embedding(pose)
        s = s * residue_mask[:, None, :, None]
        z = self.pair_embedding(features.protein_pair, tokens.frames, neighbours)
        cond_emb = self.conditioning(tokens.tau, cond.dt_ps, features.dt_embedding)
        reference = features.reference
        # cast once here, not in every layer (under autocast each layer casts to its own dtype)
        autocast = torch.is_autocast_enabled(s.device.type)
        rope = features.rotary(tokens.time_ps, torch.float64 if autocast else s.dtype)

        frames = tokens.frames
        per_block: list[Rigid] = []
        last_block = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            s, z, frames = block(
                s,
                z,
                frames,
                cond_emb,
                residue_mask,
                reference,
                rope,
                context,
                first_layer=ATTENTION_LAYERS_PER_BLOCK * i,
                neighbours=neighbours,
                keep=keep if i == last_block else None,
            )
            per_block.append(frames)
            if self.config.stop_rotation_gradient:
                frames = Rigid(frames.rots.detach(), frames.trans)
        if keep is not None:
            g = tokens.num_groups
            per_block = [f[:, g - keep :] for f in per_block[:-1]] + per_block[-1:]
            reference_frames = reference_frames[:, g - keep :]
        raw, unit = self.torsion_head(s)
        if self.config.torsion_skip:
            kept = slice(None) if keep is None else slice(tokens.num_groups - keep, None)
            unit = torsion_posterior(
                raw,
                tokens.torsions[:, kept],
                tokens.tau[:, kept],
                self.config.torsion_sigma_min,
                self.config.torsion_sigma_max,
            )
        update = self.reference_update(s)
        with torch.autocast(device_type=s.device.type, enabled=False):
            clean = reference_frames.compose(
                update.map_tensors(lambda t: t.float()).to(reference_frames.dtype)
            )
        return DenoiserOutput(
            frames=clean,
            torsions=unit,
            torsions_unnormalized=raw,
            frames_per_block=Rigid.stack(per_block, dim=0),
            single=s,
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
