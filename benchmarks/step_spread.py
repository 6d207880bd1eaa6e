"""One step of a model from MD's own history, against MD's next frame (model diagnostics).

A rollout can under-spread for two different reasons: each step moves too little (the learned
conditional distribution of the next frame is too narrow), or each step is right but the steps
do not accumulate (they pull back towards the input structure). This script separates them. For
contexts taken from the MD replicas of the given proteins (the last ``--context`` frames at the
model's time step, the input structure as the sink, exactly what a rollout caches), it samples
``--samples`` next frames and reports:

- ``step``: C-alpha RMSD (Kabsch) of the next frame from the last context frame, MD vs model
  (medians over contexts and samples);
- ``spread``: pairwise C-alpha RMSD among the model's samples of one context (its conditional
  width, median over contexts; MD has one next frame per context, so no MD value);
- ``pull``: mean change of the C-alpha RMSD to the input structure over the step (negative: back
  towards the input), MD vs model at the same contexts, the model's excess over MD's, and
  the slope of the change against the context's RMSD to the input (regression to the mean;
  MD's own slope is the reference);
- ``Rg change``: mean change of the C-alpha radius of gyration over the step, MD vs model;
- ``profile r``: Pearson r over residues of the per-residue step displacement (model mean over
  samples and contexts vs MD mean over contexts);
- ``dihedral step``: median absolute change of the backbone dihedrals across peptide bonds
  (psi, phi of the idealised N, CA, C that the frames place,
  :func:`~starmd.structure.geometry.junction_dihedrals`) over the step, MD vs model, in degrees;
  ``dihedral spread``: the median over contexts and dihedrals of their circular sd among the
  model's samples of one context. A rollout's backbone torsions can be too wide because one step
  from MD's own history already is (these columns show it) or because errors accumulate over
  the model's own history;
- ``dihedral offset``: median angle between those dihedrals and their circular mean in the
  reference MD (``--reference-md``, default ``--md``), for the last context frame, MD's next
  frame and the model's samples. With MD as the history the three agree; with a drifted history
  (a model's own rollout laid out as ATLAS MD and given as ``--md``) a model that restores
  brings its samples' offset below the context's, one that continues the history does not.

Network output only (no refinement), the model's sampler defaults unless given. ``--restoring``,
``--deadband``, ``--context-noise``, ``--no-sink``, ``--early`` and ``--anchor-back`` change
what the sampler conditions on, to find where a pull comes from (docs/ablations.md, "Where the
spread goes").

    python benchmarks/step_spread.py starmd-small --md corpus/md --protein 2wqg --protein 2k1b \\
        --protein 2m2l --dt 50
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from starmd.diffusion.conditioning import FrameConditioner
from starmd.errors import StarmdInputError
from starmd.modelfile import load_model, resolve_model
from starmd.sample.rollout import Rollout, RolloutSettings, protein_input
from starmd.structure import geometry
from starmd.structure.io import iter_trajectory, load_structure
from starmd.structure.rigid import Rigid


def kabsch_rmsd(x: np.ndarray, y: np.ndarray) -> float:
    """C-alpha RMSD of ``x`` and ``y`` (L, 3) after optimal superposition."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    u, s, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    msd = (np.sum(x * x) + np.sum(y * y) - 2 * s.sum()) / len(x)
    return float(np.sqrt(max(msd, 0.0)))


def radius_of_gyration(x: np.ndarray) -> float:
    """C-alpha radius of gyration (A) of ``x`` (L, 3)."""
    return float(np.sqrt(((x - x.mean(0)) ** 2).sum(-1).mean()))


def superpose(x: np.ndarray, onto: np.ndarray) -> np.ndarray:
    """``x`` (L, 3) moved onto ``onto`` by the optimal rotation and translation."""
    xc, oc = x - x.mean(0), onto - onto.mean(0)
    u, _, vt = np.linalg.svd(xc.T @ oc)
    d = np.sign(np.linalg.det(u @ vt))
    u[:, -1] *= d
    return xc @ (u @ vt) + onto.mean(0)


