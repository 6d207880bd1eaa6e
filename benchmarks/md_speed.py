"""OpenMM speed (ns/day) per corpus protein on this machine, for the chosen MD protocols.

The figure is the baseline for starmd's speed claims: how much simulated time reference MD buys
per wall-clock day. Each protein is run briefly (after a short minimization and warm-up) on one
platform with a fixed thread count; the timed part is integration only.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/md_speed.py --threads 1 \
        --protocols implicit --seconds 20 --out corpus/md_speed
    .venv/bin/python benchmarks/md_speed.py --only 1enh --protocols implicit implicit-gbn2

Writes ``{out}.md`` (a Markdown table) and ``{out}.json`` (the same rows plus settings).
"""

from __future__ import annotations

import argparse
import json
import platform as host
import time
from pathlib import Path
from typing import Any


def measure(
    structure: Path,
    protocol_name: str,
    *,
    platform_name: str = "CPU",
    threads: int | None = 1,
    seconds: float = 20.0,
    warmup_steps: int = 100,
    block_steps: int = 100,
) -> dict[str, Any]:
    """ns/day of ``structure`` under ``protocol_name``, timed over at least ``seconds`` of wall.

    Returns:
        A row: atoms (with hydrogens), steps timed, wall seconds, ns/day.
    """
    import openmm
    import openmm.unit as unit

    from starmd.simulate.fixing import fix_structure
    from starmd.simulate.platforms import select_platform
    from starmd.simulate.protocols import build_system, get_protocol, make_integrator

    proto = get_protocol(protocol_name)
    topology, positions = fix_structure(structure)
    system, topology, positions = build_system(proto, topology, positions)
    platform, properties = select_platform(platform_name, threads)
    integrator = make_integrator(proto, seed=1)
    context = openmm.Context(system, integrator, platform, properties)
    context.setPositions(positions)
    started = time.perf_counter()
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 500)
    minimize_s = time.perf_counter() - started
    context.setVelocitiesToTemperature(proto.temperature_k * unit.kelvin, 1)
    integrator.step(warmup_steps)
    steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        integrator.step(block_steps)
        steps += block_steps
    context.getState(getEnergy=True)  # synchronise GPU platforms before stopping the clock
    wall = time.perf_counter() - started
    return {
        "atoms": system.getNumParticles(),
        "platform": platform.getName(),
        "threads": threads,
        "minimize_s": round(minimize_s, 1),
        "steps": steps,
        "wall_s": round(wall, 2),
        "ns_per_day": round(steps * proto.step_ps / 1000.0 / wall * 86400.0, 2),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: measure every selected protein and protocol, write MD + JSON."""
    from starmd.simulate.corpus import load_manifest, select_entries

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=None, help="corpus manifest CSV")
    parser.add_argument("--only", nargs="*", default=None, help="protein names")
    parser.add_argument("--protocols", nargs="+", default=["implicit"], help="MD protocols")
    parser.add_argument("--platform", default="CPU", help="OpenMM platform (default CPU)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed wall seconds per run")
    parser.add_argument("--out", type=Path, default=Path("corpus/md_speed"), help="output prefix")
    args = parser.parse_args(argv)

    entries = select_entries(load_manifest(args.manifest), args.only)
    rows = []
    for entry in entries:
        for protocol in args.protocols:
            row = measure(
                entry.structure,
                protocol,
                platform_name=args.platform,
                threads=args.threads,
                seconds=args.seconds,
            )
            row = {"name": entry.name, "residues": entry.residues, "protocol": protocol, **row}
            rows.append(row)
            print(
                f"{entry.name:14s} {entry.residues:4d} res {row['atoms']:5d} atoms "
                f"{protocol:14s} {row['ns_per_day']:8.2f} ns/day",
                flush=True,
            )
    header = "| protein | residues | atoms (with H) | protocol | platform | threads | ns/day |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['name']} | {r['residues']} | {r['atoms']} | {r['protocol']} | {r['platform']} "
        f"| {r['threads']} | {r['ns_per_day']:.1f} |"
        for r in rows
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    settings = {
        "machine": host.node(),
        "processor": host.processor() or host.machine(),
        "platform": args.platform,
        "threads": args.threads,
        "timed_seconds_per_run": args.seconds,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    Path(f"{args.out}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    print(f"wrote {args.out}.md and {args.out}.json")


if __name__ == "__main__":
    main()
