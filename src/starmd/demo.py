"""``starmd demo``: the whole pipeline on bundled data, in minutes on a laptop CPU.

Stages: inspect the bundled structure; prepare its real MD into a dataset; rebuild every frame
from the dataset's frames + torsions (the representation's round trip); generate a trajectory
with a model when one is available (``model=...`` or the bundled default) at the model's
recommended time step and steps; evaluate the generated trajectory (if any) and the baselines
(a second MD replica, the static structure, an elastic network) against the MD, and print the
headline metrics with the path of the HTML report.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from starmd.data.prepare import prepare
from starmd.data.sources import atlas_replica_xtc
from starmd.data.store import open_store
from starmd.structure import geometry
from starmd.structure.inspect import inspect_structure
from starmd.structure.io import atomic_write, iter_trajectory, to_mdtraj
from starmd.structure.rigid import Rigid

DEMO_PROTEIN = "2wqg"
"""A validation protein of the bundled corpus (never trained on), with two replicas of its MD."""
HEADLINE_METRICS = (
    "coverage_jsd",
    "coverage_recall",
    "validity_pct",
    "rmsf_median",
    "rmsf_r",
    "pairwise_rmsd",
    "rmsd_to_initial_max",
)


def demo_md_dir() -> Path:
    """The bundled demo MD (ATLAS layout)."""
    return Path(str(resources.files("starmd") / "assets" / "demo" / DEMO_PROTEIN))


def _rebuild(md_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    name = DEMO_PROTEIN
    group = open_store(data_dir)
    replica = group[f"proteins/{name}/R1"]
    frames = torch.from_numpy(replica["frames"][...]).double()
    torsions = torch.from_numpy(replica["torsions"][...]).double()
    ((protein, original, times),) = list(
        iter_trajectory(md_dir / f"{name}.pdb", md_dir / atlas_replica_xtc(name, 1), chunk=10_000)
    )
    aatype = torch.from_numpy(protein.aatype)
    oxt = torch.from_numpy(protein.oxt_mask)
    rebuilt = geometry.frames_to_atoms(Rigid.from_tensor_7(frames), torsions, aatype, oxt).numpy()
    mask = geometry.rebuilt_atom_mask(aatype, oxt).numpy()
    traj = to_mdtraj(protein, rebuilt, mask, time_ps=times)
    pdb = atomic_write(out_dir / f"{name}_rebuilt.pdb", lambda tmp: traj[0].save_pdb(tmp))
    xtc = atomic_write(out_dir / f"{name}_rebuilt.xtc", lambda tmp: traj.save_xtc(tmp))
    common = mask & protein.atom_mask
    per_frame = np.sqrt((((rebuilt - original) ** 2).sum(-1)[:, common]).mean(-1))
    return {
        "rebuilt_pdb": str(pdb),
        "rebuilt_xtc": str(xtc),
        "round_trip_heavy_atom_rmsd_A": {
            "median": float(np.median(per_frame)),
            "max": float(per_frame.max()),
        },
    }


def run_demo(
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    frames: int = 200,
    steps: int | None = None,
    seed: int = 0,
    baselines: tuple[str, ...] = ("replica", "static", "anm"),
    log=print,
) -> dict:
    """Run the demo into ``out_dir``; returns the summary written to ``summary.json``.

    The generation runs on torch's threads, fewer when other processes keep CPUs busy (the load
    average at the start, before the demo's own work counts in it): threads that share a busy
    CPU wait on each other at every operation, ~10x slower on this project's 2-core machine with
    one core taken."""
    import torch

    from starmd.cli.lists import free_cpus, load_average
    from starmd.evaluate import evaluate
    from starmd.modelfile import bundled_model_path, installed_default_model, resolve_model
    from starmd.sample.generate import GenerationSettings, generate

    load = load_average()
    threads = min(torch.get_num_threads(), max(1, free_cpus(load)))
    out_dir = Path(out_dir)
    model_path = resolve_model(model) if model is not None else installed_default_model()
    md_dir = demo_md_dir()
    name = DEMO_PROTEIN
    topology = md_dir / f"{name}.pdb"
    report = inspect_structure(topology)
    log(
        f"[1/5] {topology.name}: {report['n_residues']} residues, round trip "
        f"{report['round_trip_backbone_rmsd_A']:.3f} A backbone, "
        f"{report['round_trip_heavy_atom_rmsd_A']:.3f} A heavy atoms"
    )

    rows = prepare(md_dir, out_dir / "data", fractions=(1, 0, 0), overwrite=True)
    dt_ps = rows[0].dt_ps
    log(f"[2/5] prepared {rows[0].frames} MD frames at {dt_ps:g} ps into {out_dir / 'data'}")

    summary = {"protein": name, "md_frames": rows[0].frames, "dt_ps": dt_ps}
    summary.update(_rebuild(md_dir, out_dir / "data", out_dir))
    log(
        f"[3/5] rebuilt every MD frame from frames + torsions -> {summary['rebuilt_xtc']} "
        f"(heavy-atom RMSD to MD: median "
        f"{summary['round_trip_heavy_atom_rmsd_A']['median']:.3f} A)"
    )

    gen_dir = None
    if model_path is not None:
        gen_dir = out_dir / "generated"
        settings = GenerationSettings(frames=frames, seed=seed, steps=steps)
        previous = torch.get_num_threads()
        if threads < previous:
            log(
                f"      generating on {threads} thread(s) of {previous}: other processes keep "
                f"CPUs busy (load average {load:.1f})"
            )
        torch.set_num_threads(threads)
        try:
            sidecar = generate(topology, gen_dir, settings, model=model_path, overwrite=True)
        finally:
            torch.set_num_threads(previous)
        gen_dt = sidecar["dt_ps"]
        summary["generated"] = {
            "model": str(model_path),
            "frames": frames,
            "simulated_ns_per_wall_s": sidecar["simulated_ns_per_wall_s"],
            "health": sidecar["health"],
        }
        log(
            f"[4/5] generated {frames} frames at {gen_dt:g} ps with {model_path.name}: "
            f"{sidecar['simulated_ns_per_wall_s']:.3g} simulated ns per wall-second -> {gen_dir}"
        )
    else:
        log(
            f"[4/5] no model at {bundled_model_path()}: skipping generation (pass --model with "
            "one from `starmd train`)"
        )

    table = evaluate(gen_dir, md_dir, out_dir / "report", baselines=baselines, progress=False)
    summary["report"] = str(out_dir / "report" / "report.html")
    summary["metrics"] = {
        key: {m: _finite(v) for m, v in table.values.get(key, {}).items()}
        for key in HEADLINE_METRICS
    }
    log(f"[5/5] evaluated against the MD ({', '.join(table.methods)}):")
    log(_headline(table))
    log(f"full table: {out_dir / 'report' / 'metrics.md'}; report: {summary['report']}")
    text = json.dumps(summary, indent=2)
    atomic_write(out_dir / "summary.json", lambda tmp: Path(tmp).write_text(text))
    return summary


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _headline(table) -> str:
    from starmd.evaluate.report import METRICS, format_value

    labels = {spec.key: spec.label for spec in METRICS}
    lines = [
        "| metric | " + " | ".join(table.methods) + " |",
        "|---|" + "---|" * len(table.methods),
    ]
    for key in HEADLINE_METRICS:
        values = table.values.get(key, {})
        cells = [
            format_value(values[m], key) if _finite(values.get(m)) else "N/A" for m in table.methods
        ]
        lines.append(f"| {labels.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite(value) -> bool:
    return value is not None and bool(np.isfinite(value))
