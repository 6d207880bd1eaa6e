"""Training: the loss can be driven down, runs resume exactly, configs and checkpoints."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.errors import StarmdCheckpointError, StarmdInputError
from starmd.modelfile import load_model
from starmd.modelfile.config import TrainConfig
from starmd.train.module import StarMDModule, step_generator
from starmd.train.run import train
from tests.train.conftest import TINY


def test_overfitting_one_batch_drives_the_loss_down(tiny_dataset):
    torch.manual_seed(0)
    config = TrainConfig.from_yaml(None, TINY)
    spec = WindowSpec(window=2, dt_ps=(100.0,), crop=10)
    data = TrajectoryWindowDataset(tiny_dataset, "train", spec, samples_per_epoch=2)
    batch = collate_windows([data[0], data[1]])
    module = StarMDModule(config)
    optimizer = torch.optim.Adam(module.model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        terms = module.compute_losses(batch, step_generator(0, 0, 0, torch.device("cpu")))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        history.append({name: value.item() for name, value in terms.items()})
    first, last = history[0], history[-1]
    # the per-block backbone FAPE of the tiny model's early blocks levels off (~0.4), so the
    # total falls ~6x; the final prediction's own terms fall > 10x
    assert last["loss"] < first["loss"] / 5, (first, last)
    for name in ("trans", "rot", "torsion", "atom"):
        assert last[name] < first[name] / 10, (name, first, last)


class _StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_dataset, tmp_path):
    config = TrainConfig.from_yaml(None, TINY + ["trainer.max_epochs=2"])
    whole = load_model(train(tiny_dataset, tmp_path / "whole", config, progress=False)).model
    train(
        tiny_dataset, tmp_path / "parts", config, progress=False, callbacks=[_StopAfterFirstEpoch()]
    )
    first_leg = load_model(tmp_path / "parts" / "model.safetensors").model
    resumed = load_model(
        train(tiny_dataset, tmp_path / "parts", config, progress=False, resume="last")
    ).model
    changed = False
    for (name, a), b, c in zip(
        whole.state_dict().items(),
        resumed.state_dict().values(),
        first_leg.state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        changed |= not torch.equal(b, c)
    assert changed, "the second epoch must change the weights"


def test_stop_step_ends_a_leg_on_the_full_runs_schedule(tiny_dataset, tmp_path):
    """A leg stopped by ``trainer.stop_step`` and then resumed gives the uninterrupted run's
    weights: the stop did not change the learning-rate schedule (2 steps per epoch here)."""
    config = TrainConfig.from_yaml(None, TINY + ["trainer.max_epochs=2"])
    whole = load_model(train(tiny_dataset, tmp_path / "whole", config, progress=False)).model
    leg = TrainConfig.from_yaml(None, TINY + ["trainer.max_epochs=2", "trainer.stop_step=2"])
    train(tiny_dataset, tmp_path / "leg", leg, progress=False)
    last = torch.load(
        tmp_path / "leg/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    assert last["global_step"] == 2
    resumed = load_model(
        train(tiny_dataset, tmp_path / "leg", config, progress=False, resume="last")
    ).model
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    with pytest.raises(StarmdInputError, match="trainer.stop_step must be >= 1"):
        TrainConfig.from_yaml(None, TINY + ["trainer.stop_step=0"])


def test_last_checkpoint_follows_every_epoch_even_without_improvement(
    tiny_dataset_with_val, tmp_path
):
    # lr 0: the validation loss never improves after epoch 1, so best.ckpt stays at epoch 1;
    # last.ckpt must still move on (resume from it continues where the run stopped)
    config = TrainConfig.from_yaml(None, TINY + ["trainer.max_epochs=3", "optim.lr=0.0"])
    train(tiny_dataset_with_val, tmp_path / "run", config, progress=False)
    folder = tmp_path / "run" / "checkpoints"
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(folder / "best.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2
    assert best["epoch"] == 0
    assert last["global_step"] > best["global_step"]


def test_last_checkpoint_carries_the_current_best_score(tiny_dataset_with_val, tmp_path):
    # a run resumed from last.ckpt compares new validation losses against the best score
    # stored there: it must be the best of all epochs so far, not the one before the last
    import csv

    config = TrainConfig.from_yaml(None, TINY + ["trainer.max_epochs=3", "optim.lr=0.003"])
    train(tiny_dataset_with_val, tmp_path / "run", config, progress=False)
    last = torch.load(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    (state,) = [v for k, v in last["callbacks"].items() if "val/loss" in k]
    with (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").open() as fh:
        losses = [float(r["val/loss"]) for r in csv.DictReader(fh) if r.get("val/loss")]
    assert len(losses) == 3
    assert float(state["best_model_score"]) == pytest.approx(min(losses), rel=1e-6)


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("optim:\n  lr: 0.01\nmodel:\n  preset: tiny\n")
    config = TrainConfig.from_yaml(path, ["data.crop=null", "model.overrides.c_s=48"])
    assert config.optim.lr == 0.01 and config.data.crop is None
    assert config.model.overrides == {"c_s": 48}
    assert TrainConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    path.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(StarmdInputError, match="unknown key optim.learning_rate"):
        TrainConfig.from_yaml(path)
    with pytest.raises(StarmdInputError, match="expected section.key=value"):
        TrainConfig.from_yaml(None, ["lr=1"])
    # the model section is checked when the config is read, not later inside training
    path.write_text("model:\n  preset: tiny\n  overrides:\n    pair_neighbours: 0\n")
    with pytest.raises(StarmdInputError, match="cfg.yaml: model: pair_neighbours must be >= 1"):
        TrainConfig.from_yaml(path)
    with pytest.raises(StarmdInputError, match="config: model: .*unexpected keyword.*c_zz"):
        TrainConfig.from_yaml(None, ["model.overrides.c_zz=3"])
    with pytest.raises(StarmdInputError, match="unknown denoiser preset 'huge'"):
        TrainConfig.from_yaml(None, ["model.preset=huge"])
    path.write_text("diffusion:\n  train_tau_rho: -1\n")
    with pytest.raises(StarmdInputError, match="cfg.yaml: diffusion.train_tau_rho must be > 0"):
        TrainConfig.from_yaml(path)
    with pytest.raises(StarmdInputError, match="config: diffusion.reference_contact_deadband"):
        TrainConfig.from_yaml(None, ["diffusion.reference_contact_deadband=-0.5"])
    with pytest.raises(StarmdInputError, match="loss.trans_sigma_data_angstrom must be >= 0"):
        TrainConfig.from_yaml(None, ["loss.trans_sigma_data_angstrom=-1"])


def test_config_numbers_are_coerced_or_rejected(tmp_path):
    # YAML reads 3e-3 as a string and 1 as an int; the optimizer needs floats
    config = TrainConfig.from_yaml(None, ["optim.lr=3e-3", "loss.trans=1", "data.batch_size=8.0"])
    assert config.optim.lr == 0.003 and isinstance(config.optim.lr, float)
    assert isinstance(config.loss.trans, float) and config.data.batch_size == 8
    path = tmp_path / "cfg.yaml"
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(StarmdInputError, match="cfg.yaml: optim.lr: expected a number, got 'fast'"):
        TrainConfig.from_yaml(path)
    with pytest.raises(StarmdInputError, match="data.batch_size: expected a number, got 2.5"):
        TrainConfig.from_yaml(None, ["data.batch_size=2.5"])
    with pytest.raises(StarmdInputError, match="optim.lr: expected a number, got True"):
        TrainConfig.from_yaml(None, ["optim.lr=true"])
    # Lightning reads an int as a count of batches and a float as a fraction: both survive
    mixed = TrainConfig.from_yaml(None, ["trainer.limit_val_batches=1", "trainer.max_steps=1e5"])
    assert isinstance(mixed.trainer.limit_val_batches, int) and mixed.trainer.max_steps == 100_000
    assert (
        TrainConfig.from_yaml(None, ["trainer.limit_val_batches=0.5"]).trainer.limit_val_batches
        == 0.5
    )


def test_corrupt_and_incompatible_models_are_clear_errors(tiny_dataset, tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(StarmdCheckpointError, match="model.safetensors: unreadable model file"):
        load_model(bad)
    with pytest.raises(StarmdCheckpointError, match="not found"):
        load_model(tmp_path / "missing.ckpt")


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_runs(tiny_dataset, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "starmd.cli",
        "train",
        str(tiny_dataset),
        "-o",
        str(tmp_path / "ddp"),
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        "--fast-dev-run",
    ] + [a for item in TINY for a in ("--set", item)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_ddp_gradients_are_the_mean_of_each_ranks_single_process_gradients(tiny_dataset, tmp_path):
    """One DDP step on 2 CPU processes: each rank's synchronized gradient equals the mean of the
    gradients a single process computes on the two ranks' batches with their noise draws, from
    the same weights; the ranks saw different windows."""
    script = Path(__file__).with_name("ddp_gradients.py")
    cmd = [sys.executable, str(script), str(tiny_dataset), str(tmp_path), *TINY]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert not torch.equal(ranks[0]["batch"]["frames"], ranks[1]["batch"]["frames"])
    for key, value in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][key], value, rtol=0, atol=0)

    config = TrainConfig.from_yaml(None, TINY)
    module = StarMDModule(config)
    module.model.load_state_dict(ranks[0]["weights"])
    total: dict[str, torch.Tensor] = {}
    for rank, record in enumerate(ranks):
        module.model.zero_grad()
        generator = step_generator(config.trainer.seed, 0, rank, torch.device("cpu"))
        module.compute_losses(record["batch"], generator)["loss"].backward()
        for name, p in module.model.named_parameters():
            if p.grad is not None:
                total[name] = total.get(name, 0) + p.grad / len(ranks)
    assert set(total) == set(ranks[0]["grads"]) == set(ranks[1]["grads"])
    for name, expected in total.items():
        for record in ranks:
            torch.testing.assert_close(record["grads"][name], expected, rtol=1e-4, atol=1e-7)


def test_init_from_a_model_file(tiny_dataset, tmp_path, caplog):
    config = TrainConfig.from_yaml(None, TINY + ["trainer.max_epochs=1"])
    first = train(tiny_dataset, tmp_path / "a", config, progress=False)
    # the tiny dataset has no validation split: said before the run, and no best.ckpt
    assert (
        "no protein in the 'val' split" in caplog.text and "no checkpoints/best.ckpt" in caplog.text
    )
    assert not (tmp_path / "a" / "checkpoints" / "best.ckpt").exists()
    seen = {}

    class _Record(L.Callback):
        def on_train_start(self, trainer, module):
            seen["model"] = {k: v.clone() for k, v in module.model.state_dict().items()}
            seen["ema"] = {k: v.clone() for k, v in module.ema.state_dict().items()}

    train(tiny_dataset, tmp_path / "b", config, progress=False, callbacks=[_Record()], init=first)
    weights = load_model(first).model.state_dict()
    for key, value in weights.items():
        torch.testing.assert_close(seen["model"][key], value, rtol=0, atol=0)
        torch.testing.assert_close(seen["ema"][key], value, rtol=0, atol=0)
    small = TrainConfig.from_yaml(None, [*TINY, "model.preset=small", "trainer.max_epochs=1"])
    with pytest.raises(StarmdCheckpointError, match="do not fit this configuration"):
        train(tiny_dataset, tmp_path / "c", small, progress=False, init=first)


def test_lightning_setting_errors_are_one_line_input_errors(tiny_dataset, tmp_path):
    config = TrainConfig.from_yaml(
        None, TINY + ["trainer.strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"]
    )
    with pytest.raises(StarmdInputError, match="trainer settings: .*fsdp.* requires a GPU"):
        train(tiny_dataset, tmp_path / "fsdp", config, progress=False)
    config = TrainConfig.from_yaml(None, TINY + ["trainer.max_time=abc"])
    with pytest.raises(StarmdInputError, match="trainer settings: .*not a valid duration"):
        train(tiny_dataset, tmp_path / "time", config, progress=False)


def test_masked_noisy_frames_do_not_count_in_the_loss():
    """compute_losses masks noisy frame 0 (no history, its 'previous' frame is the protein's
    start structure); a masked frame's prediction must not change any loss term."""
    from starmd.diffusion import SE3TorusDiffuser, random_rotations
    from starmd.modelfile.config import LossSection
    from starmd.structure.rigid import Rigid
    from starmd.train.losses import denoising_losses

    g = torch.Generator().manual_seed(0)
    b, k, l = 1, 2, 6
    true = Rigid(random_rotations((b, k, l), g), 5 * torch.randn(b, k, l, 3, generator=g))
    torsions = torch.rand(b, k, l, 7, generator=g) * 6 - 3
    aatype = torch.randint(0, 20, (b, l), generator=g)
    mask = torch.ones(b, l, 7, dtype=torch.bool)
    diffuser = SE3TorusDiffuser()
    noisy = diffuser.forward_marginal(true, torsions, mask[:, None], 0.1, g)

    def losses(shift: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = Rigid(true.rots, true.trans + shift)
        angles = torsions + 0.1
        unit = torch.stack([angles.sin(), angles.cos()], dim=-1)
        return denoising_losses(
            diffuser=diffuser,
            noisy=noisy,
            pred_frames=pred,
            pred_torsions=unit,
            pred_torsions_unnormalized=unit,
            pred_frames_per_block=None,
            true_frames=true,
            true_torsions=torsions,
            aatype=aatype,
            residue_mask=torch.ones(b, l, dtype=torch.bool),
            torsion_mask=mask,
            oxt_mask=None,
            weights=LossSection(),
            frame_mask=torch.tensor([[False, True]]),
        )

    base = losses(torch.zeros(b, k, l, 3))
    moved_first = losses(torch.zeros(b, k, l, 3).index_fill(1, torch.tensor([0]), 2.0))
    moved_second = losses(torch.zeros(b, k, l, 3).index_fill(1, torch.tensor([1]), 2.0))
    for name in base:
        torch.testing.assert_close(moved_first[name], base[name])
    assert moved_second["trans"] > base["trans"] + 0.01


def test_every_shipped_config_loads():
    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert len(configs) >= 7
    for path in configs:
        config = TrainConfig.from_yaml(path)
        assert config.model.preset in ("tiny", "small", "base"), path.name
