"""``starmd relax``: the command-line wrapper of :func:`starmd.simulate.relax.relax_trajectory`,
and the ``--relax`` step of ``starmd generate`` (:func:`relax_generated`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from starmd.cli.common import progress_bar


def relax_command(
    trajectory: Path = typer.Argument(..., help="Trajectory to relax (XTC, DCD, ...)."),
    top: Path = typer.Option(..., "--top", "-t", help="Its topology (PDB or PDBx/mmCIF)."),
    out: Path = typer.Option(
        None, "-o", "--out", help="Relaxed trajectory, .xtc (default: TRAJECTORY.relaxed.xtc)."
    ),
    hydrogens: bool = typer.Option(
        False,
        "--hydrogens",
        help="Keep the added hydrogens (writes OUT.pdb as their topology); default: the input's "
        "atoms, so the relaxed file lines up with the input frame by frame.",
    ),
    stiffness: float = typer.Option(
        10.0, help="Restraint on heavy atoms to the input frame, kcal/mol/A^2 (AlphaFold: 10)."
    ),
    tolerance: float = typer.Option(
        10.0, help="Minimizer convergence: root-mean-square force, kJ/mol/nm."
    ),
    max_iterations: int = typer.Option(
        500, help="Minimizer iterations per round (0 = until converged)."
    ),
    rounds: int = typer.Option(
        3, min=1, help="Rounds; after each, residues still in violation lose their restraints."
    ),
    protocol: str = typer.Option("implicit", help="implicit (OBC2) or implicit-gbn2."),
    platform: str = typer.Option("CPU", help="OpenMM platform: CPU, CUDA, OpenCL, auto."),
    threads: int = typer.Option(1, min=1, help="CPU threads per worker process."),
    workers: int = typer.Option(1, min=1, help="Worker processes (frames split among them)."),
    overwrite: bool = typer.Option(False, help="Replace an existing OUT."),
) -> None:
    """Relax every frame by a restrained energy minimization (OpenMM, implicit solvent).

    Hydrogens are added with PDBFixer; heavy atoms are held to the input frame by harmonic
    restraints while the force field removes stretched bonds and clashes (AlphaFold's Amber
    relax). Writes OUT (same atoms and frames as the input unless --hydrogens) and OUT.json
    (settings, cost per frame, per-frame energy, RMSD moved and violations before/after).
    Nothing is written unless every frame relaxed.

    Example: starmd relax out/prot_R1.xtc --top out/prot.pdb -o out/prot_R1.relaxed.xtc --workers 2
    """
    from starmd.simulate.relax import RelaxSettings

    out = out or trajectory.with_name(f"{trajectory.stem}.relaxed.xtc")
    settings = RelaxSettings(
        protocol=protocol,
        stiffness_kcal_mol_a2=stiffness,
        tolerance_kj_mol_nm=tolerance,
        max_iterations=max_iterations,
        max_rounds=rounds,
        hydrogens=hydrogens,
        platform=platform,
        threads=threads,
        workers=workers,
    )
    sidecar = _run(trajectory, top, out, settings, overwrite)
    _report(out, sidecar)


def _run(trajectory: Path, top: Path, out: Path, settings, overwrite: bool) -> dict:
    """Relax one trajectory with a progress bar (started with the first chunk, so that an
    input error stands on its own line)."""
    import contextlib

    from starmd.simulate.relax import relax_trajectory

    with contextlib.ExitStack() as stack:
        bars: list = []

        def progress(done: int, total: int) -> None:
            if not bars:
                bar = stack.enter_context(progress_bar())
                bars.append(
                    (bar, bar.add_task(f"relaxing {trajectory.name}", total=total, info=""))
                )
            bar, task = bars[0]
            bar.update(task, completed=done)

        return relax_trajectory(
            trajectory, top, out, settings, overwrite=overwrite, progress=progress
        )


def _report(out: Path, sidecar: dict) -> None:
    summary = sidecar["summary"]
    typer.echo(
        f"wrote {out}: {sidecar['frames']} frames, {sidecar['seconds_per_frame']:.2f} s per "
        f"frame per worker ({sidecar['wall_s']:.1f} s in all); heavy-atom RMSD moved "
        f"{summary['rmsd_a_mean']:.2f} A mean, {summary['rmsd_a_max']:.2f} A max; frames with "
        f"a peptide-bond violation {summary['frames_with_peptide_violation_before']} -> "
        f"{summary['frames_with_peptide_violation_after']}, with a clash "
        f"{summary['frames_with_clash_before']} -> {summary['frames_with_clash_after']}"
    )


def relax_generated(out_dir: Path, sidecar: dict, workers: int) -> None:
    """``starmd generate --relax``: relax every written trajectory of one protein into
    ``NAME_R<i>.relaxed.xtc`` (+ ``.json``) beside the raw one, which is kept, and record the
    relaxed files in the generation sidecar ``NAME.json``."""
    from starmd.simulate.relax import RelaxSettings
    from starmd.structure.io import write_atomically

    settings = RelaxSettings(workers=workers)
    topology = out_dir / sidecar["files"]["topology"]
    relaxed = []
    for name in sidecar["files"]["trajectories"]:
        raw = out_dir / name
        out = raw.with_name(f"{raw.stem}.relaxed.xtc")
        _report(out, _run(raw, topology, out, settings, overwrite=True))
        relaxed.append(out.name)
    sidecar["files"]["relaxed"] = relaxed
    write_atomically(out_dir / f"{sidecar['name']}.json", json.dumps(sidecar, indent=2))
