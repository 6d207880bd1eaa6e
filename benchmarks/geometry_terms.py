"""Scale and cost of the structural-violation loss terms (bond, angle, clash).

    python benchmarks/geometry_terms.py [--model starmd-small] [--windows 8] [--steps 6]
        [--out geometry.json]

Scale: on windows of the corpus validation proteins (2WQG, 2K1B, 2M2L, replica 1 MD), the
terms of the model's (default ``starmd-small``) clean-frame predictions at fixed diffusion
times next to the same terms of the MD frames themselves (rebuilt from frames + torsions, the
path the loss takes).
Cost: seconds per training step (forward + backward, ``configs/small_cpu.yaml`` windows) with
the terms off and on, interleaved A/B on the same batches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.data.prepare import prepare
from starmd.modelfile import load_model, resolve_model
from starmd.structure import geometry
from starmd.train.losses import VIOLATION_TERMS, peptide_bonds, structural_violations
from starmd.train.module import StarMDModule, step_generator

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "md"
VALIDATION = ("2wqg", "2k1b", "2m2l")
TAUS = (0.02, 0.1, 0.3)


def _dataset(root: Path, window: int, crop: int, windows: int) -> TrajectoryWindowDataset:
    md = root / "md"
    for name in VALIDATION:
        (md / name).mkdir(parents=True)
        for suffix in (".pdb", "_prod_R1_fit.xtc"):
            shutil.copy(CORPUS / name / f"{name}{suffix}", md / name / f"{name}{suffix}")
    prepare(md, root / "data", fractions=(0, 1, 0))
    spec = WindowSpec(window=window, dt_ps=(10.0, 50.0), crop=crop)
    return TrajectoryWindowDataset(root / "data", "val", spec, samples_per_epoch=windows, seed=5)


def _violations(module: StarMDModule, batch, frames, torsions) -> dict[str, float]:
    cond = module.window_context(batch, step_generator(0, 0, 0, torch.device("cpu"))).cond
    b, k = frames.shape[:2]
    oxt = batch["atom_mask"][..., 14][:, None]
    atoms = geometry.frames_to_atoms(frames, torsions, cond.aatype[:, None], oxt)
    mask = (
        geometry.rebuilt_atom_mask(cond.aatype, oxt[:, 0])[:, None]
        & cond.residue_mask[:, None, :, None]
    )
    bonded = peptide_bonds(cond.residue_index, cond.chain_index, cond.residue_mask)
    values = structural_violations(
        atoms.flatten(0, 1),
        mask.expand(b, k, -1, -1).flatten(0, 1),
        cond.aatype[:, None].expand(b, k, -1).flatten(0, 1),
        bonded[:, None].expand(b, k, -1).flatten(0, 1),
    )
    return {name: float(value.mean()) for name, value in values.items()}


def scale(module: StarMDModule, batch) -> dict[str, dict[str, float]]:
    """Mean terms over the window's frames: MD, and predictions at each of :data:`TAUS`."""
    generator = step_generator(0, 0, 0, torch.device("cpu"))
    with torch.no_grad():
        ctx = module.window_context(batch, generator)
        window = ctx.window
        out = {"md": _violations(module, batch, window.frames, window.torsions)}
        for tau_value in TAUS:
            tau = torch.full(ctx.tau_ctx.shape, tau_value)
            noisy = module.diffuser.forward_marginal(
                window.frames, window.torsions, ctx.torsion_mask, tau[..., None], generator
            )
            pred = module.denoise_window(module.ema, ctx, noisy.frames, noisy.torsions, tau)
            angles = torch.atan2(pred.torsions[..., 0], pred.torsions[..., 1])
            out[f"model_tau_{tau_value}"] = _violations(module, batch, pred.frames, angles)
    return out


def step_seconds(module: StarMDModule, batch, step: int) -> float:
    start = time.perf_counter()
    terms = module.compute_losses(batch, step_generator(0, step, 0, torch.device("cpu")))
    terms["loss"].backward()
    module.model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starmd-small", help="bundled name or file")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(resolve_model(args.model))
    config = loaded.config
    on = StarMDModule(config)
    on.model.load_state_dict(loaded.model.state_dict())
    on.ema.load_state_dict(loaded.model.state_dict())
    for name in VIOLATION_TERMS:
        setattr(on.config.loss, name, 1.0)
    off = StarMDModule(type(config).from_dict(config.to_dict()))
    for name in VIOLATION_TERMS:
        setattr(off.config.loss, name, 0.0)
    off.model.load_state_dict(loaded.model.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        data = _dataset(Path(tmp), config.data.window, config.data.crop, args.windows)
        items = [data[i] for i in range(args.windows)]
    size = config.data.batch_size
    batches = [collate_windows(items[i : i + size]) for i in range(0, len(items), size)]
    per_batch = [scale(on, batch) for batch in batches]
    result: dict = {"scale": {}}
    for row in per_batch[0]:
        result["scale"][row] = {
            name: statistics.mean(b[row][name] for b in per_batch) for name in VIOLATION_TERMS
        }
    times: dict[str, list[float]] = {"off": [], "on": []}
    for step in range(args.steps):
        for label, module in (("off", off), ("on", on)):
            times[label].append(step_seconds(module, batches[step % len(batches)], step))
    result["step_seconds_median"] = {k: statistics.median(v[1:]) for k, v in times.items()}
    result["settings"] = {
        "model": args.model,
        "windows": args.windows,
        "window": config.data.window,
        "crop": config.data.crop,
        "batch_size": size,
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
