"""``starmd train``: the command-line wrapper of :func:`starmd.train.run.train`."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    data: Path = typer.Argument(..., help="Prepared dataset folder (from `starmd prepare`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder (checkpoints, logs, model)."),
    config: Path = typer.Option(None, "--config", help="YAML config (see configs/)."),
    set_: list[str] = typer.Option(
        None, "--set", help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable)."
    ),
    devices: str = typer.Option(None, help="Devices per node (Lightning), e.g. 1, 8, auto."),
    num_nodes: int = typer.Option(None, "--num-nodes", help="Number of nodes."),
    strategy: str = typer.Option(None, help="auto, ddp, ddp_spawn, fsdp, ..."),
    precision: str = typer.Option(None, help="32-true, bf16-mixed (GPU), ..."),
    accelerator: str = typer.Option(None, help="auto, cpu, gpu."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    max_epochs: int = typer.Option(None, "--max-epochs", help="Stop after this many epochs."),
    max_time: str = typer.Option(
        None, "--max-time", help="Stop after this wall time, DD:HH:MM:SS (e.g. 00:02:00:00)."
    ),
    resume: str = typer.Option(
        None, "--resume", help="Checkpoint to continue from exactly, or 'last'."
    ),
    fast_dev_run: bool = typer.Option(False, "--fast-dev-run", help="One batch per loop (smoke)."),
    init: Path = typer.Option(
        None,
        "--init",
        help="Start from these weights (model.safetensors or a bundled name), fresh optimizer.",
    ),
    distill_from: Path = typer.Option(
        None,
        "--distill-from",
        help="Distil this model's (a file or a bundled name) many-step sampler into a few-step "
        "student (starts from its weights; see configs/distill_cpu.yaml).",
    ),
) -> None:
    """Train the STAR-MD denoiser on a prepared dataset (one CPU up to many GPUs/nodes).

    Writes RUN/config.yaml, RUN/checkpoints/{last,best}.ckpt (exact resume: optimizer,
    scheduler, step, EMA), RUN/logs/ (CSV; TensorBoard if installed) and RUN/model.safetensors
    (EMA weights + config) for `starmd generate --model`.

    Example: starmd train data/corpus -o runs/exp1 --config configs/small_cpu.yaml
    Multi-GPU: starmd train data/atlas -o runs/big --set model.preset=base --devices 8
    --num-nodes 4 --strategy ddp --precision bf16-mixed
    Few-step student: starmd train data/corpus -o runs/fast --config configs/distill_cpu.yaml
    --distill-from runs/exp1/model.safetensors
    """
    from starmd.modelfile.config import TrainConfig
    from starmd.train.run import train as run_train

    cfg = TrainConfig.from_yaml(config, set_ or [])
    if distill_from is not None:
        from starmd.modelfile import resolve_model

        cfg.distill.teacher = str(resolve_model(distill_from))  # a path or a bundled name
    flags = {
        "devices": _parse_devices(devices) if devices is not None else None,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "precision": precision,
        "accelerator": accelerator,
        "max_steps": max_steps,
        "max_epochs": max_epochs,
        "max_time": max_time,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(cfg.trainer, key, value)
    quiet_lightning()
    model = run_train(data, out, cfg, resume=resume, fast_dev_run=fast_dev_run, init=init)
    typer.echo(f"model: {model}")


# Lightning's messages that say nothing to a starmd user: its INFO lines (accelerator
# availability, product tips, dataloader notes) and two warnings about its own internals or
# settings starmd chose on purpose.
QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


def quiet_lightning() -> None:
    """Hide Lightning's INFO lines and :data:`QUIET_WARNINGS` for this process (the command
    line only: a library caller keeps Lightning's defaults)."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (it sets its loggers' level when imported)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def _parse_devices(value: str):
    return int(value) if value.isdigit() else value
