"""``StarDenoiser.compile_rollout``: a compile failure (no C++ compiler, an Inductor error) is
one clear StarmdError, and passes over a default (non-static) cache stay eager."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

from starmd.errors import StarmdError
from starmd.model import KVCache
from tests.model.conftest import make_model, make_window


def test_a_failed_compile_is_one_line_naming_the_way_out(monkeypatch):
    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise BackendCompilerFailed(broken, RuntimeError("g++: not found\nmore"), None)

        return call

    monkeypatch.setattr(torch, "compile", broken)
    model = make_model()
    model.compile_rollout()
    data = make_window(frames=2)
    with pytest.raises(StarmdError, match=r"torch.compile failed \(RuntimeError: g\+\+: not fou"):
        model.denoise(KVCache(window=2, sink=True, static=True), data.cond, data.noisy[0])
    # a default cache never goes through the compiled trunk
    out = model.denoise(KVCache(window=2, sink=True), data.cond, data.noisy[0])
    assert torch.isfinite(out.frames.trans).all()
