"""CUDA correctness of the STAR-MD denoiser (run on a GPU machine; prints a JSON report).

Checks, each against a tolerance stated below, on a randomly perturbed tiny denoiser:

1. the training-layout forward on CUDA equals the CPU forward (float32, TF32 off);
2. KV-cache rollout on CUDA equals the full forward (window 2 + sink);
3. SE(3): a global rigid motion of the inputs moves the CUDA predictions by the same motion;
4. causality on CUDA: perturbing clean frame k leaves the predictions of frames < k unchanged;
5. bf16 autocast vs float32 on CUDA (reported, not asserted: bf16 is not the default);
6. the rollout's merged pass (``append_and_denoise``) equals ``append_clean`` + ``denoise``;
7. the neighbour-restricted pair path (``pair_neighbours`` below the protein length) on CUDA
   equals it on CPU;
8. the sparse elastic prior (SciPy on the host) gives CUDA tensors equal to the dense prior's.

    python benchmarks/cuda_check.py --out cuda_check.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starmd.model import KVCache  # noqa: E402
from starmd.structure.rigid import Rigid  # noqa: E402
from tests.model.conftest import make_model, make_window, random_rigid  # noqa: E402


def to_device(obj, device):
    """Move a Rigid / tensor / dataclass of them (FrameTokens, ProteinConditioning, Window)."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Rigid):
        return obj.to(device)
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(
            obj,
            **{f.name: to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj)},
        )
    return obj


def max_diff(a, b) -> float:
    return float(
        max(
            (a.frames.trans - b.frames.trans.to(a.frames.trans.device)).abs().max(),
            (a.frames.rots - b.frames.rots.to(a.frames.rots.device)).abs().max(),
            (a.torsions - b.torsions.to(a.torsions.device)).abs().max(),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="cuda_check.json")
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(args.device)
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "none"
    report: dict = {"device": str(dev), "gpu": gpu, "torch": torch.__version__}
    checks: dict = {}

    model = make_model(torch.float32)
    window = make_window(dtype=torch.float32, frames=5, num_padding=2)
    with torch.no_grad():
        cpu_out = model(window.cond, window.clean, window.noisy)
        model_cuda = model.to(dev)
        w = to_device(window, dev)
        cuda_out = model_cuda(w.cond, w.clean, w.noisy)
    d = max(max_diff(cuda_out.noisy, cpu_out.noisy), max_diff(cuda_out.clean, cpu_out.clean))
    checks["cpu_vs_cuda_forward"] = {"max_abs_diff": d, "tol": 1e-3, "ok": d < 1e-3}

    cache = KVCache(window=2, sink=True)
    with torch.no_grad():
        full = model_cuda(w.cond, w.clean, w.noisy, window=2, sink=True)
        worst = 0.0
        for t in range(5):
            worst = max(
                worst, max_diff(model_cuda.denoise(cache, w.cond, w.noisy[t]), full.noisy[t])
            )
            model_cuda.append_clean(cache, w.cond, w.clean[t])
    checks["kv_cache_vs_full_forward"] = {"max_abs_diff": worst, "tol": 1e-3, "ok": worst < 1e-3}

    motion = random_rigid((), torch.Generator().manual_seed(7), torch.float32, scale=30.0).to(dev)
    moved = w.map_frames(motion.compose)
    with torch.no_grad():
        out_moved = model_cuda(moved.cond, moved.clean, moved.noisy)
    expected = motion.compose(cuda_out.noisy.frames)
    d = float(
        max(
            (out_moved.noisy.frames.trans - expected.trans).abs().max(),
            (out_moved.noisy.frames.rots - expected.rots).abs().max(),
            (out_moved.noisy.torsions - cuda_out.noisy.torsions).abs().max(),
        )
    )
    checks["se3_equivariance"] = {"max_abs_diff": d, "tol": 2e-3, "ok": d < 2e-3}

    k = 3
    clean = dataclasses.replace(
        w.clean,
        torsions=w.clean.torsions.clone().index_add_(
            1, torch.tensor([k], device=dev), torch.ones_like(w.clean.torsions[:, :1])
        ),
    )
    with torch.no_grad():
        perturbed = model_cuda(w.cond, clean, w.noisy)
    before = perturbed.noisy.frames.trans[:, : k + 1] - cuda_out.noisy.frames.trans[:, : k + 1]
    after = perturbed.noisy.frames.trans[:, k + 1 :] - cuda_out.noisy.frames.trans[:, k + 1 :]
    checks["causality"] = {
        "earlier_max_abs_diff": float(before.abs().max()),
        "later_max_abs_diff": float(after.abs().max()),
        "ok": float(before.abs().max()) < 1e-5 and float(after.abs().max()) > 1e-4,
    }

    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
        bf16 = model_cuda(w.cond, w.clean, w.noisy)
    checks["bf16_autocast_vs_fp32"] = {"max_abs_diff": max_diff(bf16.noisy, cuda_out.noisy)}

    separate, merged = KVCache(window=2, sink=True), KVCache(window=2, sink=True)
    with torch.no_grad():
        model_cuda.append_clean(separate, w.cond, w.clean[0])
        model_cuda.append_clean(merged, w.cond, w.clean[0])
        worst = 0.0
        for t in range(1, 5):
            model_cuda.append_clean(separate, w.cond, w.clean[t])
            expected = model_cuda.denoise(separate, w.cond, w.noisy[t])
            got = model_cuda.append_and_denoise(merged, w.cond, w.clean[t], w.noisy[t])
            worst = max(worst, max_diff(got, expected))
    checks["merged_pass_vs_two_passes"] = {"max_abs_diff": worst, "tol": 1e-4, "ok": worst < 1e-4}

    sparse_model = make_model(torch.float32, pair_neighbours=4)
    with torch.no_grad():
        cpu_sparse = sparse_model(window.cond, window.clean, window.noisy)
        cuda_sparse = sparse_model.to(dev)(w.cond, w.clean, w.noisy)
    d = max_diff(cuda_sparse.noisy, cpu_sparse.noisy)
    checks["neighbour_pairs_cpu_vs_cuda"] = {"max_abs_diff": d, "tol": 1e-3, "ok": d < 1e-3}

    from starmd.diffusion import elastic

    ca = w.cond.init_frames.trans.double()
    bonded = elastic.bonded_pairs(w.cond.residue_index, w.cond.chain_index)
    args_prior = (ca, ca + 0.3, w.cond.residue_mask, bonded, 1.5, 100.0, 2.0, 10.0, 0.5)
    dense = elastic.elastic_prior(*args_prior)
    threshold = elastic.SPARSE_ABOVE
    elastic.SPARSE_ABOVE = 1
    try:
        sparse = elastic.elastic_prior(*args_prior)
    finally:
        elastic.SPARSE_ABOVE = threshold
    noisy = ca + 1.0
    alpha = torch.full(ca.shape[:1], 0.7, dtype=ca.dtype, device=dev)
    sigma = torch.full(ca.shape[:1], 2.0, dtype=ca.dtype, device=dev)
    a, b = (
        sparse.posterior_mean(noisy, ca, alpha, sigma),
        dense.posterior_mean(noisy, ca, alpha, sigma),
    )
    d = float((a - b).abs().max())
    checks["sparse_elastic_prior_vs_dense"] = {
        "max_abs_diff": d,
        "device": str(a.device),
        "tol": 1e-8,
        "ok": d < 1e-8 and a.device == dev,
    }

    report["checks"] = checks
    report["all_ok"] = all(c.get("ok", True) for c in checks.values())
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