def md_frames(folder: Path) -> tuple[object, np.ndarray, list[np.ndarray], float]:
    """Protein, input positions, the replicas' positions and their frame interval (ps)."""
    name = folder.name
    protein, init = load_structure(folder / f"{name}.pdb")
    replicas, interval = [], None
    for xtc in sorted(folder.glob(f"{name}_prod_R*_fit.xtc")):
        chunks, times = [], []
        for _, positions, time_ps in iter_trajectory(folder / f"{name}.pdb", xtc):
            chunks.append(positions)
            times.append(time_ps)
        replicas.append(np.concatenate(chunks))
        interval = float(np.diff(np.concatenate(times)).min())
    return protein, init, replicas, interval


def replica_states(replica: np.ndarray, protein) -> tuple[Rigid, torch.Tensor]:
    """Frames ``(T, L)`` and torsions ``(T, L, 7)`` of MD positions ``(T, L, 15, 3)``."""
    positions = torch.from_numpy(replica)
    frames = geometry.atoms_to_frames(positions)
    torsions, _ = geometry.atoms_to_torsions(
        positions,
        torch.from_numpy(protein.aatype),
        torch.from_numpy(protein.atom_mask),
        torch.from_numpy(protein.linked_prev),
    )
    return frames, torsions


def md_state(
    frames: Rigid, torsions: torch.Tensor, i: int, centre: torch.Tensor, copies: int
) -> tuple[Rigid, torch.Tensor]:
    """MD frame ``i`` centred like the rollout's input, as a batch of ``copies``, float32."""
    rigid = Rigid(
        frames.rots[i].float().expand(copies, -1, -1, -1),
        (frames.trans[i] - centre).float().expand(copies, -1, -1),
    )
    return rigid, torsions[i].float().expand(copies, -1, -1)


