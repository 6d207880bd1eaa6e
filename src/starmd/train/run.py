"""``starmd train``: build the Lightning Trainer, run, export the EMA weights as a model file.

Outputs in the run folder::

    config.yaml                 the full configuration used
    checkpoints/last.ckpt       resumable (optimizer, scheduler, step, EMA), every epoch
    checkpoints/best.ckpt       lowest validation loss (when the dataset has a val split)
    logs/                       CSV metrics (and TensorBoard if installed)
    model.safetensors           EMA weights + config, what ``starmd generate --model`` loads
"""

from __future__ import annotations

import errno
import io
import logging
import os
import zipfile
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO

from starmd.errors import StarmdCheckpointError, StarmdInputError, located
from starmd.model.config import DenoiserConfig
from starmd.modelfile import load_model, resolve_model, save_model
from starmd.modelfile.config import TrainConfig
from starmd.outputs import naming_file, output_lock
from starmd.structure.io import atomic_write, write_atomically

log = logging.getLogger(__name__)


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    resume: str | Path | None = None,
    progress: bool = True,
    callbacks: list | None = None,
    fast_dev_run: bool = False,
    init: str | Path | None = None,
) -> Path:
    """Train on a prepared dataset; returns the exported ``model.safetensors``.

    ``resume``: a ``.ckpt`` to continue from exactly (``"last"`` = the run's last checkpoint).
    ``callbacks``: extra Lightning callbacks; ``fast_dev_run``: one batch of each loop (smoke).
    ``init``: start the weights (and their EMA) from a model file or a bundled model's name
    (fresh optimizer), e.g. to continue a GPU run on a CPU from its exported
    ``model.safetensors``.

    ``RUN/train.lock`` is held while the run writes (by the launching process: the other ranks
    of a multi-process run share its folder), so a second ``train`` into the same run folder is
    refused. Checkpoints are written atomically beside their final name; Ctrl-C arrives as
    ``KeyboardInterrupt`` (Lightning turns it into an exit), a failed write as an ``OSError``
    naming the file or the run folder.
    """
    out_dir = Path(out_dir)
    lock = output_lock(out_dir / "train.lock", "train") if _launching_rank() else nullcontext()
    with lock:
        return _train(data_dir, out_dir, config, resume, progress, callbacks, fast_dev_run, init)


