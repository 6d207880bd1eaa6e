"""``generate --resume`` continues an interrupted run.

With the rollout state saved at every commit (KV cache + last frame), the resumed run writes the
same bytes as the uninterrupted one. Output folders without a saved state (earlier versions)
still resume, approximately: the history is re-encoded from the written trajectories, and the
frames re-encoded must be, frame for frame, the ones the uninterrupted run had cached.

The XTC files are lossy (0.001 nm precision) and superposed on frame 0, so in the approximate
case frames are compared by their C-alpha distance matrices (blind to the superposition) with a
tolerance that the precision allows (errors below 0.02 A) but a history off by one frame
(distances changing by whole Angstroms per frame for this untrained model) does not.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from starmd.errors import StarmdInputError
from starmd.sample.generate import GenerationSettings, generate
from starmd.sample.rollout import Rollout
from tests.conftest import STRUCTURES

VILLIN = STRUCTURES / "1vii.pdb"
XTC_TOLERANCE_A = 0.05


def _settings(**kw) -> GenerationSettings:
    base = dict(frames=10, dt_ps=100.0, replicas=2, seed=1, steps=2, context=3, chunk=3)
    base.update(kw)
    return GenerationSettings(**base)


def _interrupted(out, settings, model, at_frame: int, resume: bool = False) -> None:
    """A run (or resumed run) stopped by an exception right after frame ``at_frame``."""

    def interrupt(info):
        if info["frame"] == at_frame:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(
            VILLIN, out, settings, model=model, device="cpu", resume=resume, progress=interrupt
        )


def _files(out, replicas: int) -> dict[str, bytes]:
    names = ["1vii.pdb", *(f"1vii_R{r + 1}.xtc" for r in range(replicas))]
    return {name: (out / name).read_bytes() for name in names}


@pytest.mark.parametrize(
    ("model_name", "context", "refine"),
    [("tiny", 3, False), ("tiny", None, False), ("starmd-small", 3, False), ("tiny", 3, True)],
)
def test_resumed_run_writes_the_uninterrupted_runs_bytes(
    model_name, context, refine, tiny_model_path, tmp_path
):
    model = tiny_model_path if model_name == "tiny" else model_name
    # the bundled model at its own defaults (dt 50 ps, dpm2 at 5 steps); context 3 < the 6
    # frames cached before the interruption, so the saved cache has evicted frames; with
    # refinement, the cache holds refined frames and the sidecar's counts continue
    overrides = {"dt_ps": None, "steps": None} if model_name != "tiny" else {}
    settings = _settings(context=context, refine=refine, **overrides)
    generate(VILLIN, tmp_path / "full", settings, model=model, device="cpu")
    resumed = tmp_path / "resumed"
    _interrupted(resumed, settings, model, at_frame=7)
    assert sorted(p.name for p in resumed.glob("*.rollout.*.pt")) == ["1vii.rollout.6.pt"]
    sidecar = generate(VILLIN, resumed, settings, model=model, device="cpu", resume=True)
    assert sidecar["resumed_from_frame"] == 6 and sidecar["resumed_exactly"] is True
    assert _files(resumed, 2) == _files(tmp_path / "full", 2)
    if refine:
        full = json.loads((tmp_path / "full" / "1vii.json").read_text())["refinement"]
        counted = [r["frames"] for r in sidecar["refinement"]["replicas"]]
        assert (
            counted == [9, 9]
            and sidecar["refinement"]["replicas"][0]["raw"] == (full["replicas"][0]["raw"])
        )
    assert not list(resumed.glob("*.rollout.*.pt")) and not list(resumed.glob("*.progress.json"))


def test_resume_twice_in_a_row_is_still_exact(tiny_model_path, tmp_path):
    settings = _settings(frames=12)
    generate(VILLIN, tmp_path / "full", settings, model=tiny_model_path, device="cpu")
    out = tmp_path / "resumed"
    _interrupted(out, settings, tiny_model_path, at_frame=4)  # committed: frames 0-2
    _interrupted(out, settings, tiny_model_path, at_frame=10, resume=True)  # 3-8
    generate(VILLIN, out, settings, model=tiny_model_path, device="cpu", resume=True)
    assert _files(out, 2) == _files(tmp_path / "full", 2)


def test_unreadable_rollout_state_is_a_one_line_error(tiny_model_path, tmp_path):
    _interrupted(tmp_path, _settings(), tiny_model_path, at_frame=4)
    (tmp_path / "1vii.rollout.3.pt").write_bytes(b"not a saved state")
    with pytest.raises(StarmdInputError, match=r"1vii\.rollout\.3\.pt: unreadable rollout state"):
        generate(VILLIN, tmp_path, _settings(), model=tiny_model_path, device="cpu", resume=True)


def _ca_distances(frames) -> np.ndarray:
    trans = frames.trans.double()
    return torch.cdist(trans, trans).numpy()


@pytest.fixture
def cached_frames(monkeypatch):
    """Every frame the rollout stages for its cache: list of (t, CA distances (B, L, L))."""
    seen: list[tuple[int, np.ndarray]] = []
    stage = Rollout.stage_clean

    def spy(self, t, frames, torsions):
        seen.append((t, _ca_distances(frames)))
        return stage(self, t, frames, torsions)

    monkeypatch.setattr(Rollout, "stage_clean", spy)
    return seen


def test_folder_without_saved_state_resumes_from_the_uninterrupted_runs_history(
    tiny_model_path, tmp_path, cached_frames, caplog
):
    # the network's rollout: with the atom polish the written frames deliberately differ from
    # the cached ones, so re-encoding them is further from the uninterrupted run
    settings = _settings(refine=False)
    generate(VILLIN, tmp_path / "full", settings, model=tiny_model_path, device="cpu")
    uninterrupted = dict(cached_frames)
    cached_frames.clear()
    out = tmp_path / "resumed"
    _interrupted(out, settings, tiny_model_path, at_frame=6)
    for path in out.glob("*.rollout.*.pt"):  # as an earlier version left it
        path.unlink()
    cached_frames.clear()
    with caplog.at_level(logging.WARNING, logger="starmd.sample.writer"):
        sidecar = generate(VILLIN, out, settings, model=tiny_model_path, device="cpu", resume=True)
    assert "only approximates the uninterrupted run" in caplog.text
    assert sidecar["resumed_exactly"] is False
    start = sidecar["resumed_from_frame"]
    restored = [(t, d) for t, d in cached_frames if t < start]
    assert [t for t, _ in restored] == [0, start - 3, start - 2, start - 1]  # frame 0 + context
    for t, distances in restored:
        error = np.abs(distances - uninterrupted[t]).max()
        assert error < XTC_TOLERANCE_A, (t, error)
    # the same check can fail: consecutive frames of this model differ far beyond the tolerance
    step = np.abs(uninterrupted[start - 1] - uninterrupted[start - 2]).max()
    assert step > 10 * XTC_TOLERANCE_A, step
