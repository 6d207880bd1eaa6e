"""``starmd bench``: the command-line wrapper of :func:`starmd.bench.run_bench`."""

from __future__ import annotations

from pathlib import Path

import typer


def bench(
    out: Path = typer.Option(Path("bench_out"), "-o", "--out", help="Folder for bench.md/json."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes: a smoke run in ~1 minute."),
    sections: str = typer.Option(
        "speed,memory,scaling,quality,train",
        help="Comma-separated: speed, memory, scaling, quality, train.",
    ),
    model: Path = typer.Option(
        None,
        help="Model file or bundled name (default: the bundled model; else an untrained one, "
        "timing only).",
    ),
    structure: Path = typer.Option(
        None, help="Protein for speed/memory/quality (default: a ~50-residue corpus test protein)."
    ),
    reference: Path = typer.Option(
        None, help="Reference MD folder (ATLAS layout) for the quality section."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    threads: int = typer.Option(1, help="CPU threads for both starmd and OpenMM."),
    dt: str = typer.Option(None, help="Time step (default: the model's recommended one)."),
    steps: int = typer.Option(None, help="Denoising steps (default: the model's)."),
    steps_list: str = typer.Option(
        None, "--quality-steps", help="Steps compared in the quality section, e.g. 2,5,10,20."
    ),
    sizes: str = typer.Option(
        None, help="Residue counts for the scaling section, e.g. 50,100,200,500,1000."
    ),
    memory_frames: str = typer.Option(
        None, "--memory-frames", help="Trajectory lengths for the memory section."
    ),
    speed_replicas: str = typer.Option(
        None,
        "--speed-replicas",
        help="Replica batch sizes for the speed section (default 1,8; quick 1,2); ns/s counts all.",
    ),
    speed_repeats: int = typer.Option(
        None,
        "--speed-repeats",
        help="Runs of each speed configuration, interleaved, each in a fresh process; a row is "
        "the median run, ratio_min/ratio_max the spread (default 3; quick 1).",
    ),
    speed_models: str = typer.Option(
        None,
        "--speed-models",
        help="More models (files or bundled names) timed in the speed section against the same "
        "OpenMM run, each at its own defaults, e.g. starmd-small-fast.",
    ),
    compile_network: bool = typer.Option(
        False,
        "--compile",
        help="Speed section: one more run per model with the network compiled "
        "(`generate --compile`); its compile time counts in ratio, not in steady_ratio.",
    ),
    attention_neighbours: int = typer.Option(
        None,
        "--attention-neighbours",
        help="Memory and scaling sections: also time the model with its joint attention across "
        "frames restricted to this many spatial neighbours (same weights), side by side.",
    ),
) -> None:
    """Measure speed vs OpenMM, memory vs trajectory length, cost vs size, quality vs steps
    and training throughput, side by side on this machine; writes OUT/bench.md + bench.json.

    Example: starmd bench -o bench_out --threads 1
    Two models side by side: starmd bench --sections speed --speed-models starmd-small-fast
    The same, with and without torch.compile: add --compile
    Quality: starmd bench --sections quality --structure corpus/md/2wqg/2wqg.pdb
    --reference corpus/md
    Neighbour attention: starmd bench --sections scaling --model starmd-small-fast
    --attention-neighbours 16
    """
    from starmd.bench import BenchSettings, run_bench
    from starmd.cli.common import log_to_stderr
    from starmd.errors import StarmdInputError
    from starmd.units import parse_duration_ps

    def ints(option: str, text: str | None, minimum: int = 1) -> tuple[int, ...] | None:
        if text is None:
            return None
        try:
            values = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise StarmdInputError(f"{option} {text!r}: expected integers, e.g. 50,100") from None
        if not values or any(v < minimum for v in values):
            raise StarmdInputError(f"{option} {text!r}: every value must be at least {minimum}")
        return values

    settings = BenchSettings(
        out_dir=out,
        quick=quick,
        device=device,
        model=model,
        structure=structure,
        reference=reference,
        threads=threads,
        sections=tuple(s.strip() for s in sections.split(",") if s.strip()),
        dt_ps=parse_duration_ps(dt) if dt else None,
        steps=steps,
        speed_models=tuple(m.strip() for m in (speed_models or "").split(",") if m.strip()),
        speed_repeats=speed_repeats,
        attention_neighbours=attention_neighbours,
        compile=compile_network,
    )
    for name, value in (
        ("quality_steps", ints("--quality-steps", steps_list, minimum=1)),
        ("sizes", ints("--sizes", sizes)),
        ("memory_frames", ints("--memory-frames", memory_frames, minimum=2)),
        ("speed_replicas", ints("--speed-replicas", speed_replicas)),
    ):
        if value:
            setattr(settings, name, value)
    log_to_stderr("starmd.bench")
    run_bench(settings, log=typer.echo)
    typer.echo((out / "bench.md").read_text())
    typer.echo(f"wrote {out}/bench.md and {out}/bench.json")
