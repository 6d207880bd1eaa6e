"""How wide and how fast the torsions of generated trajectories move, against the reference MD.

For each protein and each labelled directory of generated trajectories (what ``starmd generate``
writes: ``NAME.pdb`` and ``NAME_R*.xtc``, directly or in ``seed*/`` subfolders, as ``starmd
fidelity`` leaves them under ``generated/LABEL``), and for the reference MD (replicas pooled,
strided to the generated time step), per torsion kind (phi, psi, chi1; mdtraj's definitions):

* ``sd``: the median over torsions of the circular standard deviation ``sqrt(-2 ln R)`` (R the
  mean resultant length over all frames), in degrees: the width of each torsion's distribution;
* ``step``: the median over torsions and frames of the absolute change from one frame to the
  next, in degrees;
* ``ac1``: the median over torsions of the normalised lag-1 autocorrelation of the unit vector,
  ``(<cos(a_t+1 - a_t)> - b) / (1 - b)`` with ``b = R^2``, the quantity whose fall below 1/e
  defines the fidelity table's decorrelation time (``evaluate.dynamics.normalised_autocovariance``
  at lag 1, as ``decorrelation_times`` uses it);
* ``offset`` (generated rows only): the median over torsions of the absolute angle between the
  torsion's circular mean and the reference MD's, in degrees: where the distribution sits, apart
  from how wide it is (a proper scoring rule widens a forecast whose centre is off, so a wide
  ``sd`` with a large ``offset`` is a misplaced distribution rather than a noisy one).

A diagnostic behind the fidelity table's torsion rows, not one of its rows: it tells a
distribution that is too wide (sd) from one that moves too little per frame (step, ac1).

Usage::

    python benchmarks/torsion_spread.py --protein 2wqg --protein 2k1b \\
        default=FIDELITY_OUT/generated/default student=FIDELITY_OUT/generated/student
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import mdtraj as md
import numpy as np

from starmd.evaluate.dynamics import normalised_autocovariance

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"phi": md.compute_phi, "psi": md.compute_psi, "chi1": md.compute_chi1}


def trajectories(directory: Path, name: str) -> list[md.Trajectory]:
    """Every ``NAME_R*.xtc`` of ``directory`` and its ``seed*/`` subfolders, each with the
    ``NAME.pdb`` beside it."""
    out = []
    for folder in [directory, *sorted(directory.glob("seed*"))]:
        for path in sorted(folder.glob(f"{name}_R*.xtc")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append(md.load(str(path), top=str(folder / f"{name}.pdb")))
    return out


def torsion_statistics(
    trajs: list[md.Trajectory], reference: dict[str, dict] | None = None
) -> dict[str, dict]:
    """``{kind: {"sd", "step", "ac1", "mean"}}`` over the pooled trajectories (see the module
    doc; ``mean``: each torsion's circular mean, radians), with ``"offset"`` from the circular
    means of ``reference`` (this function's output for the MD) where given."""
    out = {}
    for kind, compute in KINDS.items():
        angles = [compute(t)[1] for t in trajs]  # each (T, K) radians
        pooled = np.concatenate(angles)
        mean_vector = np.exp(1j * pooled).mean(axis=0)
        resultant = np.abs(mean_vector).clip(1e-12, 1.0)
        ac1 = normalised_autocovariance(angles, 1)[0][1]
        steps = np.concatenate([np.abs(np.angle(np.exp(1j * np.diff(a, axis=0)))) for a in angles])
        out[kind] = {
            "sd": float(np.degrees(np.median(np.sqrt(-2.0 * np.log(resultant))))),
            "step": float(np.degrees(np.median(steps))),
            "ac1": float(np.nanmedian(ac1)),
            "mean": np.angle(mean_vector),
        }
        if reference is not None:
            gap = np.angle(np.exp(1j * (out[kind]["mean"] - reference[kind]["mean"])))
            out[kind]["offset"] = float(np.degrees(np.median(np.abs(gap))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generated", nargs="+", help="LABEL=DIR of generated trajectories")
    parser.add_argument("--protein", action="append", required=True, help="corpus name")
    parser.add_argument("--md-dir", type=Path, default=ROOT / "corpus" / "md")
    args = parser.parse_args()
    sources = [item.split("=", 1) for item in args.generated]
    print(
        "| protein | source | " + " | ".join(f"{k} sd / step / ac1 / offset" for k in KINDS) + " |"
    )
    print("|---|---|" + "---|" * len(KINDS))
    for name in args.protein:
        generated = {label: trajectories(Path(d), name) for label, d in sources}
        dt = min(t.timestep for ts in generated.values() for t in ts)
        folder = args.md_dir / name
        reference = [
            md.load(str(p), top=str(folder / f"{name}.pdb"))
            for p in sorted(folder.glob(f"{name}_prod_R*_fit.xtc"))
        ]
        stride = max(1, round(dt / reference[0].timestep))
        rows = {"MD": [t[::stride] for t in reference], **generated}
        md_stats = torsion_statistics(rows["MD"])
        for label, trajs in rows.items():
            stats = md_stats if label == "MD" else torsion_statistics(trajs, md_stats)
            cells = [
                f"{s['sd']:.1f} / {s['step']:.1f} / {s['ac1']:.2f} / "
                + (f"{s['offset']:.1f}" if "offset" in s else "-")
                for s in stats.values()
            ]
            print(f"| {name} | {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
