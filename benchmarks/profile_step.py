"""Profile of one rollout step: tensor operations and where the time goes.

For each model (at its own recommended sampler, steps and dt, as ``starmd generate`` uses it)
the rollout runs ``--warmup`` frames (so the KV cache holds its full context: 7 frames + sink),
then ``--frames`` more under ``torch.profiler``. A *step* is one generated frame: its denoising
passes (the first also encodes the previous frame into the cache), the reverse-diffusion
steps, the contextual noise and the elastic prior of the next frame; the heavy-atom rebuild is
timed apart, per frame, as ``generate`` runs it (16 frames at once).

Reported per frame:

* operations: the aten operators Python dispatches (top level: an operator called by another
  operator, e.g. ``addmm`` inside ``linear``, is not counted again). Exact and machine
  independent for a given torch version;
* self CPU time per operation class (matmul, attention, elementwise, ...) from the profiler,
  which adds its own overhead per operation: use it for shares, not absolute times;
* wall time per frame without the profiler (median of ``--repeats`` runs of ``--frames``);
  ``--wall-only`` prints it with the process CPU time per frame, for interleaved A/B runs.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py [--structure 1enh.pdb] \\
        [--models starmd-small,starmd-small-fast] [--output docs/profile_step.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from starmd.modelfile import load_model, resolve_model
from starmd.sample.generate import (
    ATOM_BATCH,
    GenerationSettings,
    _rollout_settings,
    with_model_defaults,
)
from starmd.sample.rollout import Rollout, protein_input
from starmd.structure.io import load_structure

DEFAULT_STRUCTURE = Path(__file__).parents[1] / "src/starmd/assets/corpus/structures/1enh.pdb"
FRAME_LABEL = "rollout_frame"

# Operator name (without "aten::") -> class. Views and metadata operations allocate nothing
# but still cost a dispatch each, which is what dominates a small protein's frame.
OPERATION_CLASSES = {
    "matmul": {"linear", "addmm", "mm", "bmm", "matmul", "einsum", "baddbmm", "addbmm"},
    "attention": {
        "scaled_dot_product_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_attention_math",
    },
    "normalization": {"layer_norm", "native_layer_norm", "softmax", "_softmax"},
    "elementwise": {
        "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "exp", "sin", "cos",
        "sqrt", "rsqrt", "pow", "silu", "relu", "sigmoid", "softplus", "atan2", "clamp",
        "clamp_min", "clamp_max", "remainder", "where", "masked_fill", "masked_fill_", "log10",
        "log", "abs", "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or",
        "logical_not", "bitwise_and", "bitwise_or", "bitwise_not", "rsub", "reciprocal", "sign",
        "minimum", "maximum", "tanh", "acos", "arccos", "asin", "floor", "round", "square",
        "__and__", "__or__", "__invert__", "lerp", "addcmul", "addcdiv", "fmod", "sinc",
    },
    "reduction": {"sum", "mean", "norm", "linalg_vector_norm", "amax", "max", "min", "all",
                  "any", "prod", "cumsum", "topk", "sort", "argmax", "std", "var"},
    "linear algebra": {"linalg_cholesky", "linalg_cholesky_ex", "cholesky_solve",
                       "linalg_solve", "linalg_solve_ex", "linalg_eigh", "triangular_solve",
                       "linalg_solve_triangular", "cdist", "_cdist_forward"},
    "copy and indexing": {"cat", "stack", "copy_", "clone", "contiguous", "to", "_to_copy",
                          "index", "index_put_", "gather", "scatter", "pad", "constant_pad_nd",
                          "repeat", "repeat_interleave", "index_select", "masked_select",
                          "fill_", "zero_", "flip", "roll", "tril", "triu", "embedding",
                          "nonzero", "item", "_local_scalar_dense", "resolve_conj",
                          "resolve_neg"},
    "view": {"view", "reshape", "permute", "transpose", "t", "select", "slice", "unsqueeze",
             "squeeze", "expand", "expand_as", "as_strided", "split", "split_with_sizes",
             "chunk", "unbind", "flatten", "unflatten", "narrow", "movedim", "alias",
             "view_as", "detach", "lift_fresh", "diagonal", "_unsafe_view", "unfold"},
    "allocation": {"empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full",
                   "full_like", "arange", "linspace", "logspace", "eye", "empty_strided",
                   "scalar_tensor", "tensor", "new_zeros", "new_empty", "new_full", "new_ones"},
    "random": {"normal", "normal_", "randn", "rand", "uniform_", "randn_like", "randint",
               "random_", "multinomial"},
}  # fmt: skip
CLASS_OF = {name: cls for cls, names in OPERATION_CLASSES.items() for name in names}


def operation_class(name: str) -> str:
    """Class of an operator name such as ``aten::addmm`` ("other" when unlisted)."""
    return CLASS_OF.get(name.removeprefix("aten::"), "other")


def rollout_parts(model: str, structure: Path, replicas: int, dt_ps: float | None = None):
    """What a :class:`Rollout` of ``model`` at its own defaults (``dt_ps`` overrides its time
    step) is built from, as ``generate --no-refine`` builds it: ``(loaded model, inputs, rollout
    settings, generation settings, residues)``."""
    path = resolve_model(model)
    loaded = load_model(path, torch.device("cpu"))
    # the network's own steps: no refinement, so no step scale (generate --no-refine)
    settings = with_model_defaults(
        GenerationSettings(frames=2, replicas=replicas, dt_ps=dt_ps, refine=False), loaded.config
    )
    protein, positions = load_structure(structure)
    inputs = protein_input(protein, positions, settings.dt_ps, replicas)
    rollout_settings = _rollout_settings(settings, loaded.config, path)
    return loaded, inputs, rollout_settings, settings, protein.n_residues


def make_rollout(model: str, structure: Path, replicas: int, seed: int):
    """A :class:`Rollout` of ``model`` at its own defaults, and its settings."""
    loaded, inputs, rollout_settings, settings, residues = rollout_parts(model, structure, replicas)
    return Rollout(loaded, inputs, rollout_settings, seed=seed), settings, residues


def run_frames(rollout: Rollout, states, count: int, label: bool = False) -> list:
    """Advance ``count`` frames; returns their (frames, torsions)."""
    out = []
    for _ in range(count):
        if label:
            with record_function(FRAME_LABEL):
                _, frames, torsions = next(states)
        else:
            _, frames, torsions = next(states)
        out.append((frames, torsions))
    return out


def rebuild_atoms(rollout: Rollout, states: list) -> None:
    """Heavy atoms of a batch of frames, as ``generate`` rebuilds them."""
    frames = type(states[0][0]).stack([f for f, _ in states], dim=0)
    torsions = torch.stack([x for _, x in states], dim=0)
    rollout.atoms(frames, torsions)


def top_level_operations(prof) -> list:
    """aten operators called directly inside a labelled frame (not by another operator)."""
    ops = []
    for event in prof.events():
        parent = event.cpu_parent
        if event.name.startswith("aten::") and parent is not None and parent.name == FRAME_LABEL:
            ops.append(event)
    return ops


def wall_ms_per_frame(model: str, structure: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Median wall and process CPU time per frame (ms) of ``--repeats`` runs of ``--frames``,
    no profiler. On a loaded machine the CPU time is the steadier figure (it leaves out the
    time the process waits for a core)."""
    rollout, _, _ = make_rollout(model, structure, args.replicas, args.seed)
    states = rollout.states(args.warmup + args.frames * args.repeats + 1)
    run_frames(rollout, states, args.warmup)
    walls, cpus = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run_frames(rollout, states, args.frames)
        walls.append((time.perf_counter() - start) / args.frames)
        cpus.append((time.process_time() - start_cpu) / args.frames)
    return 1000 * statistics.median(walls), 1000 * statistics.median(cpus)


