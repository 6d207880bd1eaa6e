"""Few-step distillation of a many-step sampler into a student denoiser.

The teacher is a trained model sampled deterministically (by default DPM-Solver++(2M) with 5
steps): a fixed map from a prior draw ``z`` (and the clean context) to a sample ``x0*``. The
student, a copy of the same network initialised from the teacher, is trained so that from any
point of the deterministic (DDIM) path between ``z`` and ``x0*`` it predicts ``x0*``; a perfect
student reproduces the teacher's sample in one network pass, and a second pass corrects what
the first missed. This is the "path to a fixed endpoint" form of consistency distillation (Song
et al. 2023) with the endpoint taken from the teacher's whole solver rather than one of its
steps; the losses are the ordinary training terms with ``x0*`` as the clean target.

Every frame of a training window is distilled at once: the teacher runs its solver over the
whole window in block-causal passes (each noisy frame against the clean context up to its own
time, exactly what the rollout poses frame by frame), without gradients.

The paired regression alone lets a student that cannot yet follow how the sample depends on the
draw settle on the teacher's mean sample (it keeps a fraction of the teacher's spread over
draws, docs/model_card.md). ``distill.energy_score`` adds a proper scoring rule on the one-step
C-alpha prediction (:func:`energy_score_term`; Gneiting & Raftery 2007), which is least when the
student's one-step distribution equals the teacher's, spread included.
``distill.torsion_energy_score`` is the same rule on the one-step torsion angles, with the chord
distance between their unit vectors (:func:`chord_distance`): without it the students' torsions
settle on the teacher's mean and move less from frame to frame than MD's (docs/model_card.md).
``distill.dihedral_energy_score`` applies it to the backbone dihedrals (psi, phi) across every
peptide bond of the one-step frames (:func:`starmd.structure.geometry.junction_dihedrals`):
the C-alpha term alone leaves the students' local backbone twice as spread as the teacher's.
``distill.dihedral_regression`` instead regresses those dihedrals on the teacher's sample of the
same draw (:func:`dihedral_regression_term`), a paired target rather than a distribution.

``distill.own_rollout`` replaces the history of a fraction of the windows by the student's own
rollout (:meth:`DistillModule.own_rollout_context`) before the teacher samples its targets: the
terms above are then taught from where the student's rollout goes, not only from MD's frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from starmd.diffusion.sampler import (
    SAMPLERS,
    PredictFn,
    reverse_loop,
    reverse_schedule,
    sampler_schedule,
)
from starmd.errors import StarmdInputError
from starmd.model import StarDenoiser
from starmd.modelfile.config import TrainConfig
from starmd.sample.rollout import RolloutSettings
from starmd.structure.geometry import junction_dihedrals
from starmd.structure.local_geometry import peptide_bonds
from starmd.structure.rigid import Rigid
from starmd.train.batch import CleanWindow
from starmd.train.module import StarMDModule, WindowContext, scored_frames


def rms_distance(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """C-alpha RMS distance ``(...)`` between positions ``(..., L, 3)`` over the residues of
    ``mask`` ``(..., L)``; a floor of 1e-4 A keeps the gradient finite where they coincide."""
    sq = (a - b).pow(2).sum(-1) * mask
    return (sq.sum(-1) / mask.sum(-1).clamp(min=1) + 1e-8).sqrt()


def chord_distance(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMS chord distance ``(...)`` between the unit vectors of angles ``(..., N, M)`` (radians;
    torsions ``(..., L, 7)``, junction dihedrals ``(..., L-1, 2)``) over those of ``mask``
    (same shape): ``sqrt(mean(2 - 2 cos(a - b)))``, the
    Euclidean distance of the angles embedded on circles (so a metric of negative type, for
    which the energy score is strictly proper), in [0, 2]; the same 1e-4 floor as
    :func:`rms_distance`."""
    sq = (2.0 - 2.0 * torch.cos(a - b)) * mask
    return (sq.sum((-1, -2)) / mask.sum((-1, -2)).clamp(min=1) + 1e-8).sqrt()


