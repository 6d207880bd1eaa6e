"""``starmd inspect``, ``starmd prepare`` and ``starmd data atlas-download``: structures and MD
data in."""

from __future__ import annotations

from pathlib import Path

import typer

from starmd.cli.common import progress_bar


def inspect(
    structure: Path = typer.Argument(..., help="PDB or mmCIF file (first model is used)."),
    chain: list[str] = typer.Option(None, "--chain", help="Keep only this chain (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check whether a structure works with starmd before running anything.

    Reports chains, residues, sequence, chain breaks, what is stripped (water, ions, ligands,
    hydrogens), residue-name variants mapped (HIE->HIS, MSE->MET), missing side-chain atoms,
    and the RMSD of the frames + torsions round trip (idealized geometry is the only loss).

    Example: starmd inspect protein.pdb --chain A
    """
    import json

    from starmd.structure.inspect import inspect_structure

    report = inspect_structure(structure, chain or None)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{structure}", show_header=False)
    table.add_row("residues", str(report["n_residues"]))
    table.add_row("chains", ", ".join(f"{c['id']} ({c['residues']})" for c in report["chains"]))
    table.add_row("sequence", report["sequence"])
    table.add_row("heavy atoms", str(report["heavy_atoms"]))
    table.add_row("chain breaks", ", ".join(report["chain_breaks"]) or "none")
    stripped = ", ".join(f"{k} x{v}" for k, v in report["stripped_residues"].items())
    table.add_row("stripped", (stripped or "nothing") + f"; {report['hydrogens_stripped']} H")
    table.add_row("other chains left out", ", ".join(report["other_chains"]) or "none")
    altlocs = ", ".join(
        f"{a['residue']} {'/'.join(a['locations'])} (kept {a['kept']})"
        for a in report["alternate_locations"]
    )
    table.add_row("alternate locations", altlocs or "none")
    mapped = ", ".join(f"{k} x{v}" for k, v in report["mapped_residue_names"].items())
    table.add_row("renamed", mapped or "none")
    missing = "; ".join(
        f"{m['residue']}: {' '.join(m['atoms'])}" for m in report["missing_side_chain_atoms"]
    )
    table.add_row("missing side-chain atoms", missing or "none")
    table.add_row(
        "round trip RMSD",
        f"backbone {report['round_trip_backbone_rmsd_A']:.3f} A, "
        f"all heavy atoms {report['round_trip_heavy_atom_rmsd_A']:.3f} A",
    )
    Console().print(table)
    if report["chain_breaks"]:
        typer.secho("note: chain breaks are kept as breaks, never bridged", fg=typer.colors.YELLOW)


def prepare(
    input_dir: Path = typer.Argument(
        ...,
        help="MD folder: ATLAS layout (NAME.pdb + NAME_prod_R<i>_fit.xtc), or one folder per "
        "protein, or NAME.pdb with NAME*.xtc/.dcd.",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Output dataset folder."),
    split_file: list[Path] = typer.Option(
        None,
        "--split-file",
        help="CSV with name,split columns, or MDGen-style NAME_train.csv/_val.csv/_test.csv "
        "(repeatable). Default: a deterministic hash split by protein name.",
    ),
    fractions: str = typer.Option(
        "0.8,0.1,0.1", help="train,val,test fractions of the hash split."
    ),
    dt_ps: float = typer.Option(
        None, "--dt-ps", help="Saved interval in ps (default: from time stamps or metadata)."
    ),
    stride: int = typer.Option(1, help="Keep every n-th frame."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset in OUT."),
) -> None:
    """Convert MD trajectories into a training dataset of frames + torsions.

    Solvent, ions, ligands and hydrogens are stripped; every frame becomes residue frames
    (quaternion + CA position, Angstrom) and 7 torsions, written to chunked zarr arrays with an
    index.csv (name, replica, frames, residues, dt_ps, split). Splits are by protein.

    Example: starmd prepare corpus/md -o data/corpus
    """
    from starmd.data.prepare import prepare as run_prepare
    from starmd.errors import StarmdInputError

    try:
        parts = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise StarmdInputError(f"--fractions must be three non-negative numbers, got {fractions!r}")
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def report(description: str, done: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=None, info="frames")
            bar.update(tasks[description], completed=done)

        rows = run_prepare(
            input_dir,
            out,
            split_files=split_file or (),
            fractions=parts,
            dt_ps=dt_ps,
            stride=stride,
            overwrite=overwrite,
            progress=report,
        )
    by_split: dict[str, int] = {}
    for r in rows:
        by_split[r.split] = by_split.get(r.split, 0) + r.frames
    proteins = len({r.name for r in rows})
    typer.echo(
        f"wrote {out}: {proteins} proteins, {len(rows)} replicas, "
        + ", ".join(f"{k} {v} frames" for k, v in sorted(by_split.items()))
    )


def atlas_download(
    names: list[str] = typer.Argument(..., help="ATLAS entries, PDB id + chain (e.g. 16pk_A)."),
    dest: Path = typer.Option(..., "--dest", help="Folder receiving one sub-folder per entry."),
    base_url: str = typer.Option(
        None, "--base-url", help="Server root (default: the ATLAS site, or $STARMD_ATLAS_URL)."
    ),
) -> None:
    """Download ATLAS MD entries (PDB + 3 x 100 ns protein-only XTC) in the layout prepare reads.

    Entries already present are skipped; an interrupted download leaves nothing half-written.

    Example: starmd data atlas-download 16pk_A 1k5n_A --dest atlas/ ; starmd prepare atlas/ -o data/
    """
    from starmd.data.atlas import download_entry

    with progress_bar() as bar:
        for name in names:
            task = bar.add_task(name, total=None, info="bytes")

            def report(done: int, total: int | None, task: int = task) -> None:
                bar.update(task, completed=done, total=total)

            folder = download_entry(name, dest, base_url=base_url, progress=report)
            bar.update(task, info=f"-> {folder}")
