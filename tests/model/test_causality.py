"""Block-causal time: a frame's prediction never depends on later frames or other noisy frames."""

from __future__ import annotations

from dataclasses import replace

import torch

from starmd.model import FrameTokens
from starmd.structure.rigid import Rigid
from tests.model.conftest import make_model, make_window

K = 4


def _perturb_group(tokens: FrameTokens, group: int, seed: int) -> FrameTokens:
    g = torch.Generator().manual_seed(seed)
    frames = tokens.frames
    trans = frames.trans.clone()
    trans[:, group] += 3.0 * torch.randn(trans[:, group].shape, generator=g, dtype=trans.dtype)
    rots = frames.rots.clone()
    rots[:, group] = rots[:, group].flip(-1) * torch.tensor([1.0, 1.0, -1.0], dtype=rots.dtype)
    torsions = tokens.torsions.clone()
    torsions[:, group] += 1.0
    tau = tokens.tau.clone()
    tau[:, group] = 0.5 * tau[:, group] + 0.3
    return replace(tokens, frames=Rigid(rots, trans), torsions=torsions, tau=tau)


def _group_differences(a, b) -> torch.Tensor:
    """Max abs difference of predicted translations and torsions per group, ``(G,)``."""
    dt = (a.frames.trans - b.frames.trans).abs().amax(dim=(0, 2, 3))
    dtor = (a.torsions - b.torsions).abs().amax(dim=(0, 2, 3, 4))
    return torch.maximum(dt, dtor)


def _assert_clean_frames_seen_only_later(model, window) -> None:
    """Perturbing clean frame j changes its own prediction and every later noisy frame's, and
    nothing earlier."""
    frames = window.clean.frames.trans.shape[1]
    with torch.no_grad():
        ref = model(window.cond, window.clean, window.noisy)
        for j in range(frames):
            out = model(window.cond, _perturb_group(window.clean, j, seed=j), window.noisy)
            clean_diff = _group_differences(out.clean, ref.clean)
            noisy_diff = _group_differences(out.noisy, ref.noisy)
            # c_s for s < j and n_s for s <= j do not see c_j.
            if j:
                assert clean_diff[:j].max() < 1e-12
            assert noisy_diff[: j + 1].max() < 1e-12
            # ... while c_j itself and every later noisy frame do.
            assert clean_diff[j] > 1e-3
            assert (noisy_diff[j + 1 :] > 1e-3).all()


def test_perturbing_a_clean_frame_never_changes_earlier_predictions():
    _assert_clean_frames_seen_only_later(make_model(), make_window(frames=K))


def test_perturbing_a_noisy_frame_changes_only_its_own_prediction():
    model = make_model()
    window = make_window(frames=K)
    with torch.no_grad():
        ref = model(window.cond, window.clean, window.noisy)
        for j in range(K):
            out = model(window.cond, window.clean, _perturb_group(window.noisy, j, seed=10 + j))
            noisy_diff = _group_differences(out.noisy, ref.noisy)
            assert _group_differences(out.clean, ref.clean).max() < 1e-12
            others = torch.arange(K) != j
            assert noisy_diff[others].max() < 1e-12
            assert noisy_diff[j] > 1e-3
