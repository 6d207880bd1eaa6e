"""``generate --resume`` restores the rollout's history from the written trajectories: the frames
it re-encodes into the cache are, frame for frame, the frames the uninterrupted run had cached.

The XTC files are lossy (0.001 nm precision) and superposed on frame 0, so frames are compared
by their C-alpha distance matrices (blind to the superposition) with a tolerance that the
precision allows (errors below 0.02 A) but a history off by one frame (distances changing by
whole Angstroms per frame for this untrained model) does not. Exact resume is not claimed here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from starmd.sample.generate import GenerationSettings, generate
from starmd.sample.rollout import Rollout
from tests.conftest import STRUCTURES

VILLIN = STRUCTURES / "1vii.pdb"
XTC_TOLERANCE_A = 0.05


def _settings() -> GenerationSettings:
    return GenerationSettings(
        frames=10, dt_ps=100.0, replicas=2, seed=1, steps=2, context=3, chunk=3
    )


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


def test_resumed_history_is_the_uninterrupted_runs_history(
    tiny_model_path, tmp_path, cached_frames
):
    generate(VILLIN, tmp_path / "full", _settings(), model=tiny_model_path, device="cpu")
    uninterrupted = dict(cached_frames)
    cached_frames.clear()

    def interrupt(info):
        if info["frame"] == 6:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        generate(VILLIN, out, _settings(), model=tiny_model_path, device="cpu", progress=interrupt)
    cached_frames.clear()
    sidecar = generate(VILLIN, out, _settings(), model=tiny_model_path, device="cpu", resume=True)
    start = sidecar["resumed_from_frame"]
    restored = [(t, d) for t, d in cached_frames if t < start]
    assert [t for t, _ in restored] == [0, start - 3, start - 2, start - 1]  # frame 0 + context
    for t, distances in restored:
        error = np.abs(distances - uninterrupted[t]).max()
        assert error < XTC_TOLERANCE_A, (t, error)
    # the same check can fail: consecutive frames of this model differ far beyond the tolerance
    step = np.abs(uninterrupted[start - 1] - uninterrupted[start - 2]).max()
    assert step > 10 * XTC_TOLERANCE_A, step
