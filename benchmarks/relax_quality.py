"""What ``--relax`` buys: validity and local geometry before and after, RMSD moved, cost per frame.

For each model, generates a trajectory of a protein (default: the bundled demo protein 2WQG, a
validation protein no model trained on), relaxes it with :func:`starmd.simulate.relax.
relax_trajectory`, and measures raw and relaxed frames with the evaluation's own code: the
headline CA / AA / CA+AA validity (:mod:`starmd.evaluate.validity`) and the local-geometry
rows of report section E (:mod:`starmd.evaluate.local_geometry`). The reference MD replica is
relaxed and measured too (what relaxing an already valid trajectory does). Prints a Markdown
table (the numbers of the model card's Relaxation section) and writes ``OUT/relax_quality.json``.

    python benchmarks/relax_quality.py -o relax_bench --frames 51 --workers 2 [--refine]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mdtraj as md

from starmd.evaluate import local_geometry, validity
from starmd.sample.generate import GenerationSettings, generate
from starmd.simulate.relax import RelaxSettings, relax_trajectory

DEMO = Path(__file__).resolve().parents[1] / "src/starmd/assets/demo/2wqg"
MODELS = ("starmd-small", "starmd-small-fast")


def measure(trajectory: Path, topology: Path) -> dict[str, float]:
    """Headline validity and section-E rows of one trajectory (heavy atoms), percentages."""
    frames = md.load(str(trajectory), top=str(topology))
    frames = frames.atom_slice(frames.topology.select("not element H"))
    xyz = frames.xyz * 10.0
    plan = validity.plan_validity(frames.topology)
    checks = validity.check_validity(xyz, plan)
    geometry = local_geometry.measure_geometry(
        xyz, local_geometry.plan_geometry(frames.topology, plan)
    )
    summary = local_geometry.geometry_summary(geometry, checks["rama_outlier_fraction"])
    c_n = geometry["c_n"]
    return validity.validity_summary(checks) | {
        "c_n_outside_1.2_1.5_pct": 100.0 * float(((c_n < 1.2) | (c_n > 1.5)).mean()),
        "ca_ca_sd": summary["geo_ca_ca_sd"],
        "clash_frames_pct": summary["geo_clash_frames_pct"],
        "rama_outlier_pct": summary["geo_rama_outlier_pct"],
        "bioemu_valid_pct": summary["bioemu_valid_pct"],
        "frames": int(frames.n_frames),
    }


def relax_and_measure(raw: Path, topology: Path, settings: RelaxSettings) -> dict:
    """Relax ``raw`` beside itself and measure both; returns the rows and the relax cost."""
    out = raw.with_name(f"{raw.stem}.relaxed.xtc")
    sidecar = relax_trajectory(raw, topology, out, settings, overwrite=True)
    return {
        "raw": measure(raw, topology),
        "relaxed": measure(out, topology),
        "rmsd_moved_a_mean": sidecar["summary"]["rmsd_a_mean"],
        "rmsd_moved_a_max": sidecar["summary"]["rmsd_a_max"],
        "seconds_per_frame": sidecar["seconds_per_frame"],
        "frames_with_released_restraints": sidecar["summary"]["frames_with_released_restraints"],
        "wall_s": sidecar["wall_s"],
        "workers": settings.workers,
    }


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per quantity, raw -> relaxed per trajectory."""
    rows = [
        ("CA+AA-valid frames %", "validity_pct"),
        ("CA-valid frames %", "validity_ca_pct"),
        ("AA-valid frames %", "validity_aa_pct"),
        ("peptide bonds outside 1.2-1.5 A %", "c_n_outside_1.2_1.5_pct"),
        ("consecutive CA-CA sd (A)", "ca_ca_sd"),
        ("frames with a heavy-atom clash %", "clash_frames_pct"),
        ("Ramachandran outliers per frame %", "rama_outlier_pct"),
        ("BioEmu filter, frames passing %", "bioemu_valid_pct"),
    ]
    head = "| | " + " | ".join(results) + " |\n|---|" + "---|" * len(results) + "\n"
    lines = []
    for label, key in rows:
        cells = [f"{r['raw'][key]:.3g} -> {r['relaxed'][key]:.3g}" for r in results.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key, fmt in (
        ("heavy-atom RMSD moved, mean / max (A)", "rmsd_moved_a", "{:.2f}"),
        ("relax cost, s per frame (one process)", "seconds_per_frame", "{:.2f}"),
    ):
        if key == "rmsd_moved_a":
            cells = [f"{r[key + '_mean']:.2f} / {r[key + '_max']:.2f}" for r in results.values()]
        else:
            cells = [fmt.format(r[key]) for r in results.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--structure", type=Path, default=DEMO / "2wqg.pdb")
    parser.add_argument("--reference", type=Path, default=DEMO / "2wqg_prod_R1_fit.xtc")
    parser.add_argument("--frames", type=int, default=51)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--refine", action="store_true", help="generate with rollout refinement (--refine)"
    )
    args = parser.parse_args()
    settings = RelaxSettings(workers=args.workers)
    results = {}
    md_copy = args.out / "md" / args.reference.name
    md_copy.parent.mkdir(parents=True, exist_ok=True)
    md_copy.write_bytes(args.reference.read_bytes())
    results["MD (reference)"] = relax_and_measure(md_copy, args.structure, settings)
    for model in MODELS:
        out_dir = args.out / model
        sidecar = generate(
            args.structure,
            out_dir,
            GenerationSettings(frames=args.frames, seed=args.seed, refine=args.refine),
            model=model,
            device="cpu",
            overwrite=True,
        )
        raw = out_dir / sidecar["files"]["trajectories"][0]
        results[model] = relax_and_measure(raw, out_dir / sidecar["files"]["topology"], settings)
    (args.out / "relax_quality.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
