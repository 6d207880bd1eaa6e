"""starmd generate: files, determinism, cache == no cache, resume, bad inputs."""

import json
import subprocess
import sys

import mdtraj
import numpy as np
import pytest
import torch

from starmd.cli import main
from starmd.errors import StarmdCheckpointError, StarmdInputError
from starmd.model import FrameTokens
from starmd.modelfile import load_model
from starmd.sample import generate as generate_module
from starmd.sample.generate import GenerationSettings, generate
from starmd.sample.refine import RefineSettings
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure.io import load_structure
from tests.conftest import STRUCTURES, recording_network_calls

VILLIN = STRUCTURES / "1vii.pdb"


def _settings(**kw):
    base = dict(frames=6, dt_ps=100.0, replicas=2, seed=1, steps=3, context=3, chunk=4)
    base.update(kw)
    return GenerationSettings(**base)


def test_generate_writes_readable_trajectories(tiny_model_path, tmp_path):
    sidecar = generate(VILLIN, tmp_path, _settings(), model=tiny_model_path, device="cpu")
    reference, _ = load_structure(VILLIN)
    for r in (1, 2):
        traj = mdtraj.load(str(tmp_path / f"1vii_R{r}.xtc"), top=str(tmp_path / "1vii.pdb"))
        assert traj.n_frames == 6
        np.testing.assert_allclose(traj.time, np.arange(6) * 100.0)
        names = [res.name for res in traj.topology.residues]
        assert names == list(reference.residue_names)
        assert [res.resSeq for res in traj.topology.residues] == reference.residue_numbers.tolist()
    assert sidecar["frames_written"] == [6, 6]
    assert sidecar["simulated_ns_per_wall_s"] > 0
    # speeds count every replica: 2 trajectories x 5 generated frames in rollout_s
    assert sidecar["frames_per_s"] == pytest.approx(10 / sidecar["rollout_s"], rel=0.01)
    assert sidecar["simulated_ns_per_wall_s"] == pytest.approx(
        sidecar["frames_per_s"] * 0.1, rel=0.01
    )
    on_disk = json.loads((tmp_path / "1vii.json").read_text())
    assert on_disk["settings"]["seed"] == 1 and len(on_disk["health"]) == 2
    assert not (tmp_path / "1vii.progress.json").exists()


def test_same_seed_same_trajectory(tiny_model_path, tmp_path):
    generate(VILLIN, tmp_path / "a", _settings(), model=tiny_model_path, device="cpu")
    generate(VILLIN, tmp_path / "b", _settings(), model=tiny_model_path, device="cpu")
    generate(VILLIN, tmp_path / "c", _settings(seed=2), model=tiny_model_path, device="cpu")
    a = (tmp_path / "a" / "1vii_R1.xtc").read_bytes()
    assert a == (tmp_path / "b" / "1vii_R1.xtc").read_bytes()
    assert a != (tmp_path / "c" / "1vii_R1.xtc").read_bytes()


def test_replica_one_does_not_depend_on_the_number_of_replicas(tiny_model_path, tmp_path):
    # the network's rollout (--no-refine); the refinement's clamped steps amplify rounding
    # differences of a batched frame (docs/design.md, section 6), as MD amplifies them
    def replica(n_replicas: int, r: int) -> np.ndarray:
        out = tmp_path / str(n_replicas)
        if not out.exists():
            settings = _settings(replicas=n_replicas, frames=8, chunk=50, refine=False)
            generate(VILLIN, out, settings, model=tiny_model_path, device="cpu")
        return mdtraj.load(str(out / f"1vii_R{r}.xtc"), top=str(out / "1vii.pdb")).xyz

    alone, batched, second = replica(1, 1), replica(3, 1), replica(3, 2)
    # batched matrix products may round differently from unbatched ones: not bit for bit, but
    # far below the XTC's 0.01 A precision and far below the replicas' own spread
    np.testing.assert_allclose(batched, alone, atol=2e-3)
    assert np.abs(second[1:] - alone[1:]).max() > 0.05


@pytest.mark.parametrize("refine", [None, RefineSettings(iterations=5)])
def test_cached_rollout_matches_full_forward(tiny_model_path, refine):
    loaded = load_model(tiny_model_path)
    protein, positions = load_structure(VILLIN)
    inputs = protein_input(protein, positions, 100.0, replicas=1)
    settings = RolloutSettings(steps=2, context=None, sink=False, refine=refine)
    rollout = Rollout(loaded, inputs, settings, seed=0)
    model = loaded.model
    with recording_network_calls(model) as calls:
        list(rollout.frames(3))
    clean, noisy, outputs = calls.clean, calls.noisy, calls.outputs
    assert len(clean) == 2  # frames 0 and 1 were encoded, each in a merged pass
    t = 2  # the last denoising call predicted frame 2 attending to clean frames 0 and 1
    with torch.no_grad():
        full = model(
            inputs.cond,
            FrameTokens.cat(clean[:t] + [noisy[-1]]),
            FrameTokens.cat([noisy[-1]] * (t + 1)),
        )
    torch.testing.assert_close(
        full.noisy.frames.trans[:, t], outputs[-1].frames.trans[:, 0], atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        full.noisy.torsions[:, t], outputs[-1].torsions[:, 0], atol=1e-4, rtol=1e-4
    )


