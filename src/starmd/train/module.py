"""The LightningModule: STAR-MD's training scheme, losses, optimizer, EMA, logging.

Training scheme (as in the paper): each window's frames are corrupted twice through the same
forward process, once to a small "contextual noise" level ``tau_ctx ~ U[0, context_noise_max]``
(the clean copy the model conditions on, as at rollout) and once to a diffusion time
``tau`` in ``[tau_min, 1]`` per frame (the noisy copy; uniform unless
``diffusion.train_tau_rho`` says otherwise); both are concatenated and every noisy frame
is a target in one block-causal pass.

Randomness: the diffusion noise of step ``s`` comes from a generator seeded with
``(seed, s, rank)``, the windows from ``(seed, epoch, index)``, so a run resumed from a
checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import lightning as L
import torch

from starmd.diffusion.conditioning import FrameConditioner, PreviousFrame
from starmd.diffusion.se3_diffuser import NoisyState
from starmd.diffusion.settings import build_diffuser
from starmd.model import FrameTokens, ProteinConditioning, StarDenoiser
from starmd.modelfile.config import TrainConfig
from starmd.structure.rigid import Rigid
from starmd.train.batch import CleanWindow, clean_window_from_batch, conditioning_from_batch
from starmd.train.losses import denoising_losses


@dataclass(frozen=True)
class WindowContext:
    """What every noisy frame of a training window is denoised against (see
    :meth:`StarMDModule.window_context`)."""

    cond: ProteinConditioning
    window: CleanWindow
    context: NoisyState
    tau_ctx: torch.Tensor
    previous: PreviousFrame
    torsion_mask: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        return self.window.torsions.dtype


def scored_frames(ctx: WindowContext) -> torch.Tensor:
    """Which noisy frames of a window count in the loss ``(B, K)`` bool: all but frame 0 (of a
    window longer than one frame). Noisy frame 0 has no clean history and its "previous" frame
    is the protein's start structure, an unknown time before the window: a task the rollout
    never poses (its first generated frame sees the input as clean frame 0)."""
    b, k = ctx.tau_ctx.shape
    frame_mask = torch.ones(b, k, dtype=torch.bool, device=ctx.tau_ctx.device)
    if k > 1:
        frame_mask[:, 0] = False
    return frame_mask


def build_denoiser(config: TrainConfig) -> StarDenoiser:
    return StarDenoiser(config.denoiser())


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1))
    return generator


class StarMDModule(L.LightningModule):
    """Owns the denoiser, the diffuser, the loss and the EMA weights."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.save_hyperparameters({"config": config.to_dict()})
        self.model = build_denoiser(config)
        self.diffuser = build_diffuser(config.diffusion)
        self.conditioner = FrameConditioner(config.diffusion, self.diffuser)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self._step_start: float | None = None

    # the training scheme -------------------------------------------------------------------
    def compute_losses(
        self,
        batch: dict[str, torch.Tensor],
        generator: torch.Generator,
        model: StarDenoiser | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms of one batch; ``model`` defaults to the trained weights (not the EMA)."""
        model = self.model if model is None else model
        diffusion = self.config.diffusion
        ctx = self.window_context(batch, generator)
        b, k = ctx.tau_ctx.shape
        window = ctx.window
        tau = torch.rand(b, k, generator=generator, device=window.torsions.device, dtype=ctx.dtype)
        tau = diffusion.training_tau(tau)
        noisy = self.diffuser.forward_marginal(
            window.frames, window.torsions, ctx.torsion_mask, tau[..., None], generator
        )
        pred = self.denoise_window(model, ctx, noisy.frames, noisy.torsions, tau)
        return self.window_losses(batch, ctx, noisy, pred, window.frames, window.torsions)

    def window_context(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        """The clean window, its contextual-noise copy (what the model conditions on, as at
        rollout) and each frame's previous frame with the translation prior around it."""
        cond, centre = conditioning_from_batch(batch)
        return self.context_of(cond, clean_window_from_batch(batch, centre), generator)

    def context_of(
        self, cond: ProteinConditioning, window: CleanWindow, generator: torch.Generator
    ) -> WindowContext:
        """:meth:`window_context` of a given clean window (fresh contextual noise)."""
        diffusion = self.config.diffusion
        b, k, _ = window.frames.shape
        device, dtype = window.torsions.device, window.torsions.dtype
        torsion_mask = cond.torsion_mask[:, None]
        tau_ctx = torch.rand(b, k, generator=generator, device=device, dtype=dtype)
        tau_ctx = tau_ctx * diffusion.context_noise_max
        context = self.diffuser.forward_marginal(
            window.frames, window.torsions, torsion_mask, tau_ctx[..., None], generator
        )
        # noisy frame t is predicted as an update of the Gaussian posterior base built from its
        # noisy state and clean frame t-1 (frame 0: the initial structure)
        previous = self.conditioner.previous_frame(
            Rigid.cat([cond.init_frames.unsqueeze(1), context.frames[:, :-1]], dim=1),
            cond.init_frames.trans[:, None],
            cond.residue_mask[:, None],
            cond.residue_index[:, None],
            cond.chain_index[:, None],
        )
        return WindowContext(cond, window, context, tau_ctx, previous, torsion_mask)

    def denoise_window(
        self,
        model: StarDenoiser,
        ctx: WindowContext,
        frames: Rigid,
        torsions: torch.Tensor,
        tau: torch.Tensor,
    ):
        """One block-causal pass: every noisy frame ``(B, K, L)`` at its ``tau`` ``(B, K)``
        attends to the clean context up to its own time; returns the noisy frames' outputs."""
        base = self.conditioner.posterior_base(frames, ctx.previous, tau[..., None])
        time_ps = ctx.window.time_ps
        out = model(
            ctx.cond,
            FrameTokens(ctx.context.frames, ctx.context.torsions, ctx.tau_ctx, time_ps),
            FrameTokens(frames, torsions, tau, time_ps, reference=base),
            window=self.config.trainer.attention_window,
        )
        return out.noisy

    def window_losses(self, batch, ctx: WindowContext, noisy, pred, true_frames, true_torsions):
        """The loss terms of the noisy frames' predictions against their clean targets."""
        return denoising_losses(
            diffuser=self.diffuser,
            noisy=noisy,
            pred_frames=pred.frames,
            pred_torsions=pred.torsions,
            pred_torsions_unnormalized=pred.torsions_unnormalized,
            pred_frames_per_block=pred.frames_per_block,
            true_frames=true_frames,
            true_torsions=true_torsions,
            aatype=ctx.cond.aatype,
            residue_mask=ctx.cond.residue_mask,
            torsion_mask=ctx.cond.torsion_mask,
            oxt_mask=batch["atom_mask"][..., 14],
            weights=self.config.loss,
            frame_mask=scored_frames(ctx),
            residue_index=ctx.cond.residue_index,
            chain_index=ctx.cond.chain_index,
            angle_norm=not self.model.config.torsion_skip,
        )

    # Lightning hooks ------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        generator = step_generator(
            self.config.trainer.seed, self.global_step, self.global_rank, self.device
        )
        terms = self.compute_losses(batch, generator)
        b, k, l, _ = batch["frames"].shape
        self.log_dict(
            {f"train/{n}": v.detach() for n, v in terms.items()}, batch_size=b, prog_bar=False
        )
        self.log("loss", terms["loss"].detach(), prog_bar=True, batch_size=b)
        now = time.perf_counter()
        if self._step_start is not None:
            elapsed = max(now - self._step_start, 1e-9)
            self.log("frames_per_s", b * k / elapsed, prog_bar=True, batch_size=b)
            self.log("tokens_per_s", b * k * l / elapsed, batch_size=b)
        self._step_start = now
        return terms["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        decay = self.config.optim.ema_decay
        # warm-up of the EMA decay (as in common EMA implementations) keeps early weights usable
        decay = min(decay, (1 + self.global_step) / (10 + self.global_step))
        with torch.no_grad():
            for ema_p, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                ema_p.lerp_(p.detach(), 1 - decay)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        generator = step_generator(self.config.trainer.seed + 1, batch_idx, 0, self.device)
        terms = self.compute_losses(batch, generator, model=self.ema)
        b = batch["frames"].shape[0]
        self.log_dict({f"val/{n}": v for n, v in terms.items()}, batch_size=b, sync_dist=True)
        return terms["loss"]

    def configure_optimizers(self):
        optim = self.config.optim
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay
        )
        total = self.trainer.estimated_stepping_batches if self.trainer else 10_000
        total = int(total) if math.isfinite(total) else 10_000

        def schedule(step: int) -> float:
            if step < optim.warmup_steps:
                return (step + 1) / optim.warmup_steps
            progress = (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def losses_vs_base(loaded, batch: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Loss terms on ``batch`` of a loaded model (``"trained"``) and of the same network freshly
    initialised (``"base"``: its update starts at zero, so it predicts the Gaussian base), with
    the same noise draw: what the weights have learned beyond their base."""
    losses = {}
    for label, weights in (("trained", loaded.model.state_dict()), ("base", None)):
        module = StarMDModule(loaded.config)
        if weights is not None:
            module.model.load_state_dict(weights)
        with torch.no_grad():
            terms = module.eval().compute_losses(batch, step_generator(0, 0, 0, "cpu"))
        losses[label] = {name: float(value) for name, value in terms.items()}
    return losses
