"""Autoregressive rollout of the denoiser with a KV cache (STAR-MD; docs/design.md, "6. Rollout").

Frame 0 is the input structure. For each new frame ``t``: start from the diffusion prior, run
``steps`` reverse steps, each attending to the cached clean history plus the current noisy frame,
the clean prediction expressed relative to the previous cached frame (as in training); the clean
prediction at the last step is frame ``t``; with ``refine`` set, it is first refined
(:mod:`starmd.sample.refine`: peptide geometry and clashes, restrained to the prediction), so
that the frame yielded, written and cached is the refined one. It is then perturbed with
contextual noise (``tau_ctx``, as in training) and encoded once into the cache, in the same
network pass as the first denoising step of frame ``t + 1``
(:meth:`StarDenoiser.append_and_denoise`: the result of two passes, at little more than the cost
of one for small proteins). The cache keeps the last ``context`` frames (plus frame 0 as an
attention sink if ``sink``), so memory is flat in the trajectory length.

Randomness: replica ``r``'s draws for frame ``t`` come from its own generator, seeded with
``(seed, stream, r, t)`` (:class:`~starmd.diffusion.rng.ReplicaGenerators`; stream 0 denoises,
stream 1 adds the contextual noise), so a resumed rollout continues the same random sequence and
a replica does not change when more replicas share the batch. Between frames,
:meth:`Rollout.state_dict` is all a rollout needs to continue exactly (the KV cache and the last
frame; with re-anchoring, also the anchor and the recent frames).

Re-anchoring (``RolloutSettings.reanchor``, off by default): the network pulls every new frame
towards the structure it is conditioned on (the elastic prior's springs, the pair features), the
input structure in a plain rollout. A model trained with ``data.input_from_trajectory = p`` also
saw windows conditioned on another frame of their own trajectory. Every ``every`` frames a
re-anchored rollout draws, per replica, a new conditioning structure as in that training: the
input with probability ``1 - p``, else a uniformly random frame of the replica's last ``span``
frames (the current one included); the cache is then re-encoded under the new conditioning (the
input as the sink, then the last ``context`` frames, each with its own contextual noise, as the
first time). Memory stays flat: only the last ``max(span, context)`` frames are kept.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from starmd.diffusion.conditioning import FrameConditioner, PreviousFrame
from starmd.diffusion.rng import ReplicaGenerators, uniform
from starmd.diffusion.sampler import reverse_loop, sampler_schedule
from starmd.model import FrameTokens, ProteinConditioning
from starmd.model.denoiser import masked_centroid
from starmd.modelfile import LoadedModel
from starmd.sample.refine import Refined, RefineSettings, refine, refine_topology
from starmd.structure import geometry
from starmd.structure.protein import Protein
from starmd.structure.rigid import Rigid


@dataclass(frozen=True)
class Reanchor:
    """How often and from where a rollout takes a new conditioning structure (module docstring).

    Attributes:
        every: frames between re-anchorings (frame ``t`` with ``t % every == 0``, after it is
            generated).
        span: the anchor, when not the input, is a uniformly random frame of the last ``span``
            frames (the current one included).
        input_probability: probability that the anchor is the input structure (``1 - p`` for a
            model trained with ``data.input_from_trajectory = p``).
    """

    every: int
    span: int
    input_probability: float

    def __post_init__(self) -> None:
        if self.every < 1 or self.span < 1:
            raise ValueError(f"Reanchor: every and span must be >= 1, got {self}")
        if not 0.0 <= self.input_probability <= 1.0:
            raise ValueError(f"Reanchor: input_probability must be in [0, 1], got {self}")


@dataclass(frozen=True)
class RolloutSettings:
    """How a trajectory is sampled; everything diffusion-side (noise schedules, ``tau_min``, the
    prior of the posterior base) comes from the model's own ``DiffusionSection``, and the time
    step from :class:`ProteinInput`.

    Attributes:
        steps: reverse-diffusion steps per frame (the speed/quality knob).
        context: clean frames kept in the KV cache (None = full history, the paper's mode).
        sink: always keep frame 0 (the input structure) in the cache.
        sampler: ``"ddpm"`` (exact Gaussian-posterior ancestral steps; default), ``"ddim"``
            (its deterministic version), ``"sde"`` (Euler-Maruyama of the reverse SDE, as in the
            paper; needs many steps: with few, its last steps inject more noise than the
            marginal has), ``"ode"`` (Euler probability-flow ODE), ``"dpm2"`` (deterministic
            DDIM with the second-order multistep correction of DPM-Solver++(2M): one model call
            per step, for few-step sampling), ``"dpm2sde"`` (the same correction on ancestral
            steps: DPM-Solver++(2M) SDE; wider ensembles, noisier torsions), ``"cm"``
            (deterministic steps whose last prediction is at a moderate noise level, for
            distilled students; see :func:`~starmd.diffusion.sampler.sampler_schedule`).
        noise_scale: scale of the SDE noise (``"sde"`` only; 1 = exact reverse SDE).
        schedule_rho: spacing of the diffusion times (``reverse_schedule``): 1 = linear in tau,
            3 (default) = more steps at low noise. Against a converged solution of the same ODE
            (Gaussian-base model, 1VII) dpm2 at 9 steps errs 0.018 with rho 3 vs 0.73 linear.
        context_noise: contextual-noise level ``tau_ctx`` of cached frames; None (default) =
            the model's ``rollout_context_noise`` (half the training maximum).
        refine: refine every generated frame before it is yielded and cached
            (:func:`~starmd.sample.refine.refine`); None = off.
        compile: run the network through ``torch.compile`` over a static KV cache
            (:meth:`~starmd.model.denoiser.StarDenoiser.compile_rollout`): faster per frame
            after a one-off compile; equal to the eager rollout to float rounding.
        reanchor: re-condition the rollout now and then on one of its own recent frames
            (module docstring); None = always the input (default). Needs a bounded
            ``context``.
    """

    steps: int = 20
    context: int | None = 7
    sink: bool = True
    sampler: str = "ddpm"
    noise_scale: float = 1.0
    schedule_rho: float = 3.0
    context_noise: float | None = None
    refine: RefineSettings | None = None
    compile: bool = False
    reanchor: Reanchor | None = None
    step_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.reanchor is not None and self.context is None:
            raise ValueError("re-anchoring needs a bounded context (the cache is re-encoded)")


@dataclass(frozen=True)
class ProteinInput:
    """What the model conditions on, for ``replicas`` copies of one protein (batch dim B)."""

    cond: ProteinConditioning  # its dt_ps (B,) is the time step seen by adaLN
    dt_ps: float  # the same time step, for the frames' time stamps (rotary time code)
    centre: torch.Tensor  # (B, 3) Angstrom, subtracted from all translations
    init_frames: Rigid  # (B, L), centred
    init_torsions: torch.Tensor  # (B, L, 7)
    oxt_mask: torch.Tensor  # (L,)

    def __post_init__(self) -> None:
        """The time step's two views (adaLN's tensor, the time stamps' float) must agree."""
        expected = torch.full_like(self.cond.dt_ps, self.dt_ps)
        if not torch.allclose(self.cond.dt_ps, expected):
            raise ValueError(
                f"time step {self.dt_ps} ps disagrees with the conditioning's "
                f"{self.cond.dt_ps.tolist()} ps"
            )


def protein_input(
    protein: Protein,
    positions: np.ndarray,
    dt_ps: float,
    replicas: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> ProteinInput:
    """Conditioning from a structure ``positions (L, 15, 3)`` (Angstrom)."""
    pos = torch.from_numpy(np.asarray(positions, dtype=np.float64))
    aatype = torch.from_numpy(protein.aatype)
    atom_mask = torch.from_numpy(protein.atom_mask)
    linked = torch.from_numpy(protein.linked_prev)
    frames = geometry.atoms_to_frames(pos)
    torsions, torsion_mask = geometry.atoms_to_torsions(pos, aatype, atom_mask, linked)
    l = protein.n_residues

    def batch(x: torch.Tensor) -> torch.Tensor:
        return x.expand(replicas, *x.shape).clone().to(device)

    residue_mask = torch.ones(replicas, l, dtype=torch.bool, device=device)
    frames = Rigid(batch(frames.rots).to(dtype), batch(frames.trans).to(dtype))
    centre = masked_centroid(frames.trans, residue_mask)
    frames = Rigid(frames.rots, frames.trans - centre[:, None])
    cond = ProteinConditioning(
        aatype=batch(aatype),
        residue_index=batch(torch.from_numpy(protein.segment_index)),
        chain_index=batch(torch.from_numpy(protein.chain_index)),
        residue_mask=residue_mask,
        init_frames=frames,
        dt_ps=torch.full((replicas,), float(dt_ps), dtype=dtype, device=device),
        torsion_mask=batch(torsion_mask),
    )
    return ProteinInput(
        cond,
        float(dt_ps),
        centre,
        frames,
        batch(torsions).to(dtype),
        torch.from_numpy(protein.oxt_mask).to(device),
    )


DENOISING_STREAM, CONTEXT_NOISE_STREAM, ANCHOR_STREAM = 0, 1, 2


def frame_generators(
    seed: int, stream: int, frame: int, replicas: int, device: torch.device | str
) -> ReplicaGenerators:
    """The generators of frame ``frame``'s draws in ``stream``, one per replica."""
    return ReplicaGenerators.seeded(seed, stream, frame, replicas, device)


class Rollout:
    """Stateful rollout of ``B`` replicas; iterate :meth:`frames` to get new frames.

    Each yielded item is ``(t, positions (B, L, 15, 3) Angstrom in the input's coordinates,
    frames Rigid (B, L), torsions (B, L, 7))``.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        inputs: ProteinInput,
        settings: RolloutSettings,
        seed: int = 0,
    ):
        diffusion = loaded.config.diffusion
        self.model = loaded.model
        self.diffuser = loaded.diffuser
        self.conditioner = FrameConditioner(diffusion, self.diffuser)
        self.inputs = inputs
        self.settings = settings
        self.seed = seed
        self.context_noise = (
            diffusion.rollout_context_noise
            if settings.context_noise is None
            else settings.context_noise
        )
        self.cache = self.model.new_cache(
            window=settings.context, sink=settings.sink, static=settings.compile
        )
        if settings.compile:
            self.model.compile_rollout()
        self.schedule = sampler_schedule(
            settings.sampler, settings.steps, diffusion.tau_min, rho=settings.schedule_rho
        )
        self.next_frame = 0
        self.pending: FrameTokens | None = None  # a clean frame not yet encoded into the cache
        # the last cached clean frame (with contextual noise) and the prior around it
        self.previous: PreviousFrame | None = None
        # the last frame yielded by states(): (t, frames, torsions)
        self.latest: tuple[int, Rigid, torch.Tensor] | None = None
        self.refine_topology = None
        if settings.refine is not None:
            cond = inputs.cond
            self.refine_topology = refine_topology(
                cond.aatype[0],
                cond.residue_index[0],
                cond.chain_index[0],
                inputs.oxt_mask,
                inputs.init_torsions.dtype,
            )
        self.refined: Refined | None = None  # the last generated frame's refinement
        self.refine_s = 0.0  # wall time spent refining, seconds
        # re-anchoring: the input's conditioning, and the recent (t, frames, torsions)
        self.input_cond = inputs.cond
        reanchor = settings.reanchor  # with one, context is bounded (RolloutSettings)
        keep = 1 if reanchor is None else max(reanchor.span, settings.context)
        self.recent: deque[tuple[int, Rigid, torch.Tensor]] = deque(maxlen=keep)

    @property
    def device(self) -> torch.device:
        return self.inputs.init_frames.device

    def _tokens(
        self,
        frames: Rigid,
        torsions: torch.Tensor,
        tau: float,
        t: int,
        reference: Rigid | None = None,
    ) -> FrameTokens:
        b = frames.shape[0]
        dtype = frames.dtype
        return FrameTokens(
            frames=frames.unsqueeze(1),
            torsions=torsions[:, None],
            tau=torch.full((b, 1), float(tau), dtype=dtype, device=self.device),
            time_ps=torch.full((b, 1), t * self.inputs.dt_ps, dtype=dtype, device=self.device),
            reference=None if reference is None else reference.unsqueeze(1),
        )

    @torch.inference_mode()
    def push_clean(self, t: int, frames: Rigid, torsions: torch.Tensor) -> None:
        """Perturb frame ``t`` (centred) with contextual noise and append it to the cache."""
        self.stage_clean(t, frames, torsions)
        self.flush()

    @torch.inference_mode()
    def stage_clean(self, t: int, frames: Rigid, torsions: torch.Tensor) -> None:
        """As :meth:`push_clean`, but the cache append waits for the next network pass (the
        first denoising step of frame ``t + 1``) or :meth:`flush`."""
        self.flush()
        tau = self.context_noise
        generator = frame_generators(
            self.seed, CONTEXT_NOISE_STREAM, t, frames.shape[0], self.device
        )
        mask = self.inputs.cond.torsion_mask
        noisy_frames, noisy_torsions = self.diffuser.corrupt(frames, torsions, mask, tau, generator)
        self.pending = self._tokens(noisy_frames, noisy_torsions, tau, t)
        cond = self.inputs.cond
        self.previous = self.conditioner.previous_frame(
            noisy_frames,
            cond.init_frames.trans,
            cond.residue_mask,
            cond.residue_index,
            cond.chain_index,
        )
        self.next_frame = t + 1

    @torch.inference_mode()
    def flush(self) -> None:
        """Encode a staged clean frame into the cache now."""
        if self.pending is not None:
            self.model.append_clean(self.cache, self.inputs.cond, self.pending)
            self.pending = None

    @torch.inference_mode()
    def sample_frame(self, t: int) -> tuple[Rigid, torch.Tensor]:
        """Denoise frame ``t`` from the prior, attending to the cache; returns centred frames
        ``(B, L)`` and torsions ``(B, L, 7)``."""
        cond = self.inputs.cond
        b, l = cond.aatype.shape
        generator = frame_generators(self.seed, DENOISING_STREAM, t, b, self.device)
        frames, torsions = self.diffuser.sample_prior(
            (b, l),
            cond.torsion_mask,
            generator,
            dtype=self.inputs.init_torsions.dtype,
            device=self.device,
        )
        s = self.settings
        return reverse_loop(
            self.diffuser,
            lambda f, x, tau: self._predict(f, x, tau, t),
            frames,
            torsions,
            cond.torsion_mask,
            self.schedule.tolist(),
            s.sampler,
            generator,
            s.noise_scale,
        )

    def _predict(
        self, frames: Rigid, torsions: torch.Tensor, tau: float, t: int
    ) -> tuple[Rigid, torch.Tensor]:
        """The denoiser's clean frames and torsion angles for the state ``(frames, torsions)``
        of frame ``t`` at noise level ``tau``."""
        cond = self.inputs.cond
        base = self.reference_base(frames, tau)
        tokens = self._tokens(frames, torsions, tau, t, base)
        if self.pending is not None:
            out = self.model.append_and_denoise(self.cache, cond, self.pending, tokens)
            self.pending = None
        else:
            out = self.model.denoise(self.cache, cond, tokens)
        return out.frames[:, 0], out.angles(cond.torsion_mask[:, None])[:, 0]

    def refine(self, frames: Rigid, torsions: torch.Tensor) -> tuple[Rigid, torch.Tensor]:
        """Frame ``(B, L)`` + torsions refined as the settings ask (unchanged when off); the
        details (raw and refined checks) stay in :attr:`refined`."""
        if self.settings.refine is None:
            return frames, torsions
        start = time.perf_counter()
        self.refined = refine(frames, torsions, self.refine_topology, self.settings.refine)
        self.refine_s += time.perf_counter() - start
        return self.refined.frames, self.refined.torsions

    def prepare_refinement(self) -> None:
        """Refine the input frame once and discard the result (nothing is counted), so that
        loading the refinement's compiled loops (from numba's cache; compiling them, the first
        time after installation) is set-up time rather than the first generated frame's."""
        if self.settings.refine is not None:
            refine(
                self.inputs.init_frames,
                self.inputs.init_torsions,
                self.refine_topology,
                self.settings.refine,
            )

    def reference_base(self, frames: Rigid, tau: float) -> Rigid:
        """The posterior base (what the prediction updates) of a state at noise ``tau``, around
        the last cached frame."""
        return self.conditioner.posterior_base(frames, self.previous, tau)

    def atoms(self, frames: Rigid, torsions: torch.Tensor) -> torch.Tensor:
        """Heavy atoms ``(..., B, L, 15, 3)`` of frames ``(..., B, L)`` in the input's
        coordinates (centre added back)."""
        frames64 = Rigid(frames.rots.double(), frames.trans.double())
        aatype = self.inputs.cond.aatype[0]
        from starmd.structure.atoms_kernel import heavy_atoms  # numba: imported on first use

        positions = heavy_atoms(frames64, torsions.double(), aatype, self.inputs.oxt_mask)
        return positions + self.inputs.centre.double()[:, None, None]

    def states(self, n_frames: int) -> Iterator[tuple[int, Rigid, torch.Tensor]]:
        """Yield ``(t, frames (B, L), torsions (B, L, 7))`` for frames ``next_frame ..
        n_frames - 1`` (frame 0 is the input itself, never refined), centred and refined when
        the settings ask; :meth:`atoms` rebuilds the
        heavy atoms (for many frames at once, if wanted)."""
        if self.next_frame == 0:
            frames, torsions = self.inputs.init_frames, self.inputs.init_torsions
            self.stage_clean(0, frames, torsions)
            self._remember(0, frames, torsions)
            yield 0, frames, torsions
        for t in range(self.next_frame, n_frames):
            frames, torsions = self.sample_frame(t)
            if self.settings.step_scale != 1.0:
                frames = self.scale_step(frames)
            frames, torsions = self.refine(frames, torsions)
            self._remember(t, frames, torsions)
            yield t, frames, torsions
            self._advance(t, frames, torsions)

    def scale_step(self, frames: Rigid) -> Rigid:
        """Each residue's rigid move from the last frame, scaled by ``step_scale``: the
        translation along its line, the rotation along its geodesic
        (``R' = R_prev exp(s log(R_prev^T R))``); equivariant under a global rigid motion."""
        from starmd.diffusion.so3 import geodesic

        s = self.settings.step_scale
        _, last, _ = self.latest
        return Rigid(
            geodesic(last.rots, frames.rots, s), last.trans + s * (frames.trans - last.trans)
        )

    def _remember(self, t: int, frames: Rigid, torsions: torch.Tensor) -> None:
        """Frame ``t`` is the latest (and, when re-anchoring, one of the recent frames)."""
        self.latest = (t, frames, torsions)
        if self.settings.reanchor is not None:
            self.recent.append((t, frames, torsions))

    def _advance(self, t: int, frames: Rigid, torsions: torch.Tensor) -> None:
        """After frame ``t`` was yielded: re-anchor if due, then stage it for the cache."""
        reanchor = self.settings.reanchor
        if reanchor is not None and t > 0 and t % reanchor.every == 0:
            self.reanchor(t)
        self.stage_clean(t, frames, torsions)

    def anchor_choice(self, t: int) -> list[int | None]:
        """Per replica, the frame that conditions the rollout after frame ``t``: None for the
        input structure, else an index into :attr:`recent` (uniform over it). Drawn from the
        replica's own generator for ``(seed, ANCHOR_STREAM, t)``."""
        reanchor = self.settings.reanchor
        b = self.inputs.init_frames.shape[0]
        generators = frame_generators(self.seed, ANCHOR_STREAM, t, b, "cpu")
        draws = uniform((b, 2), generators, dtype=torch.float64).tolist()
        n = len(self.recent)
        return [
            None if u < reanchor.input_probability else min(int(v * n), n - 1) for u, v in draws
        ]

    @torch.inference_mode()
    def reanchor(self, t: int) -> None:
        """Condition the rollout after frame ``t`` (the last of :attr:`recent`) on a new anchor
        per replica (:meth:`anchor_choice`) and re-encode the cache under it: the input as the
        sink, then the frames ``t - context + 1 .. t - 1`` (frame ``t`` is staged next)."""
        choice = self.anchor_choice(t)
        inputs = self.inputs
        init = self.input_cond.init_frames
        rots, trans = [], []
        for r, k in enumerate(choice):
            source = init if k is None else self.recent[k][1]
            rots.append(source.rots[r])
            trans.append(source.trans[r])
        anchor = Rigid(torch.stack(rots), torch.stack(trans))
        self._set_anchor(anchor)
        self.pending = None
        self.cache.reset()
        self.push_clean(0, inputs.init_frames, inputs.init_torsions)
        context = self.settings.context
        for ti, fi, xi in self.recent:
            if t - context < ti < t and ti > 0:
                self.push_clean(ti, fi, xi)

    def _set_anchor(self, anchor: Rigid) -> None:
        cond = dataclasses.replace(self.input_cond, init_frames=anchor)
        self.inputs = dataclasses.replace(self.inputs, cond=cond)

    def state_dict(self) -> dict:
        """What continuing this rollout exactly needs, taken while :meth:`states` waits at a
        yield: the KV cache (frames before the last one; their keys depend on the whole history
        through the attention, so they are kept, not re-encoded) and the last frame yielded, in
        the rollout's own centred coordinates (tensors on the CPU). Random draws need no state:
        every frame's generators are seeded by ``(seed, stream, replica, t)``."""
        if self.latest is None:
            raise RuntimeError("Rollout.state_dict: no frame yielded yet")
        t, frames, torsions = self.latest
        state = {
            "frame": t,
            "rots": frames.rots.to("cpu", copy=True),
            "trans": frames.trans.to("cpu", copy=True),
            "torsions": torsions.to("cpu", copy=True),
            "cache": self.cache.state_dict(),
        }
        if self.settings.reanchor is not None:
            anchor = self.inputs.cond.init_frames

            def stacked(values: list[torch.Tensor]) -> torch.Tensor:
                return torch.stack(values).to("cpu", copy=True)

            state["anchor"] = {
                "rots": anchor.rots.to("cpu", copy=True),
                "trans": anchor.trans.to("cpu", copy=True),
            }
            state["recent"] = {
                "frame": [ti for ti, _, _ in self.recent],
                "rots": stacked([fi.rots for _, fi, _ in self.recent]),
                "trans": stacked([fi.trans for _, fi, _ in self.recent]),
                "torsions": stacked([xi for _, _, xi in self.recent]),
            }
        return state

    @torch.inference_mode()
    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`: restore the cache, then stage the last frame as
        the uninterrupted rollout did after yielding it; :meth:`states` resumes at the frame
        after it."""
        self.cache.load_state_dict(state["cache"], self.device)
        self.pending = None
        dtype = self.inputs.init_torsions.dtype

        def on_device(x: torch.Tensor) -> torch.Tensor:
            return x.to(self.device, dtype)

        if self.settings.reanchor is not None:
            if "recent" not in state:
                raise ValueError("rollout state saved without re-anchoring; cannot re-anchor")
            anchor = state["anchor"]
            self._set_anchor(Rigid(on_device(anchor["rots"]), on_device(anchor["trans"])))
            recent = state["recent"]
            self.recent.clear()
            for i, ti in enumerate(recent["frame"]):
                frames = Rigid(on_device(recent["rots"][i]), on_device(recent["trans"][i]))
                self.recent.append((int(ti), frames, on_device(recent["torsions"][i])))
        frames = Rigid(on_device(state["rots"]), on_device(state["trans"]))
        torsions = on_device(state["torsions"])
        t = int(state["frame"])
        self.latest = (t, frames, torsions)
        self._advance(t, frames, torsions)

    def frames(self, n_frames: int) -> Iterator[tuple[int, torch.Tensor, Rigid, torch.Tensor]]:
        """As :meth:`states`, with each frame's heavy atoms: ``(t, positions (B, L, 15, 3),
        frames, torsions)``."""
        for t, frames, torsions in self.states(n_frames):
            yield t, self.atoms(frames, torsions), frames, torsions