def test_interrupted_generation_resumes_to_the_requested_length(tiny_model_path, tmp_path):
    def interrupt(info):
        if info["frame"] == 6:
            raise KeyboardInterrupt

    settings = _settings(frames=10, chunk=3)
    with pytest.raises(KeyboardInterrupt):
        generate(
            VILLIN, tmp_path, settings, model=tiny_model_path, device="cpu", progress=interrupt
        )
    partial = mdtraj.load(str(tmp_path / "1vii_R1.xtc"), top=str(tmp_path / "1vii.pdb"))
    assert partial.n_frames == 6  # two committed chunks, a valid shorter trajectory
    with pytest.raises(StarmdInputError, match="exists; pass --overwrite or --resume"):
        generate(VILLIN, tmp_path, settings, model=tiny_model_path, device="cpu")
    sidecar = generate(VILLIN, tmp_path, settings, model=tiny_model_path, device="cpu", resume=True)
    assert sidecar["resumed_from_frame"] == 6
    full = mdtraj.load(str(tmp_path / "1vii_R1.xtc"), top=str(tmp_path / "1vii.pdb"))
    assert full.n_frames == 10
    np.testing.assert_allclose(full.time, np.arange(10) * 100.0)
    np.testing.assert_array_equal(full.xyz[:6], partial.xyz)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 0}, "--frames must be >= 2"),
        ({"dt_ps": 0.0}, "--dt must be > 0"),
        ({"steps": 0}, "--steps must be >= 1"),
        ({"replicas": 0}, "--replicas must be >= 1"),
    ],
)
def test_bad_settings(tiny_model_path, tmp_path, kwargs, message):
    with pytest.raises(StarmdInputError, match=message):
        generate(VILLIN, tmp_path, _settings(**kwargs), model=tiny_model_path, device="cpu")


def test_bad_models_and_memory_budget(tiny_model_path, tmp_path, monkeypatch):
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"junk" * 10)
    with pytest.raises(StarmdCheckpointError, match="bad.safetensors"):
        generate(VILLIN, tmp_path / "o", _settings(), model=corrupt, device="cpu")
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_model_path))
    from safetensors import safe_open

    with safe_open(str(tiny_model_path), framework="pt") as fh:
        metadata = fh.metadata()
    config = json.loads(metadata["config"])
    config["model"]["overrides"] = {"c_s": 40}
    metadata["config"] = json.dumps(config)
    save_file(state, str(tmp_path / "other.safetensors"), metadata=metadata)
    with pytest.raises(StarmdCheckpointError, match="do not match the model configuration"):
        generate(
            VILLIN, tmp_path / "o", _settings(), model=tmp_path / "other.safetensors", device="cpu"
        )
    monkeypatch.setattr(generate_module, "available_memory_bytes", lambda device: 2**20)
    with pytest.raises(StarmdInputError, match="GiB per step"):
        generate(VILLIN, tmp_path / "o", _settings(), model=tiny_model_path, device="cpu")


def test_models_are_found_by_bundled_name_or_path(tiny_model_path, tmp_path, monkeypatch):
    from starmd.modelfile import BUNDLED_MODELS, bundled_model_path, resolve_model

    assert resolve_model(None) == bundled_model_path()
    assert resolve_model("starmd-small") == bundled_model_path("starmd-small")
    assert resolve_model(tiny_model_path) == tiny_model_path  # a path stays a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "starmd-small").write_text("a local file of that name wins")
    assert resolve_model("starmd-small").resolve() == tmp_path / "starmd-small"
    monkeypatch.setitem(BUNDLED_MODELS, "starmd-absent", "assets/models/absent.safetensors")
    with pytest.raises(StarmdInputError, match="bundled model starmd-absent is not installed"):
        resolve_model("starmd-absent")


def test_cli_dt_units_and_bad_structure(tiny_model_path, tmp_path, capsys):
    args = [
        "generate",
        str(VILLIN),
        "-o",
        str(tmp_path),
        "--model",
        str(tiny_model_path),
        "--frames",
        "3",
        "--steps",
        "2",
        "--device",
        "cpu",
    ]
    for dt, message in (
        ("0ns", "must be > 0"),
        ("5 parsecs", "expected a number with a unit"),
        ("10", "expected a number with a unit"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(args + ["--dt", dt])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err
    water = tmp_path / "water.pdb"
    water.write_text(
        "HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\nEND\n"
    )
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "generate",
                str(water),
                "-o",
                str(tmp_path / "w"),
                "--model",
                str(tiny_model_path),
                "--dt",
                "1ns",
            ]
        )
    assert exc.value.code == 2 and "no protein residues" in capsys.readouterr().err
    main(args + ["--dt", "50ps"])  # success returns normally
    assert mdtraj.load(str(tmp_path / "1vii_R1.xtc"), top=str(tmp_path / "1vii.pdb")).n_frames == 3


def test_flagged_frames_are_all_counted_even_when_the_list_is_capped(
    tiny_model_path, tmp_path, monkeypatch
):
    # the untrained tiny model breaks chains at 100 ps in most frames
    monkeypatch.setattr(generate_module, "MAX_FLAGGED", 2)
    sidecar = generate(VILLIN, tmp_path, _settings(frames=8), model=tiny_model_path, device="cpu")
    per_frame = sum(
        max(h["nan_frames"], h["break_frames"], h["clash_frames"]) for h in sidecar["health"]
    )
    assert len(sidecar["flagged_frames"]) == 2
    assert sidecar["flagged_count"] >= per_frame > 2


def test_sampling_does_not_import_the_training_stack():
    """Loading a model and building its diffuser must not import Lightning (2-3 s of start-up
    that the time to the first frame would pay), and sampling never imports ``starmd.train``."""
    code = (
        "import sys; import starmd.sample.generate; "
        "from starmd.modelfile import bundled_model_path, load_model; "
        "load_model(bundled_model_path()).diffuser; "
        "sys.exit(int('lightning' in sys.modules or 'starmd.train' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
