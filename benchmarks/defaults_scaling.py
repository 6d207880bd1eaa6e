"""Time per frame at the defaults (refinement and polish on) against protein size, on real
structures.

    python benchmarks/defaults_scaling.py STRUCTURE [STRUCTURE ...] [--model starmd-small]
        [--frames 31] [--no-refine]

`starmd bench --sections scaling` times the network alone on synthetic chains up to 1,000
residues; this script times what a user gets from ``starmd generate`` with no flags, one
trajectory on one thread, on the structures given (e.g. a corpus protein of each size), and
splits each frame into the refinement, the polish and the rest (network, diffusion steps,
writing), from the run's own sidecar. The size exponent is the slope of log(time per frame)
against log(residues) between the smallest and the largest protein. Each protein runs in its
own ``starmd generate`` process, one after the other, so a busy machine slows all of them.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structures", nargs="+", type=Path)
    parser.add_argument("--model", default="starmd-small")
    parser.add_argument("--frames", type=int, default=31)
    parser.add_argument("--no-refine", action="store_true", help="time the raw network output")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for structure in args.structures:
            out = Path(scratch) / structure.stem
            command = [
                sys.executable, "-m", "starmd.cli", "generate", str(structure), "-o", str(out),
                "--frames", str(args.frames), "--threads", "1", "--model", args.model,
            ]  # fmt: skip
            if args.no_refine:
                command.append("--no-refine")
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode != 0:  # starmd's own one-line error, naming the structure
                lines = (run.stderr or run.stdout).strip().splitlines() or ["no message"]
                raise SystemExit(f"{structure}: starmd generate failed: {lines[-1]}")
            sidecar = json.loads(next(out.glob("*.json")).read_text())
            refinement = sidecar.get("refinement") or {}
            frame_ms = 1000.0 / sidecar["frames_per_s"]
            refine_ms = refinement.get("ms_per_frame", 0.0)
            polish_ms = refinement.get("polish_ms_per_frame", 0.0)
            replica = refinement.get("replicas", [{}])[0]
            written = replica.get("written") or {}
            raw = (replica.get("raw") or {}).get("ca_valid_pct")
            rows.append(
                (structure.stem, sidecar["residues"], frame_ms, refine_ms, polish_ms,
                 raw, written.get("valid_pct"))
            )  # fmt: skip
    rows.sort(key=lambda row: row[1])
    print(
        f"{args.model}, {'raw' if args.no_refine else 'defaults'}, one thread, {args.frames} frames"
    )
    print(
        "| protein | residues | ms per frame | refinement | polish | rest "
        "| raw CA-valid (%) | written CA+AA-valid (%) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, residues, frame, refine, polish, raw, valid in rows:
        rest = frame - refine - polish
        print(
            f"| {name} | {residues} | {frame:.0f} | {refine:.0f} | {polish:.0f} | {rest:.0f} | "
            f"{'' if raw is None else raw} | {'' if valid is None else valid} |"
        )
    (_, small, t_small, *_), (_, large, t_large, *_) = rows[0], rows[-1]
    if large > small:
        exponent = math.log(t_large / t_small) / math.log(large / small)
        print(f"\nsize exponent {small} -> {large} residues: {exponent:.2f}")


if __name__ == "__main__":
    main()
