"""KV-cache memory of the STAR-MD denoiser: linear in frames x residues, flat with a window.

Measures, on random inputs (memory and time do not depend on the values):

1. cache bytes vs frames held (full history) and vs residues -- linear;
2. one rollout (denoising) step vs trajectory length, with a window (W frames + sink) and with
   the full history: cache bytes, transient peak of the step's own allocations (torch profiler
   memory events, summed in time order) and wall time -- flat with the window;
3. bytes per attention layer at 200 residues x 32 frames next to the analytic single-feature and
   pair-feature caches of the STAR-MD paper (about 6.6 MB vs 1.3 GB per layer);
4. the time of one denoising step (L = 50, cache of 8 frames) on this CPU.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/kv_cache_memory.py [--config small] [--output table.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from starmd.model import (
    DenoiserConfig,
    FrameTokens,
    KVCache,
    ProteinConditioning,
    StarDenoiser,
    count_parameters,
)
from starmd.structure.rigid import Rigid, quat_to_rotmat

MB = 1e6  # decimal, as the paper's 6.6 MB / 1.3 GB


def random_protein(length: int, seed: int = 0) -> ProteinConditioning:
    """One random protein of ``length`` residues (batch 1)."""
    g = torch.Generator().manual_seed(seed)
    return ProteinConditioning(
        aatype=torch.randint(0, 20, (1, length), generator=g),
        residue_index=torch.arange(length)[None],
        chain_index=torch.zeros(1, length, dtype=torch.long),
        residue_mask=torch.ones(1, length, dtype=torch.bool),
        init_frames=random_frames((1,), length, g),
        dt_ps=torch.tensor([1000.0]),
        torsion_mask=torch.ones(1, length, 7, dtype=torch.bool),
    )


def random_frames(batch_shape: tuple[int, ...], length: int, g: torch.Generator) -> Rigid:
    steps = torch.randn(*batch_shape, length, 3, generator=g)
    trans = (3.8 * steps / steps.norm(dim=-1, keepdim=True)).cumsum(-2)
    rots = quat_to_rotmat(torch.randn(*batch_shape, length, 4, generator=g))
    return Rigid(rots, trans - trans.mean(-2, keepdim=True))


def random_group(length: int, frame: int, tau: float, seed: int) -> FrameTokens:
    """One frame group (``G = 1``) at physical time ``frame`` ns."""
    g = torch.Generator().manual_seed(seed)
    return FrameTokens(
        frames=random_frames((1, 1), length, g),
        torsions=torch.rand(1, 1, length, 7, generator=g) * 6.28 - 3.14,
        tau=torch.tensor([[tau]]),
        time_ps=torch.tensor([[1000.0 * frame]]),
    )


def step_peak_bytes(fn) -> tuple[int, float]:
    """Peak of the bytes allocated (and not yet freed) while ``fn`` runs, and its wall time."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live, peak = 0, 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak, seconds


def fill_cache(model, cache, cond, frames: int, start: int = 0) -> None:
    for t in range(start, frames):
        model.append_clean(cache, cond, random_group(cond.num_residues, t, 0.05, seed=t))


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def bytes_vs_frames(model, length: int, frames: list[int]) -> str:
    cond, cache = random_protein(length), KVCache()
    rows, done = [], 0
    for n in frames:
        fill_cache(model, cache, cond, n, start=done)
        done = n
        used = cache.nbytes_used()
        rows.append(
            [n, length, f"{used / MB:.3f}", f"{used / n / 1e3:.1f}", f"{cache.nbytes() / MB:.3f}"]
        )
    return table(
        ["frames held", "residues", "cache MB (held)", "KB per frame", "MB allocated"], rows
    )


def bytes_vs_residues(model, lengths: list[int], frames: int) -> str:
    rows = []
    for length in lengths:
        cond, cache = random_protein(length), KVCache(window=frames)
        fill_cache(model, cache, cond, frames)
        used = cache.nbytes_used()
        rows.append([frames, length, f"{used / MB:.3f}", f"{used / length / 1e3:.1f}"])
    return table(["frames held", "residues", "cache MB (held)", "KB per residue"], rows)