def profile_model(model: str, structure: Path, args: argparse.Namespace) -> dict:
    rollout, settings, residues = make_rollout(model, structure, args.replicas, args.seed)
    states = rollout.states(args.warmup + args.frames * (args.repeats + 1) + 1)
    run_frames(rollout, states, args.warmup)

    walls, atom_walls = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        produced = run_frames(rollout, states, args.frames)
        walls.append((time.perf_counter() - start) / args.frames)
        start = time.perf_counter()
        for i in range(0, len(produced), ATOM_BATCH):
            rebuild_atoms(rollout, produced[i : i + ATOM_BATCH])
        atom_walls.append((time.perf_counter() - start) / args.frames)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_frames(rollout, states, args.frames, label=True)
    ops = top_level_operations(prof)
    count_per_class: Counter = Counter(operation_class(e.name) for e in ops)
    count_per_op: Counter = Counter(e.name for e in ops)
    self_us_per_class: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            self_us_per_class[operation_class(event.key)] += event.self_cpu_time_total
    frame_us = sum(
        e.cpu_time_total for e in prof.key_averages() if e.key == FRAME_LABEL
    )  # labelled frames' inclusive time under the profiler
    return {
        "model": model,
        "residues": residues,
        "sampler": settings.sampler,
        "steps": settings.steps,
        "dt_ps": settings.dt_ps,
        "ms_per_frame": 1000 * statistics.median(walls),
        "atoms_ms_per_frame": 1000 * statistics.median(atom_walls),
        "ops_per_frame": len(ops) / args.frames,
        "count_per_class": {k: v / args.frames for k, v in count_per_class.items()},
        "self_ms_per_class": {k: v / 1000 / args.frames for k, v in self_us_per_class.items()},
        "profiled_ms_per_frame": frame_us / 1000 / args.frames,
        "top_ops": [(name, n / args.frames) for name, n in count_per_op.most_common(args.top)],
    }


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"threads {torch.get_num_threads()}, torch {torch.__version__}, replicas {args.replicas}, "
        f"{args.frames} frames after {args.warmup} warm-up frames, wall median of {args.repeats}",
        "",
        "| model | residues | sampler x steps | ms/frame (wall) | atoms ms/frame | "
        "ops/frame | ms/frame under profiler |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['residues']} | {r['sampler']} x {r['steps']} | "
            f"{r['ms_per_frame']:.1f} | {r['atoms_ms_per_frame']:.2f} | "
            f"{r['ops_per_frame']:.0f} | {r['profiled_ms_per_frame']:.1f} |"
        )
    classes = sorted(
        {c for r in results for c in r["count_per_class"]},
        key=lambda c: -max(r["count_per_class"].get(c, 0) for r in results),
    )
    lines += ["", "Per frame, by operation class (count / self ms under the profiler):", ""]
    lines.append("| class | " + " | ".join(r["model"] for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for c in classes:
        cells = [
            f"{r['count_per_class'].get(c, 0):.0f} / {r['self_ms_per_class'].get(c, 0):.2f}"
            for r in results
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    for r in results:
        lines += ["", f"Most frequent operators per frame, {r['model']}:", ""]
        lines.append(
            ", ".join(f"{name.removeprefix('aten::')} {n:.0f}" for name, n in r["top_ops"])
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--structure", type=Path, default=DEFAULT_STRUCTURE)
    parser.add_argument("--models", default="starmd-small,starmd-small-fast")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=9)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--wall-only", action="store_true", help="print ms per frame only (no profiler pass)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.wall_only:
        for model in args.models.split(","):
            wall, cpu = wall_ms_per_frame(model, args.structure, args)
            print(f"{model} {wall:.2f} ms/frame wall, {cpu:.2f} ms/frame CPU")
        return
    results = [profile_model(m, args.structure, args) for m in args.models.split(",")]
    table = markdown(results, args)
    print(table)
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
