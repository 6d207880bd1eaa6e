"""Command functions of ``starmd simulate`` and ``starmd corpus``.

Only typer and the standard library are imported here; OpenMM and the engine are imported
inside the commands so that ``starmd --help`` stays fast. ``starmd.cli`` registers
``simulate_command`` as ``starmd simulate`` and ``corpus_app`` as ``starmd corpus``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer


def _configure_logging() -> None:
    """Log lines (used when stderr is not a terminal) go to stderr with a time stamp."""
    logger = logging.getLogger("starmd.simulate")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def simulate_command(
    structure: Path = typer.Argument(..., help="Input structure (PDB or PDBx/mmCIF).", exists=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (ATLAS layout)."),
    ns: float = typer.Option(10.0, "--ns", help="Production length per replica, ns."),
    replicas: int = typer.Option(1, "--replicas", "-r", help="Independent replicas."),
    protocol: str = typer.Option(
        "implicit", "--protocol", help="implicit (CPU), implicit-gbn2, or explicit (GPU)."
    ),
    save_every_ps: float = typer.Option(
        10.0, "--save-every-ps", help="Time between saved frames, ps (ATLAS: 10)."
    ),
    seed: int = typer.Option(0, "--seed", help="Base random seed (replica i: seed*1000+i)."),
    platform: str = typer.Option(
        "auto", "--platform", help="auto (CUDA > OpenCL > CPU), CUDA, OpenCL, CPU, Reference."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads per replica (CPU platform; default: all)."
    ),
    equilibrate_ps: float = typer.Option(
        50.0, "--equilibrate-ps", help="Equilibration before production, ps."
    ),
    chunk_frames: int = typer.Option(
        10, "--chunk-frames", help="Frames between saved (resumable) states."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Protein name in file names (default: the file stem)."
    ),
    workers: int = typer.Option(1, "--workers", help="Replicas run in parallel processes."),
    keep: list[str] = typer.Option(
        [], "--keep", help="Heterogen residue name to keep (repeatable), e.g. --keep CA."
    ),
) -> None:
    """Run reference MD with OpenMM and write it in the ATLAS layout.

    Cleans the structure (PDBFixer: missing atoms, hydrogens at pH 7, no water/ligands),
    minimizes, equilibrates and runs the production replicas. Writes NAME.pdb (heavy-atom
    topology), NAME_prod_R{i}_fit.xtc (CA-aligned, time in ps) and NAME.json (settings, seeds,
    ns/day). Rerunning the same command after an interruption continues it; a larger --ns
    extends the replicas.

    Example:

        starmd simulate protein.pdb -o md/ --ns 10 --replicas 3
    """
    from starmd.simulate.engine import simulate

    _configure_logging()
    metadata = simulate(
        structure,
        out,
        ns=ns,
        replicas=replicas,
        protocol=protocol,
        save_every_ps=save_every_ps,
        seed=seed,
        platform=platform,
        threads=threads,
        equilibrate_ps=equilibrate_ps,
        chunk_frames=chunk_frames,
        name=name,
        workers=workers,
        keep=tuple(keep),
    )
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
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Manifest CSV (default: the bundled corpus manifest)."
    ),
    out: Path = typer.Option(Path("corpus/md"), "--out", "-o", help="Corpus root folder."),
    ns: float = typer.Option(0.5, "--ns", help="Target production length per replica, ns."),
    replicas: int = typer.Option(2, "--replicas", "-r", help="Replicas per protein."),
    step_ns: float = typer.Option(
        0.1, "--step-ns", help="ns added per replica per round-robin stage over all proteins."
    ),
    only: list[str] = typer.Option([], "--only", help="Only this protein (repeatable)."),
    protocol: str = typer.Option("implicit", "--protocol", help="MD protocol."),
    platform: str = typer.Option("auto", "--platform", help="auto, CUDA, OpenCL, CPU."),
    threads: int | None = typer.Option(1, "--threads", help="CPU threads per replica."),
    workers: int = typer.Option(1, "--workers", help="Replicas run in parallel processes."),
    seed: int = typer.Option(0, "--seed", help="Base random seed."),
) -> None:
    """Simulate (or continue) every protein of the corpus manifest, round-robin.

    All proteins first reach --step-ns per replica, then 2 x --step-ns, ... up to --ns, so an
    interrupted build leaves every protein with some MD. Rerunning continues from the saved
    portable states; a larger --ns grows the corpus.

    Example:

        starmd corpus build --out corpus/md --ns 0.5 --replicas 2
    """
    from starmd.simulate.corpus import build_corpus

    _configure_logging()
    results = build_corpus(
        out,
        manifest=manifest,
        ns=ns,
        replicas=replicas,
        step_ns=step_ns,
        only=only or None,
        protocol=protocol,
        platform=platform,
        threads=threads,
        workers=workers,
        seed=seed,
    )
    total = sum(m["total_simulated_ns"] for m in results)
    typer.echo(f"{out}: {len(results)} proteins, {total:.2f} ns in total (see {out}/index.csv)")


if __name__ == "__main__":
    corpus_app()