def energy_score_term(
    x1: torch.Tensor,
    x2: torch.Tensor,
    y1: torch.Tensor,
    mask: torch.Tensor,
    distance: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = rms_distance,
    symmetric: bool = False,
) -> torch.Tensor:
    """Energy-score estimate ``d(x2, y1) - d(x1, x2) / 2`` per sample ``(...)``; with
    ``symmetric`` (for an observation independent of both samples) ``(d(x1, y1) + d(x2, y1)) / 2
    - d(x1, x2) / 2``, the same expectation with less variance.

    ``x1``, ``x2``: two independent samples of the model's distribution (``(..., L, 3)``
    positions for the default C-alpha RMS distance, ``(..., L, 7)`` angles for
    :func:`chord_distance`); ``y1``: an observation, independent of ``x2`` (it may depend on
    ``x1``, as the teacher's sample of the draw behind ``x1`` does). In expectation this is the
    energy distance between the two distributions (Szekely & Rizzo) minus half the
    observations' own mean distance, a constant: zero excess exactly when the distributions
    agree, whatever their spread.
    """
    spread = 0.5 * distance(x1, x2, mask)
    if symmetric:
        return 0.5 * (distance(x1, y1, mask) + distance(x2, y1, mask)) - spread
    return distance(x2, y1, mask) - spread


