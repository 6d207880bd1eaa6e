"""How closely a distilled student reproduces its teacher, and whether it keeps its spread.

    python benchmarks/distill_diagnostic.py TEACHER STUDENT DATA_DIR [--split val] \
        [--windows 8] [--draws 8] [--dt 50]

For each of ``--windows`` windows of the dataset (8 frames at ``--dt`` ps, as in training) and
``--draws`` prior draws per window, the teacher's sample (its distillation sampler, default dpm2
x 5) and the student's samples with 1, 2 and 3 deterministic steps (ddim; rho 3), 2 consistency-
style steps (cm) and 2 stochastic (ddpm) steps are computed against the same clean context.
Reported per student setting, median over windows: the C-alpha RMSD to the teacher's sample from
the same draw (fidelity), and the ratio of the C-alpha spread over draws (RMS deviation from the
mean over draws) to the teacher's (1 = the same diversity; a student that regresses to the
teacher's mean sample shows < 1). Frames of a window are all scored but the first (no clean
history, as in training).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.diffusion.sampler import reverse_loop, sampler_schedule
from starmd.modelfile import load_model
from starmd.train.distill import DistillModule
from starmd.train.module import step_generator


def ca_spread(trans: torch.Tensor) -> torch.Tensor:
    """RMS deviation of C-alpha positions ``(D, K, L, 3)`` from their mean over draws D,
    per frame ``(K,)``."""
    return (trans - trans.mean(0)).pow(2).sum(-1).mean((0, 2)).sqrt()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("student")
    parser.add_argument("data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--dt", type=float, default=50.0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    teacher = load_model(args.teacher)
    student = load_model(args.student)
    config = student.config
    module = DistillModule(config, teacher.model)
    module.model.load_state_dict(student.model.state_dict())
    module.eval()
    spec = WindowSpec(window=8, min_window=4, dt_ps=(args.dt,), crop=64)
    data = TrajectoryWindowDataset(args.data, args.split, spec, samples_per_epoch=args.windows)
    settings = {
        "ddim x 1": ("ddim", 1, 3.0),
        "ddim x 2": ("ddim", 2, 3.0),
        "cm x 2": ("cm", 2, 3.0),
        "ddim x 3": ("ddim", 3, 3.0),
        "ddpm x 2": ("ddpm", 2, 3.0),
    }
    fidelity: dict[str, list[float]] = {name: [] for name in settings}
    spread: dict[str, list[float]] = {name: [] for name in settings}
    teacher_spread: list[float] = []
    for w in range(args.windows):
        batch = collate_windows([data[w]])
        generator = step_generator(0, w, 0, torch.device("cpu"))
        ctx = module.window_context(batch, generator)  # one clean context for every draw
        shape = ctx.window.frames.shape

        predict = module.predictor(module.model, ctx)

        targets, samples = [], {name: [] for name in settings}
        for _ in range(args.draws):
            z = module.diffuser.sample_prior(shape, ctx.torsion_mask, generator, ctx.dtype)
            target, _ = module.teacher_sample(ctx, *z, generator)
            targets.append(target.trans[0])
            for name, (sampler, steps, rho) in settings.items():
                taus = sampler_schedule(sampler, steps, config.diffusion.tau_min, rho).tolist()
                frames, _ = reverse_loop(
                    module.diffuser, predict, *z, ctx.torsion_mask, taus, sampler, generator
                )
                samples[name].append(frames.trans[0])
        target_trans = torch.stack(targets)  # (D, K, L, 3)
        teacher_spread.append(ca_spread(target_trans)[1:].mean().item())
        for name in settings:
            trans = torch.stack(samples[name])
            rmsd = (trans - target_trans).pow(2).sum(-1).mean(-1).sqrt()[:, 1:]
            fidelity[name].append(rmsd.mean().item())
            spread[name].append(ca_spread(trans)[1:].mean().item() / teacher_spread[-1])
    print(f"teacher spread over draws (CA, A): median {statistics.median(teacher_spread):.3f}")
    print("| student | CA RMSD to the teacher's sample (A) | spread / teacher's |")
    print("|---|---|---|")
    for name in settings:
        print(
            f"| {name} | {statistics.median(fidelity[name]):.3f} | "
            f"{statistics.median(spread[name]):.2f} |"
        )


if __name__ == "__main__":
    main()
