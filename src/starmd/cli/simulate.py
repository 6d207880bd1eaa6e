"""Command functions of ``starmd simulate`` and ``starmd corpus``.

Only typer and the standard library are imported here; OpenMM and the engine are imported
inside the commands so that ``starmd --help`` stays fast. :mod:`starmd.cli` registers
``simulate_command`` as ``starmd simulate`` and ``corpus_app`` as ``starmd corpus``;
``python -m starmd.cli.simulate build ...`` runs ``corpus_app`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from starmd.cli.common import log_to_stderr


def simulate_command(
    structure: Annotated[Path, typer.Argument(help="Input structure (PDB or PDBx/mmCIF).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (ATLAS layout).")],
    ns: Annotated[float, typer.Option("--ns", help="Production length per replica, ns.")] = 10.0,
    replicas: Annotated[int, typer.Option("--replicas", "-r", help="Independent replicas.")] = 1,
    protocol: Annotated[
        str, typer.Option("--protocol", help="implicit (CPU), implicit-gbn2, or explicit (GPU).")
    ] = "implicit",
    save_every_ps: Annotated[
        float, typer.Option("--save-every-ps", help="Time between saved frames, ps (ATLAS: 10).")
    ] = 10.0,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="Base random seed, 0 to ~2.1 million (replica i: seed*1000+i)."
        ),
    ] = 0,
    platform: Annotated[
        str,
        typer.Option(
            "--platform", help="auto (CUDA > OpenCL > CPU), CUDA, OpenCL, CPU, Reference."
        ),
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="CPU threads per replica (CPU platform; default: all)."),
    ] = None,
    equilibrate_ps: Annotated[
        float, typer.Option("--equilibrate-ps", help="Equilibration before production, ps.")
    ] = 50.0,
    chunk_frames: Annotated[
        int, typer.Option("--chunk-frames", help="Frames between saved (resumable) states.")
    ] = 10,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Protein name in file names (default: the file stem)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", "-j", help="Replicas run in parallel processes.")
    ] = 1,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", help="Heterogen residue name to keep (repeatable), e.g. --keep CA."),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard", help="With a list: only shard i of n (i from 0), e.g. for a job array."
        ),
    ] = None,
) -> None:
    """Run reference MD with OpenMM and write it in the ATLAS layout.

    Cleans the structure (PDBFixer: missing atoms, hydrogens at pH 7, no water/ligands),
    minimizes, equilibrates and runs the production replicas. Writes NAME.pdb (heavy-atom
    topology), NAME_prod_R{i}_fit.xtc (CA-aligned, time in ps) and NAME.json (settings, seeds,
    ns/day). Rerunning the same command after an interruption continues it; a larger --ns
    extends the replicas.

    Example:

        starmd simulate protein.pdb -o md/ --ns 10 --replicas 3

    STRUCTURE may also be a folder of structures or a CSV (name,structure): each protein goes
    to OUT/NAME/, one after the other; --shard i/n splits the list over job-array tasks.
    """
    from starmd.cli import lists
    from starmd.simulate.engine import simulate
    from starmd.workers import run_jobs

    log_to_stderr("starmd.simulate")
    options = dict(
        ns=ns,
        replicas=replicas,
        protocol=protocol,
        save_every_ps=save_every_ps,
        seed=seed,
        platform=platform,
        threads=threads,
        equilibrate_ps=equilibrate_ps,
        chunk_frames=chunk_frames,
        workers=workers,
        keep=tuple(keep or ()),
    )
    if lists.is_list(structure):
        jobs = lists.shard(lists.read_jobs(structure), *lists.parse_shard(shard))

        def one(job: lists.Job) -> dict:
            return simulate(job.structure, out / job.name, name=job.name, **options)

        failures = run_jobs(one, jobs, on_failure="record")
        typer.echo(f"simulated {len(jobs) - len(failures)} of {len(jobs)} proteins into {out}/")
        lists.check_failures(failures, len(jobs))
        return
    metadata = simulate(structure, out, name=name, **options)
    frames = ", ".join(f"R{r['replica']}: {r['frames']}" for r in metadata["replicas"])
    typer.echo(
        f"{out}: {metadata['name']} {metadata['protocol']} on {metadata['replicas'][0]['platform']}"
        f", frames {frames}, {metadata['ns_per_day']} ns/day"
    )


corpus_app = typer.Typer(
    help="Build the bundled MD training corpus (small real proteins, implicit solvent).",
    no_args_is_help=True,
    add_completion=False,
)


@corpus_app.callback()
def _corpus_group() -> None:
    """Build the bundled MD training corpus (small real proteins, implicit solvent)."""


@corpus_app.command("build")
def corpus_build_command(
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Manifest CSV (default: the bundled corpus manifest)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Corpus root folder.")] = Path(
        "corpus/md"
    ),
    ns: Annotated[
        float, typer.Option("--ns", help="Target production length per replica, ns.")
    ] = 0.5,
    replicas: Annotated[int, typer.Option("--replicas", "-r", help="Replicas per protein.")] = 2,
    step_ns: Annotated[
        float,
        typer.Option(
            "--step-ns", help="ns added per replica per round-robin stage over all proteins."
        ),
    ] = 0.1,
    split_ns: Annotated[
        list[str] | None,
        typer.Option(
            "--split-ns",
            help="SPLIT=NS: own target for one split, e.g. val=1.0 (repeatable; else --ns).",
        ),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Only this protein (repeatable).")
    ] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="MD protocol.")] = "implicit",
    platform: Annotated[str, typer.Option("--platform", help="auto, CUDA, OpenCL, CPU.")] = "auto",
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads per replica.")] = 1,
    workers: Annotated[
        int, typer.Option("--workers", "-j", help="Replicas run in parallel processes.")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Base random seed.")] = 0,
    save_every_ps: Annotated[
        float, typer.Option("--save-every-ps", help="Time between saved frames, ps.")
    ] = 10.0,
    equilibrate_ps: Annotated[
        float, typer.Option("--equilibrate-ps", help="Equilibration per replica, ps.")
    ] = 20.0,
) -> None:
    """Simulate (or continue) every protein of the corpus manifest, round-robin.

    All proteins first reach --step-ns per replica, then 2 x --step-ns, ... up to --ns, so an
    interrupted build leaves every protein with some MD. Rerunning continues from the saved
    portable states; a larger --ns grows the corpus. --split-ns gives a split its own target
    (the held-out proteins longer than the training ones).

    Example:

        starmd corpus build --out corpus/md --ns 0.3 --split-ns val=1.0 --split-ns test=1.0
    """
    from starmd.simulate.corpus import build_corpus, parse_split_ns

    log_to_stderr("starmd.simulate")
    results = build_corpus(
        out,
        manifest=manifest,
        ns=ns,
        replicas=replicas,
        step_ns=step_ns,
        split_ns=parse_split_ns(split_ns),
        only=only or None,
        protocol=protocol,
        platform=platform,
        threads=threads,
        workers=workers,
        seed=seed,
        save_every_ps=save_every_ps,
        equilibrate_ps=equilibrate_ps,
    )
    total = sum(m["total_simulated_ns"] for m in results)
    typer.echo(f"{out}: {len(results)} proteins, {total:.2f} ns in total (see {out}/index.csv)")


if __name__ == "__main__":
    corpus_app()