def _launching_rank() -> bool:
    """Whether this process started the run (not a rank that Lightning, torchrun or SLURM
    started for it)."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


def _train(
    data_dir: str | Path,
    out_dir: Path,
    config: TrainConfig,
    resume: str | Path | None,
    progress: bool,
    callbacks: list | None,
    fast_dev_run: bool,
    init: str | Path | None,
) -> Path:
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from starmd.data.store import read_index
    from starmd.train.datamodule import WindowDataModule

    read_index(data_dir)  # clear error early if this is not a dataset
    if init is not None:
        init = resolve_model(init)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StarmdInputError(located(out_dir, f"cannot write ({exc.strerror})")) from exc
    if resume == "last":
        resume = out_dir / "checkpoints" / "last.ckpt"
    if resume is not None:
        check_checkpoint(Path(resume))

    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    datamodule = WindowDataModule(data_dir, config.data, config.trainer.seed)
    module = build_module(config)
    if init is None and config.distill.teacher is not None:
        init = config.distill.teacher  # a student starts as its teacher
    if init is not None:
        weights = load_model(resolve_model(init)).model.state_dict()
        try:
            module.model.load_state_dict(weights)
            module.ema.load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise StarmdCheckpointError(
                located(init, f"weights do not fit this configuration ({first})")
            ) from exc
    # written once the configuration has built a module (and its start weights fit): a
    # refused configuration leaves no config.yaml behind that would describe no run
    try:
        write_atomically(out_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    except OSError as exc:
        raise StarmdInputError(located(out_dir, f"cannot write ({exc.strerror})")) from exc
    has_val = datamodule.has_validation
    if not has_val:
        log.warning(
            "%s: no protein in the 'val' split: no validation loss and no checkpoints/best.ckpt "
            "will be written (model.safetensors holds the last EMA weights); split by protein "
            "with `starmd prepare --split-file` or --fractions",
            data_dir,
        )
    # Two callbacks: Lightning's ``save_last`` refreshes last.ckpt only when the monitored
    # checkpoint is saved too, so after the validation loss stops improving it would go stale
    # and a resumed run would lose every epoch since; the second one writes it every epoch.
    # The best-model callback comes first so that last.ckpt stores its updated state (else a
    # resumed run would compare against a stale best score and could overwrite best.ckpt).
    callbacks = list(callbacks or [])
    if config.trainer.stop_step is not None:
        callbacks.append(_stop_at_step(config.trainer.stop_step))
    if has_val:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out_dir / "checkpoints",
                filename="best",
                monitor="val/loss",
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    callbacks.append(
        ModelCheckpoint(
            dirpath=out_dir / "checkpoints",
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
        )
    )
    loggers = [CSVLogger(out_dir, name="logs")]  # a new version folder per (re)start
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out_dir, name="tensorboard"))
    except ImportError:
        pass
    t = config.trainer
    try:
        trainer = L.Trainer(
            default_root_dir=out_dir,
            max_epochs=t.max_epochs,
            max_steps=t.max_steps,
            max_time=t.max_time,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            precision=t.precision,
            accelerator=t.accelerator,
            gradient_clip_val=config.optim.grad_clip or None,
            log_every_n_steps=t.log_every_n_steps,
            limit_val_batches=t.limit_val_batches if has_val else 0,
            num_sanity_val_steps=0,
            reload_dataloaders_every_n_epochs=1,
            deterministic=False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO(out_dir)],
            logger=loggers,
            enable_progress_bar=progress,
            enable_model_summary=False,
            fast_dev_run=fast_dev_run,
        )
    except (ValueError, MisconfigurationException) as exc:  # Lightning's checks of the settings
        first = str(exc).strip().splitlines()[0]
        raise StarmdInputError(f"trainer settings: {first}") from exc
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning's answer to Ctrl-C is exit(1), after its teardown
            raise KeyboardInterrupt from None
        raise
    except OSError as exc:  # a failed write inside Lightning (logs, checkpoints)
        raise naming_file(exc, out_dir) from None
    target = out_dir / "model.safetensors"
    if trainer.is_global_zero:
        export_model(module, target)
    return target


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that is missing, truncated or changed on disk before Lightning
    loads it (a torch checkpoint is a zip archive: its CRCs cover every byte of data).

    Raises:
        StarmdCheckpointError: one line naming the file.
    """
    if not path.is_file():
        raise StarmdCheckpointError(located(path, "checkpoint to resume from not found"))
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        damaged = f"not a checkpoint archive: {exc}"
    if damaged is not None:
        raise StarmdCheckpointError(
            located(path, f"corrupt or truncated checkpoint ({damaged}); not resumed, not changed")
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through starmd's atomic writer: the temporary file lies
    beside the checkpoint, so the final move is a rename. (Lightning's own goes through a file
    in the system's temporary folder, from which a move to another disk is a copy that a full
    disk cuts short, after the previous checkpoint was already truncated.) A run folder that
    lost its ``config.yaml`` was removed while training: an error, not a silently recreated
    folder."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        if not (self.run_dir / "config.yaml").is_file():
            raise FileNotFoundError(
                errno.ENOENT, "run folder removed while training", str(self.run_dir)
            )

        serialized = io.BytesIO()  # as Lightning does; and torch's zip writer would turn a
        torch.save(checkpoint, serialized)  # failed write into a RuntimeError
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(serialized.getbuffer()), durable=True)


def same_network(teacher: DenoiserConfig, student: DenoiserConfig) -> bool:
    """Whether a student of config ``student`` can start from and learn from ``teacher``: the
    same network, up to which residues the joint attention sees across frames
    (``attention_neighbours`` has no parameters, so a student may restrict what its teacher saw
    in full)."""
    return replace(teacher, attention_neighbours=None) == replace(
        student, attention_neighbours=None
    )


def _stop_at_step(step: int):
    """A Lightning callback that stops the run once ``step`` optimizer steps are done
    (``trainer.stop_step``), leaving its length, and so its learning-rate schedule, as
    configured."""
    import lightning as L

    class StopAtStep(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step >= step:
                trainer.should_stop = True

    return StopAtStep()


def build_module(config: TrainConfig):
    """The LightningModule of a config: ordinary training, or distillation from
    ``config.distill.teacher`` (whose diffusion and network must match the config's)."""
    from starmd.train.module import StarMDModule

    teacher_path = config.distill.teacher
    if teacher_path is None:
        return StarMDModule(config)
    from starmd.train.distill import DistillModule

    teacher_path = resolve_model(teacher_path)
    teacher = load_model(teacher_path)
    if teacher.config.diffusion != config.diffusion:
        raise StarmdInputError(
            located(teacher_path, "the teacher's diffusion section differs from the config's")
        )
    if not same_network(teacher.config.denoiser(str(teacher_path)), config.denoiser()):
        raise StarmdInputError(
            located(teacher_path, "the teacher's network differs from the config's model section")
        )
    return DistillModule(config, teacher.model)


def export_model(module, path: str | Path) -> Path:
    """Write a training module's EMA weights and config as one model file (atomic)."""
    return save_model(module.ema, module.config, path)