def protein_rows(loaded, folder: Path, args) -> dict[str, float]:
    protein, init, replicas, interval = md_frames(folder)
    stride = round(args.dt / interval)
    if stride < 1 or abs(stride * interval - args.dt) > 1e-3:
        raise SystemExit(f"{folder}: dt {args.dt} ps is not a multiple of MD's {interval} ps")
    n = args.samples
    inputs = protein_input(protein, init, args.dt, n)
    anchor = init
    defaults = loaded.config.sampling
    settings = RolloutSettings(
        steps=args.steps or defaults.steps,
        sampler=args.sampler or defaults.sampler,
        context=args.context,
        sink=not args.no_sink,
        context_noise=args.context_noise,
    )
    prior_changes = {
        key: value
        for key, value in (
            ("reference_contact_restoring", args.restoring),
            ("reference_contact_deadband", args.deadband),
        )
        if value is not None
    }
    md_step, md_pull, md_at = [], [], []
    model_step, model_spread, model_pull, model_at = [], [], [], []
    md_disp, model_disp = [], []
    md_rg, model_rg = [], []
    md_dihedral_step, model_dihedral_step, model_dihedral_spread = [], [], []
    context_offset, md_offset, model_offset = [], [], []
    aatype = torch.from_numpy(protein.aatype)
    bonded = torch.from_numpy(protein.linked_prev[1:]).bool()
    states = [replica_states(replica, protein) for replica in replicas]
    reference = (
        states
        if args.reference_md is None
        else [replica_states(r, protein) for r in md_frames(args.reference_md / folder.name)[2]]
    )
    pooled = torch.cat([geometry.junction_dihedrals(f, aatype) for f, _ in reference])
    reference_mean = torch.angle(torch.exp(1j * pooled).mean(0))[bonded]
    for replica, (frames_all, torsions_all) in zip(replicas, states, strict=True):
        centre = inputs.centre[0].double()
        first = args.context * stride
        for last in range(first, len(replica) - stride, args.every * stride):
            if args.anchor_back is not None:
                # condition on an MD frame instead of the input structure (sink, pair
                # features, restoring springs); the pull is then measured towards it
                anchor = replica[last - args.anchor_back * stride]
                inputs = protein_input(protein, anchor, args.dt, n)
                centre = inputs.centre[0].double()
            rollout = Rollout(loaded, inputs, settings, seed=last)
            if prior_changes:
                rollout.conditioner = FrameConditioner(
                    replace(loaded.config.diffusion, **prior_changes), rollout.diffuser
                )
            if not args.no_sink:
                rollout.push_clean(0, inputs.init_frames, inputs.init_torsions)
            t_last = args.context if args.early else last // stride
            for k in range(args.context - 1, -1, -1):
                state = md_state(frames_all, torsions_all, last - k * stride, centre, n)
                rollout.push_clean(t_last - k, *state)
            frames, _ = rollout.sample_frame(t_last + 1)
            ca = frames.trans.double().numpy() + centre.numpy()
            md_now, md_next = (
                geometry.junction_dihedrals(frames_all[i], aatype)[bonded]
                for i in (last, last + stride)
            )
            sampled = geometry.junction_dihedrals(frames.to(torch.float64), aatype)[:, bonded]
            context_offset.append(circular_gap(md_now, reference_mean))
            md_offset.append(circular_gap(md_next, reference_mean))
            model_offset.append(circular_gap(sampled, reference_mean[None]))
            md_dihedral_step.append(circular_gap(md_next, md_now))
            model_dihedral_step.append(circular_gap(sampled, md_now[None]).ravel())
            resultant = torch.exp(1j * sampled).mean(0).abs().clamp(1e-12, 1.0)
            model_dihedral_spread.append(torch.sqrt(-2.0 * resultant.log()).ravel().numpy())
            now, nxt = replica[last, :, 1], replica[last + stride, :, 1]
            init_ca = anchor[:, 1]
            r_now = kabsch_rmsd(now, init_ca)
            md_step.append(kabsch_rmsd(nxt, now))
            md_pull.append(kabsch_rmsd(nxt, init_ca) - r_now)
            md_at.append(r_now)
            md_rg.append(radius_of_gyration(nxt) - radius_of_gyration(now))
            md_disp.append(np.linalg.norm(superpose(nxt, now) - now, axis=-1))
            for b in range(args.samples):
                model_step.append(kabsch_rmsd(ca[b], now))
                model_pull.append(kabsch_rmsd(ca[b], init_ca) - r_now)
                model_at.append(r_now)
                model_rg.append(radius_of_gyration(ca[b]) - radius_of_gyration(now))
                model_disp.append(np.linalg.norm(superpose(ca[b], now) - now, axis=-1))
            pairs = [
                kabsch_rmsd(ca[a], ca[b])
                for a in range(args.samples)
                for b in range(a + 1, args.samples)
            ]
            model_spread.append(float(np.mean(pairs)))
    md_slope = np.polyfit(md_at, md_pull, 1)[0]
    model_slope = np.polyfit(model_at, model_pull, 1)[0]
    profile_r = np.corrcoef(np.mean(md_disp, 0), np.mean(model_disp, 0))[0, 1]
    return {
        "contexts": len(md_step),
        "md_step": float(np.median(md_step)),
        "model_step": float(np.median(model_step)),
        "model_spread": float(np.median(model_spread)),
        "md_pull": float(np.mean(md_pull)),
        "model_pull": float(np.mean(model_pull)),
        "excess_pull": float(np.mean(model_pull) - np.mean(md_pull)),
        "md_rg": float(np.mean(md_rg)),
        "model_rg": float(np.mean(model_rg)),
        "md_slope": float(md_slope),
        "model_slope": float(model_slope),
        "profile_r": float(profile_r),
        "md_dihedral_step": median_degrees(md_dihedral_step),
        "model_dihedral_step": median_degrees(model_dihedral_step),
        "model_dihedral_spread": median_degrees(model_dihedral_spread),
        "context_offset": median_degrees(context_offset),
        "md_offset": median_degrees(md_offset),
        "model_offset": median_degrees(model_offset),
    }