def step_vs_trajectory(model, length: int, lengths: list[int], window: int) -> str:
    rows = []
    for label, cache in (
        (f"window {window} + sink", KVCache(window=window, sink=True)),
        ("full history", KVCache()),
    ):
        cond, done = random_protein(length), 0
        for n in lengths:
            fill_cache(model, cache, cond, n, start=done)
            done = n
            noisy = random_group(length, n, 0.7, seed=10_000 + n)
            model.denoise(cache, cond, noisy)  # warm-up
            peak, seconds = step_peak_bytes(lambda: model.denoise(cache, cond, noisy))  # noqa: B023
            rows.append(
                [
                    label,
                    n,
                    len(cache.groups),
                    f"{cache.nbytes_used() / MB:.2f}",
                    f"{cache.nbytes() / MB:.2f}",
                    f"{peak / MB:.2f}",
                    f"{(cache.nbytes() + peak) / MB:.2f}",
                    f"{1000 * seconds:.0f}",
                ]
            )
    return table(
        [
            "cache",
            "trajectory frames",
            "groups held",
            "cache MB held",
            "cache MB allocated",
            "step transient peak MB",
            "allocated + step MB",
            "step ms (profiled)",
        ],
        rows,
    )


def paper_comparison(length: int = 200, frames: int = 32) -> str:
    """Per-layer bytes at the paper's example size, base config measured, paper analytic."""
    model = StarDenoiser(DenoiserConfig.base()).eval()
    cond, cache = random_protein(length), KVCache()
    fill_cache(model, cache, cond, frames)
    per_layer = cache.nbytes_used() / model.num_attention_layers
    attention = model.blocks[0].attention[0]
    d_paper, fp32 = 256, 4
    rows = [
        [
            "starmd base: keys + values incl. global points (measured)",
            f"{model.config.n_heads} x ({attention.key_dim} + {attention.value_dim})",
            f"{per_layer / MB:.1f}",
        ],
        [
            "paper: single-feature cache, L T d (analytic)",
            d_paper,
            f"{length * frames * d_paper * fp32 / MB:.1f}",
        ],
        [
            "paper: pair-feature cache, L^2 T d (analytic)",
            d_paper,
            f"{length**2 * frames * d_paper * fp32 / MB:.0f}",
        ],
    ]
    return table([f"per layer, L={length}, T={frames}, float32", "width per token", "MB"], rows)


def denoise_step_time(model, length: int = 50, frames: int = 8, repeats: int = 20) -> str:
    cond, cache = random_protein(length), KVCache(window=frames)
    fill_cache(model, cache, cond, frames)
    noisy = random_group(length, frames, 0.7, seed=1)
    model.denoise(cache, cond, noisy)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.denoise(cache, cond, noisy)
        times.append(time.perf_counter() - start)
    return (
        f"One denoising step, L={length}, cache of {frames} frames, "
        f"{torch.get_num_threads()} thread(s): median {1000 * statistics.median(times):.1f} ms "
        f"(min {1000 * min(times):.1f} ms over {repeats})."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--residues", type=int, default=100, help="residues for sections 1 and 2")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--output", type=Path, help="also write the Markdown here")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = StarDenoiser(DenoiserConfig.preset(args.config)).eval()
    sections = [
        f"# KV-cache memory ({args.config} config, {count_parameters(model) / 1e6:.2f} M "
        f"parameters, {model.num_attention_layers} attention layers, float32, "
        f"{torch.get_num_threads()} thread(s))",
        "## Cache bytes vs frames (full history)",
        bytes_vs_frames(model, args.residues, [1, 2, 4, 8, 16, 32]),
        "## Cache bytes vs residues",
        bytes_vs_residues(model, [25, 50, 100, 200], frames=8),
        f"## One rollout step vs trajectory length ({args.residues} residues)",
        step_vs_trajectory(model, args.residues, [8, 16, 32, 64, 128], args.window),
        "## Per attention layer vs the paper's analytic figures (base config)",
        paper_comparison(),
        "## Speed",
        denoise_step_time(model),
    ]
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
