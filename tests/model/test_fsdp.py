"""The denoiser under fully sharded data parallelism (FSDP2), two CPU processes over gloo.

Lightning refuses its FSDP strategy without a GPU, so the sharded training path cannot run
here end to end; this checks the part that is the model's: with every block's parameters
sharded across two processes, the forward pass and the gathered gradients equal those of the
unsharded model.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.model.conftest import make_model, make_window


def _loss(model, window) -> torch.Tensor:
    out = model(window.cond, window.clean, window.noisy)
    return (
        (out.noisy.frames.trans**2).sum() + out.noisy.torsions.sum() + out.clean.frames.rots.sum()
    )


def _worker(rank: int, world: int, port: int, failures) -> None:
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a rank that fails mid-way must not leave the other waiting forever in a collective
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    try:
        torch.set_num_threads(1)
        window = make_window(frames=3, num_padding=2)
        reference = make_model().train()
        _loss(reference, window).backward()
        sharded = make_model().train()
        for block in sharded.blocks:
            fully_shard(block)
        fully_shard(sharded)
        loss = _loss(sharded, window)
        loss.backward()
        torch.testing.assert_close(loss, _loss(reference, window).detach(), rtol=1e-10, atol=0)
        shards = compared = 0
        for (name, p), q in zip(sharded.named_parameters(), reference.parameters(), strict=True):
            shards += p.to_local().numel() < p.numel()
            if q.grad is None:  # e.g. rotation updates behind stop_rotation_gradient
                assert p.grad is None, name
                continue
            compared += 1
            grad = p.grad.full_tensor()
            torch.testing.assert_close(grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
        assert shards > 10  # parameters really are split across the two processes
        assert compared > 50
    except Exception as exc:  # report to the parent; a raised error would only kill the worker
        failures.put(f"rank {rank}: {type(exc).__name__}: {exc}"[:2000])
    finally:
        dist.barrier()  # both ranks done with gloo before either tears it down (else: abort)
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: a gloo thread still winding down then can abort
    # the worker (SIGABRT seen once in ~10 runs). Every result already went to ``failures``,
    # which the parent checks.
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_sharded_denoiser_matches_the_unsharded_one():
    context = mp.get_context("spawn")
    failures = context.SimpleQueue()
    mp.start_processes(
        _worker, args=(2, _free_port(), failures), nprocs=2, join=True, start_method="spawn"
    )
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert not errors, "\n".join(errors)