def dihedral_regression_term(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared chord ``2 - 2 cos(pred - target)`` per frame ``(...)`` of dihedrals
    ``(..., N, 2)`` (radians) over the junctions of ``mask`` ``(..., N)``; zero where every
    dihedral agrees, ``4 sin^2(delta / 2)``, about ``delta^2`` for a small error ``delta``."""
    chord = (2.0 - 2.0 * torch.cos(pred - target)).sum(-1)
    return (chord * mask).sum(-1) / (2.0 * mask.sum(-1).clamp(min=1))


def junctions(ctx: WindowContext) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`junction_dihedrals` of a window's frames needs and which of its junctions
    count: residue types ``(B, 1, L)`` and the peptide bonds ``(B, L-1)`` (bool)."""
    cond = ctx.cond
    bonded = peptide_bonds(cond.residue_index, cond.chain_index, cond.residue_mask)
    return cond.aatype[:, None], bonded


class DistillModule(StarMDModule):
    """:class:`StarMDModule` whose targets are a frozen teacher's samples."""

    def __init__(self, config: TrainConfig, teacher: StarDenoiser):
        super().__init__(config)
        d = config.distill
        if (
            d.teacher_steps < 2
            or not 0.0 <= d.one_step_fraction <= 1.0
            or not 0.0 <= d.own_rollout <= 1.0
            or min(
                d.energy_score,
                d.torsion_energy_score,
                d.dihedral_energy_score,
                d.dihedral_regression,
            )
            < 0
        ):
            raise StarmdInputError(
                "distill: need teacher_steps >= 2, 0 <= one_step_fraction <= 1, "
                f"0 <= own_rollout <= 1 (got {d.own_rollout}) and the "
                "energy_score, torsion_energy_score, dihedral_energy_score and "
                f"dihedral_regression >= 0, got {d.teacher_steps}, {d.one_step_fraction}, "
                f"{d.energy_score}, {d.torsion_energy_score}, {d.dihedral_energy_score} and "
                f"{d.dihedral_regression}"
            )
        if d.energy_score_target not in ("teacher", "data"):
            raise StarmdInputError(
                f"distill.energy_score_target: {d.energy_score_target!r} is neither 'teacher' "
                "nor 'data'"
            )
        if d.teacher_sampler not in SAMPLERS:
            raise StarmdInputError(
                f"distill.teacher_sampler: unknown {d.teacher_sampler!r} (known: "
                f"{', '.join(SAMPLERS)})"
            )
        # kept out of the module tree: the teacher is neither trained nor checkpointed
        self._teacher = [teacher.requires_grad_(False).eval()]
        self.teacher_taus = reverse_schedule(
            d.teacher_steps, config.diffusion.tau_min, rho=d.teacher_rho
        ).tolist()

    @property
    def teacher(self) -> StarDenoiser:
        return self._teacher[0]

    def on_fit_start(self) -> None:
        self._teacher[0] = self.teacher.to(self.device)

    def predictor(self, model: StarDenoiser, ctx: WindowContext) -> PredictFn:
        """``predict(frames, torsions, tau)`` of :func:`reverse_loop` for every frame of a
        window at once: one block-causal pass of ``model`` against the window's context."""
        b, k = ctx.tau_ctx.shape

        def predict(f: Rigid, x: torch.Tensor, tau: float) -> tuple[Rigid, torch.Tensor]:
            tau_t = torch.full((b, k), tau, dtype=ctx.dtype, device=x.device)
            out = self.denoise_window(model, ctx, f, x, tau_t)
            return out.frames, out.angles(ctx.torsion_mask)

        return predict

    def own_rollout_context(
        self, model: StarDenoiser, ctx: WindowContext, generator: torch.Generator
    ) -> WindowContext:
        """``ctx`` with frames 1.. of a random ``distill.own_rollout`` fraction of the windows
        replaced by ``model``'s rollout from frame 0, one frame at a time, each drawn with the
        sampling defaults (``sampling.sampler`` x ``sampling.steps``) against the frames drawn
        before it, without gradients; contextual noise and previous frames rebuilt. Frame 0
        and the other windows keep MD's frames; no refinement (the rollout's refinement needs
        atoms, out of reach here), so the history is the network's raw output."""
        b, k = ctx.tau_ctx.shape
        device = ctx.tau_ctx.device
        own = torch.rand(b, generator=generator, device=device) < self.config.distill.own_rollout
        if k < 2 or not bool(own.any()):
            return ctx
        sampling = self.config.sampling
        taus = sampler_schedule(
            sampling.sampler,
            sampling.steps,
            self.config.diffusion.tau_min,
            rho=RolloutSettings().schedule_rho,
        ).tolist()
        window = ctx.window
        frames, torsions = window.frames, window.torsions
        for j in range(1, k):
            z_frames, z_torsions = self.diffuser.sample_prior(
                frames.shape, ctx.torsion_mask, generator, ctx.dtype, device
            )
            with torch.no_grad():
                drawn_frames, drawn_torsions = reverse_loop(
                    self.diffuser,
                    self.predictor(model, ctx),
                    z_frames,
                    z_torsions,
                    ctx.torsion_mask,
                    taus,
                    sampling.sampler,
                    generator,
                )
            take = own[:, None] & (torch.arange(k, device=device) == j)[None]
            frames = Rigid(
                torch.where(take[..., None, None, None], drawn_frames.rots, frames.rots),
                torch.where(take[..., None, None], drawn_frames.trans, frames.trans),
            )
            torsions = torch.where(take[..., None, None], drawn_torsions, torsions)
            ctx = self.context_of(
                ctx.cond, CleanWindow(frames, torsions, window.time_ps), generator
            )
        return ctx

    def teacher_sample(
        self, ctx: WindowContext, frames: Rigid, torsions: torch.Tensor, generator: torch.Generator
    ) -> tuple[Rigid, torch.Tensor]:
        """The teacher's deterministic sample of every window frame from the state
        ``(frames, torsions)`` at ``tau = 1``."""
        with torch.no_grad():
            return reverse_loop(
                self.diffuser,
                self.predictor(self.teacher, ctx),
                frames,
                torsions,
                ctx.torsion_mask,
                self.teacher_taus,
                self.config.distill.teacher_sampler,
                generator,
            )

    def compute_losses(
        self,
        batch: dict[str, torch.Tensor],
        generator: torch.Generator,
        model: StarDenoiser | None = None,
    ) -> dict[str, torch.Tensor]:
        """Distillation loss of one batch: the student's prediction from a point of the path
        towards the teacher's sample, against that sample."""
        model = self.model if model is None else model
        diffusion = self.config.diffusion
        ctx = self.window_context(batch, generator)
        if self.config.distill.own_rollout > 0:
            ctx = self.own_rollout_context(model, ctx, generator)
        b, k = ctx.tau_ctx.shape
        device = ctx.tau_ctx.device
        shape = ctx.window.frames.shape
        z_frames, z_torsions = self.diffuser.sample_prior(
            shape, ctx.torsion_mask, generator, ctx.dtype, device
        )
        target_frames, target_torsions = self.teacher_sample(ctx, z_frames, z_torsions, generator)
        u = torch.rand(b, k, generator=generator, device=device, dtype=ctx.dtype)
        tau = diffusion.training_tau(u)
        one = torch.rand(b, k, generator=generator, device=device) < (
            self.config.distill.one_step_fraction
        )
        tau = torch.where(one, torch.ones_like(tau), tau)
        with torch.no_grad():
            frames, torsions = self.diffuser.posterior_step(
                z_frames,
                z_torsions,
                target_frames,
                target_torsions,
                ctx.torsion_mask,
                1.0,
                tau[..., None],
                generator,
                eta=0.0,
            )
        noisy = self.diffuser.noisy_state(
            frames, torsions, target_frames, target_torsions, ctx.torsion_mask, tau[..., None]
        )
        pred = self.denoise_window(model, ctx, frames, torsions, tau)
        terms = self.window_losses(batch, ctx, noisy, pred, target_frames, target_torsions)
        if self.config.distill.dihedral_regression > 0:
            aatype, bonded = junctions(ctx)
            per_frame = dihedral_regression_term(
                junction_dihedrals(pred.frames, aatype),
                junction_dihedrals(target_frames, aatype),
                bonded[:, None, :].to(ctx.dtype),
            )
            scored = scored_frames(ctx)
            terms["dihedral_regression"] = (per_frame * scored).sum() / scored.sum().clamp(min=1)
            terms["loss"] = (
                terms["loss"]
                + self.config.distill.dihedral_regression * terms["dihedral_regression"]
            )
        weight = self.config.distill.energy_score
        torsion_weight = self.config.distill.torsion_energy_score
        dihedral_weight = self.config.distill.dihedral_energy_score
        if weight > 0 or torsion_weight > 0 or dihedral_weight > 0:
            # a second draw's one-step prediction against the first's, where the first is at
            # tau = 1 too, on the frames the other terms count
            z2_frames, z2_torsions = self.diffuser.sample_prior(
                shape, ctx.torsion_mask, generator, ctx.dtype, device
            )
            second = self.denoise_window(model, ctx, z2_frames, z2_torsions, torch.ones_like(tau))
            counted = one & scored_frames(ctx)
            n_counted = counted.sum().clamp(min=1)
            # what the draws are scored against: the teacher's sample of the first draw, or
            # the MD frame (independent of both draws: scored from each, the mean taken)
            symmetric = self.config.distill.energy_score_target == "data"
            observed_frames, observed_torsions = (
                (ctx.window.frames, ctx.window.torsions)
                if symmetric
                else (target_frames, target_torsions)
            )
        if weight > 0:
            mask = ctx.cond.residue_mask[:, None].expand(b, k, -1).to(ctx.dtype)
            score = energy_score_term(
                pred.frames.trans,
                second.frames.trans,
                observed_frames.trans,
                mask,
                symmetric=symmetric,
            )
            terms["energy_score"] = (score * counted).sum() / n_counted
            terms["loss"] = terms["loss"] + weight * terms["energy_score"]
        if torsion_weight > 0:
            mask = ctx.torsion_mask.expand(b, k, -1, -1).to(ctx.dtype)
            score = energy_score_term(
                pred.angles(ctx.torsion_mask),
                second.angles(ctx.torsion_mask),
                observed_torsions,
                mask,
                chord_distance,
                symmetric=symmetric,
            )
            terms["torsion_energy_score"] = (score * counted).sum() / n_counted
            terms["loss"] = terms["loss"] + torsion_weight * terms["torsion_energy_score"]
        if dihedral_weight > 0:
            aatype, bonded = junctions(ctx)
            mask = bonded[:, None, :, None].expand(b, k, -1, 2).to(ctx.dtype)
            score = energy_score_term(
                junction_dihedrals(pred.frames, aatype),
                junction_dihedrals(second.frames, aatype),
                junction_dihedrals(observed_frames, aatype),
                mask,
                chord_distance,
                symmetric=symmetric,
            )
            terms["dihedral_energy_score"] = (score * counted).sum() / n_counted
            terms["loss"] = terms["loss"] + dihedral_weight * terms["dihedral_energy_score"]
        return terms
