"""Re-anchored rollouts (``generate --reanchor-every N``).

Every ``N`` frames the rollout is conditioned on a new structure per replica (the input, or a
random recent frame of that replica) and its cache re-encoded. What must hold: the anchors are
drawn as documented (input with the stated probability, else uniform over the recent frames),
the re-encoded cache gives the prediction of a full forward pass over the input and the last
``context`` frames under the new conditioning, memory stays flat, a resumed run writes the
uninterrupted run's bytes, a replica does not depend on how many share the batch, and bad
requests are one-line errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from starmd.errors import StarmdInputError
from starmd.model import FrameTokens
from starmd.modelfile import load_model
from starmd.sample.generate import GenerationSettings, generate
from starmd.sample.rollout import Reanchor, Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure
from tests.conftest import STRUCTURES, recording_network_calls
from tests.sample.test_resume_history import _files, _interrupted

VILLIN = STRUCTURES / "1vii.pdb"


@pytest.fixture(scope="module")
def anchored_model_path(tmp_path_factory):
    """An untrained tiny model whose config says it was trained with half its windows
    conditioned on frames of their own trajectory (what re-anchoring requires)."""
    from starmd.modelfile.config import TrainConfig
    from starmd.train.module import StarMDModule
    from starmd.train.run import export_model

    torch.manual_seed(0)
    config = TrainConfig.from_yaml(None, ["model.preset=tiny", "data.input_from_trajectory=0.5"])
    module = StarMDModule(config)
    with torch.no_grad():
        for p in module.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return export_model(module, tmp_path_factory.mktemp("model") / "anchored.safetensors")


def _rollout(model_path, replicas=2, every=3, span=4, context=3, p_input=0.5, seed=0):
    loaded = load_model(model_path)
    protein, positions = load_structure(VILLIN)
    inputs = protein_input(protein, positions, 100.0, replicas=replicas)
    reanchor = Reanchor(every=every, span=span, input_probability=p_input)
    settings = RolloutSettings(steps=2, context=context, reanchor=reanchor)
    return Rollout(loaded, inputs, settings, seed=seed)


def test_anchor_draws_follow_the_stated_distribution(anchored_model_path):
    rollout = _rollout(anchored_model_path, replicas=4, span=5, p_input=0.3)
    list(rollout.states(6))  # frames 1..5 fill the recent frames (frame 0 was evicted)
    assert [t for t, _, _ in rollout.recent] == [1, 2, 3, 4, 5]
    choices = np.array(
        [[-1 if k is None else k for k in rollout.anchor_choice(t)] for t in range(3000)]
    )
    n = choices.size
    p_input = (choices == -1).mean()
    assert abs(p_input - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    counts = np.bincount(choices[choices >= 0], minlength=5)
    expected = (choices >= 0).sum() / 5
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 18.5  # chi-square, 4 degrees of freedom, p = 0.001
    # replicas draw independently, and a draw is a function of (seed, t) alone
    assert (choices[:, 0] != choices[:, 1]).mean() > 0.5
    assert rollout.anchor_choice(7) == rollout.anchor_choice(7)


def test_reanchored_cache_gives_the_full_forward_pass_under_the_new_anchor(anchored_model_path):
    rollout = _rollout(anchored_model_path, every=3, span=4, context=3)
    model = rollout.model
    with recording_network_calls(model) as calls:
        for t, _, _ in rollout.states(5):
            if t == 3:  # the re-anchoring after frame 3 happens when the loop resumes
                calls.clean.clear()
                recent = list(rollout.recent)
    clean, noisy, outputs = calls.clean, calls.noisy, calls.outputs
    # after frame 3: input (sink), frames 1 and 2 re-encoded, frame 3 staged and merged into
    # frame 4's first pass
    assert [round(float(c.time_ps[0, 0]) / 100.0) for c in clean] == [0, 1, 2, 3]
    cond = rollout.inputs.cond
    input_frames = rollout.input_cond.init_frames
    for r, k in enumerate(rollout.anchor_choice(3)):
        expected = input_frames if k is None else recent[k][1]
        torch.testing.assert_close(cond.init_frames.trans[r], expected.trans[r])
    with torch.no_grad():
        full = model(cond, FrameTokens.cat(clean + [noisy[-1]]), FrameTokens.cat([noisy[-1]] * 5))
    torch.testing.assert_close(
        full.noisy.frames.trans[:, 4], outputs[-1].frames.trans[:, 0], atol=1e-4, rtol=1e-4
    )
    # the plain rollout's conditioning would have given another prediction
    with torch.no_grad():
        plain = model(
            rollout.input_cond,
            FrameTokens.cat(clean + [noisy[-1]]),
            FrameTokens.cat([noisy[-1]] * 5),
        )
    if any(k is not None for k in rollout.anchor_choice(3)):
        assert (plain.noisy.frames.trans[:, 4] - full.noisy.frames.trans[:, 4]).abs().max() > 1e-3


def test_memory_stays_flat(anchored_model_path):
    rollout = _rollout(anchored_model_path, every=2, span=4, context=3)
    sizes = {}
    for t, _, _ in rollout.states(21):
        if t in (8, 20):
            state = rollout.state_dict()
            sizes[t] = sum(x.numel() for x in state["recent"].values() if torch.is_tensor(x))
        assert len(rollout.recent) <= 4
    assert sizes[8] == sizes[20] > 0
    assert len(rollout.cache.groups) <= 4  # context 3 + the sink


def _settings(**kw) -> GenerationSettings:
    base = dict(
        frames=14,
        dt_ps=100.0,
        replicas=2,
        seed=1,
        steps=2,
        context=3,
        chunk=3,
        refine=False,
        reanchor_every=4,
        reanchor_span_ps=500.0,
    )
    base.update(kw)
    return GenerationSettings(**base)


def test_resumed_reanchored_run_writes_the_uninterrupted_runs_bytes(anchored_model_path, tmp_path):
    settings = _settings()
    model = anchored_model_path
    sidecar = generate(VILLIN, tmp_path / "full", settings, model=model, device="cpu")
    assert sidecar["settings"]["reanchor_every"] == 4
    out = tmp_path / "resumed"
    # committed through frame 8, where a re-anchoring is due when the run continues
    _interrupted(out, settings, model, at_frame=10)
    assert (out / "1vii.rollout.9.pt").is_file()
    _interrupted(out, settings, model, at_frame=12, resume=True)  # committed through 11
    generate(VILLIN, out, settings, model=model, device="cpu", resume=True)
    assert _files(out, 2) == _files(tmp_path / "full", 2)
    plain = generate(
        VILLIN, tmp_path / "plain", _settings(reanchor_every=0), model=model, device="cpu"
    )
    assert plain["settings"]["reanchor_every"] == 0
    assert _files(tmp_path / "plain", 2) != _files(tmp_path / "full", 2)


def test_replica_one_does_not_depend_on_the_number_of_replicas(anchored_model_path, tmp_path):
    import mdtraj

    def replica(n: int, r: int) -> np.ndarray:
        out = tmp_path / str(n)
        if not out.exists():
            generate(VILLIN, out, _settings(replicas=n), model=anchored_model_path, device="cpu")
        return mdtraj.load(str(out / f"1vii_R{r}.xtc"), top=str(out / "1vii.pdb")).xyz

    np.testing.assert_allclose(replica(3, 1), replica(1, 1), atol=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reanchor_every": -1}, "--reanchor-every must be >= 0"),
        ({"context": None}, "--reanchor-every needs a bounded --context"),
        ({"reanchor_span_ps": 0.0}, "--reanchor-span must be > 0"),
    ],
)
def test_bad_reanchor_settings(anchored_model_path, tmp_path, kwargs, message):
    with pytest.raises(StarmdInputError, match=message):
        generate(VILLIN, tmp_path, _settings(**kwargs), model=anchored_model_path, device="cpu")


def test_a_model_trained_on_the_input_only_is_refused(tiny_model_path, tmp_path):
    with pytest.raises(StarmdInputError, match="tiny.safetensors: --reanchor-every needs a model"):
        generate(VILLIN, tmp_path, _settings(), model=tiny_model_path, device="cpu")
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_cli_reanchor_error_is_one_line(tiny_model_path, tmp_path, capsys):
    from starmd.cli import main

    args = ["generate", str(VILLIN), "-o", str(tmp_path / "o"), "--frames", "4"]
    args += ["--model", str(tiny_model_path), "--reanchor-every", "2"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--reanchor-every needs a model" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_bad_span_names_its_option(anchored_model_path, tmp_path, capsys):
    from starmd.cli import main

    args = ["generate", str(VILLIN), "-o", str(tmp_path / "o"), "--frames", "4"]
    args += ["--model", str(anchored_model_path), "--reanchor-every", "2"]
    with pytest.raises(SystemExit) as exc:
        main(args + ["--reanchor-span", "5parsec"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--reanchor-span '5parsec': expected a number" in err
    assert not (tmp_path / "o").exists()
