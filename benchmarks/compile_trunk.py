"""What ``torch.compile`` of the denoiser's trunk buys in a CPU rollout, and what it costs.

One process per mode (run the two modes in turn, several rounds, for an A/B on a loaded
machine). The rollout of ``--model`` (its own sampler, steps and dt; refinement off, so only
the network and the diffusion steps are timed) runs ``--warmup`` frames eagerly (the KV cache
full), then, with ``--mode compiled``, ``StarDenoiser._trunk`` is replaced by
``torch.compile(_trunk, dynamic=False)`` (Inductor, C++ kernels) and the first frames after
that are timed as the compile cost; then ``--repeats`` blocks of ``--frames`` frames.

Printed: the compile cost (seconds until the compiled frames run at their steady speed: with
the default cache Dynamo re-traces the trunk once for each slot of the KV cache's ring buffer;
with ``--static``, the cache ``generate --compile`` uses, once per pass layout) and the steady
ms per frame of each block. Inductor keeps its kernels
in an on-disk cache, so a second process pays less than the first: report both.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/compile_trunk.py --mode eager
    OMP_NUM_THREADS=1 python benchmarks/compile_trunk.py --mode compiled
    OMP_NUM_THREADS=1 python benchmarks/compile_trunk.py --mode compiled --static
    OMP_NUM_THREADS=1 python benchmarks/compile_trunk.py --mode compiled --static --cpp-wrapper
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from profile_step import make_rollout, run_frames

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("eager", "compiled"), required=True)
    parser.add_argument("--model", default="starmd-small-fast")
    parser.add_argument("--structure", type=Path, default=ROOT / "corpus/md/1enh/1enh.pdb")
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--static", action="store_true", help="the KV cache in its static mode (one graph)"
    )
    parser.add_argument(
        "--cpp-wrapper",
        action="store_true",
        help="Inductor's C++ wrapper: the compiled graph's kernels called from C++, not Python",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cpp_wrapper:
        from torch._inductor import config as inductor_config

        inductor_config.cpp_wrapper = True

    rollout, settings, _ = make_rollout(args.model, args.structure, 1, 0)
    rollout.cache.static = args.static
    # the KV cache's ring buffer: the context, the sink and two scratch slots (KVCache)
    window = settings.context + int(settings.sink) + 2
    total = args.warmup + window + args.frames * args.repeats + 1
    states = rollout.states(total)
    run_frames(rollout, states, args.warmup)
    compile_s = 0.0
    if args.mode == "compiled":
        from torch import _dynamo

        _dynamo.config.cache_size_limit = 4 * window
        start = time.perf_counter()
        rollout.model._trunk = torch.compile(rollout.model._trunk, dynamic=False)
        run_frames(rollout, states, window)  # one trace per cache slot
        compile_s = time.perf_counter() - start
    else:
        run_frames(rollout, states, window)
    blocks = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run_frames(rollout, states, args.frames)
        blocks.append(1000 * (time.perf_counter() - start) / args.frames)
    print(
        f"{args.model} {args.mode}: compile {compile_s:.1f} s; steady ms/frame "
        f"{' '.join(f'{b:.2f}' for b in blocks)} (median {statistics.median(blocks):.2f})"
    )


if __name__ == "__main__":
    main()