def circular_gap(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Absolute angles (radians) between the angles ``a`` and ``b`` (broadcast), flattened."""
    return geometry.wrap_angle(a - b).abs().numpy().ravel()


def median_degrees(values: list[np.ndarray]) -> float:
    """Median of the pooled ``values`` (radians), in degrees."""
    return float(np.degrees(np.median(np.concatenate(values))))


COLUMNS = (
    ("contexts", "contexts", "{:d}"),
    ("md_step", "MD step (A)", "{:.3f}"),
    ("model_step", "model step (A)", "{:.3f}"),
    ("model_spread", "model spread (A)", "{:.3f}"),
    ("md_pull", "MD pull (A)", "{:+.3f}"),
    ("model_pull", "model pull (A)", "{:+.3f}"),
    ("excess_pull", "excess pull (A)", "{:+.3f}"),
    ("md_rg", "MD Rg change (A)", "{:+.3f}"),
    ("model_rg", "model Rg change (A)", "{:+.3f}"),
    ("md_slope", "MD reversion slope", "{:+.3f}"),
    ("model_slope", "model reversion slope", "{:+.3f}"),
    ("profile_r", "profile r", "{:.2f}"),
    ("md_dihedral_step", "MD dihedral step (deg)", "{:.1f}"),
    ("model_dihedral_step", "model dihedral step (deg)", "{:.1f}"),
    ("model_dihedral_spread", "model dihedral spread (deg)", "{:.1f}"),
    ("context_offset", "context dihedral offset (deg)", "{:.1f}"),
    ("md_offset", "MD next dihedral offset (deg)", "{:.1f}"),
    ("model_offset", "model dihedral offset (deg)", "{:.1f}"),
)


def md_context_parser(doc: str, every: int) -> argparse.ArgumentParser:
    """The arguments every MD-context diagnostic takes (model, MD, proteins, step, context)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("model", help="bundled model name or .safetensors file")
    parser.add_argument("--md", type=Path, default=Path("corpus/md"), help="ATLAS-layout MD")
    parser.add_argument("--protein", action="append", required=True, help="protein folder name")
    parser.add_argument("--dt", type=float, default=50.0, help="time step (ps)")
    parser.add_argument("--context", type=int, default=7, help="cached MD frames")
    parser.add_argument("--every", type=int, default=every, help="contexts every N time steps")
    return parser


def main() -> None:
    parser = md_context_parser(__doc__, every=2)
    parser.add_argument("--samples", type=int, default=8, help="next frames per context")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--sampler", default=None)
    parser.add_argument(
        "--restoring",
        type=float,
        default=None,
        help="restoring fraction of the elastic prior at sampling only (the network was "
        "trained with the model file's)",
    )
    parser.add_argument(
        "--deadband",
        type=float,
        default=None,
        help="flat bottom (A) of the restoring contacts at sampling only",
    )
    parser.add_argument(
        "--context-noise",
        type=float,
        default=None,
        help="contextual-noise level of the cached frames (default: the model's rollout level)",
    )
    parser.add_argument(
        "--anchor-back",
        type=int,
        default=None,
        help="condition on the MD frame N time steps before the last context frame instead "
        "of the input structure (N >= --context - 1 keeps it outside the context)",
    )
    parser.add_argument(
        "--reference-md",
        type=Path,
        default=None,
        help="ATLAS-layout MD whose mean dihedrals the offset columns measure from (default: "
        "--md; give the real MD when --md holds a model's rollout)",
    )
    parser.add_argument("--no-sink", action="store_true", help="no input frame in the cache")
    parser.add_argument(
        "--early",
        action="store_true",
        help="time-stamp the context as frames 1..context (as early in a rollout), not at "
        "its time in the MD",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(resolve_model(args.model))
    header = "| protein | " + " | ".join(c[1] for c in COLUMNS) + " |"
    print(f"{args.model} at {args.dt:g} ps\n\n{header}\n|---|" + "---|" * len(COLUMNS))
    for name in args.protein:
        row = protein_rows(loaded, args.md / name, args)
        cells = " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS)
        print(f"| {name} | {cells} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except StarmdInputError as exc:  # a missing or unreadable protein folder: one line
        raise SystemExit(f"error: {exc}") from None
