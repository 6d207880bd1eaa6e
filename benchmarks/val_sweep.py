"""Quality of generation settings on proteins with reference MD, one table (the model card's).

    python benchmarks/val_sweep.py MODEL --reference corpus/md -o work/sweep \
        --protein 2wqg --protein 2k1b --protein 2m2l \
        --setting dpm2:10 --setting dpm2:5 --setting ddpm:20 --frames 40 --dt 10 \
        --setting ddim:2@runs/fast/model.safetensors

Each setting (``sampler:steps[:dt_ps][:nosink][:cN][:rX][@MODEL]``; ``cN``: N past frames of
context, ``rX``: schedule rho X, ``@MODEL``: another model file than MODEL, e.g. a distilled
student against its teacher)
generates ``--frames`` frames of each protein from its MD start structure (``{name}.pdb``),
all settings are scored in one ``starmd evaluate`` run against the MD (with the MD-replica,
static and ANM baselines), and the table of medians over proteins is printed and written to
``OUT/report/metrics.md``. Generation speed (simulated ns per wall-second, median over
proteins) is added from the sidecars.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from starmd.evaluate.api import evaluate
from starmd.sample.generate import GenerationSettings, generate


def parse_setting(text: str, default_dt: float) -> tuple[str, tuple]:
    """``sampler:steps[:dt_ps][:nosink][:cN][:rX][@MODEL]`` -> label, (sampler, steps, dt, sink,
    context, rho, model); ``cN`` keeps N past frames in the cache, ``rX`` spaces the denoising
    times with rho X (defaults: the generator's), ``@MODEL`` uses that model file (None: the
    sweep's)."""
    text, _, model = text.partition("@")
    parts = text.split(":")
    sampler, steps = parts[0], int(parts[1])
    dt = float(parts[2]) if len(parts) > 2 and parts[2] else default_dt
    sink = "nosink" not in parts[3:]
    context = next((int(p[1:]) for p in parts[3:] if p.startswith("c")), None)
    rho = next((float(p[1:]) for p in parts[3:] if p.startswith("r")), None)
    label = f"{sampler}x{steps}" + (f"@{dt:g}ps" if dt != default_dt else "")
    label += "" if sink else "-nosink"
    label += "" if context is None else f"-ctx{context}"
    label += "" if rho is None else f"-rho{rho:g}"
    if model:
        path = Path(model)
        label += "+" + (path.parent.name if path.stem in ("model", "best", "last") else path.stem)
    return label, (sampler, steps, dt, sink, context, rho, model or None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--reference", required=True, type=Path)
    parser.add_argument("-o", "--out", required=True, type=Path)
    parser.add_argument("--protein", action="append", required=True)
    parser.add_argument("--setting", action="append", required=True)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--dt", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    parsed = []
    for text in args.setting:
        try:
            parsed.append(parse_setting(text, args.dt))
        except (ValueError, IndexError):
            parser.error(
                f"--setting {text!r}: expected sampler:steps[:dt_ps][:nosink][:cN][:rX][@MODEL]"
            )
    speeds: dict[str, list[float]] = {}
    folders: dict[str, Path] = {}
    for label, (sampler, steps, dt, sink, context, rho, model) in parsed:
        extra = {} if context is None else {"context": context}
        extra.update({} if rho is None else {"schedule_rho": rho})
        folders[label] = args.out / "gen" / label
        for name in args.protein:
            settings = GenerationSettings(
                frames=args.frames,
                dt_ps=dt,
                steps=steps,
                sampler=sampler,
                sink=sink,
                replicas=args.replicas,
                seed=args.seed,
                **extra,
            )
            sidecar = generate(
                args.reference / name / f"{name}.pdb",
                folders[label],
                settings,
                model=model or args.model,
                device="cpu",
                overwrite=True,
            )
            speeds.setdefault(label, []).append(sidecar["simulated_ns_per_wall_s"])
            print(f"{label} {name}: {sidecar['simulated_ns_per_wall_s']:.4f} ns/s", flush=True)
    first, *rest = folders
    table = evaluate(
        folders[first],
        args.reference,
        args.out / "report",
        baselines=("replica", "static", "anm"),
        extra={label: folders[label] for label in rest},
        gen_label=first,
        proteins=args.protein,
        plots=False,
        progress=False,
    )
    speed = {label: statistics.median(v) for label, v in speeds.items()}
    (args.out / "speed.json").write_text(json.dumps(speed, indent=1))
    print(table.to_markdown())
    print("\nns per wall-second (median over proteins):")
    for label, value in speed.items():
        print(f"  {label}: {value:.4f}")


if __name__ == "__main__":
    main()
