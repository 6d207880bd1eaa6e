"""Print the corpus status table (Markdown) from the manifest and each replica's progress record.

Usage: python benchmarks/corpus_status.py corpus/md [--replicas 2]

One row per manifest protein, in manifest order: split, fold class, residues and the simulated
ns of each replica, read from ``<out>/<name>/state/<name>_R<i>.json`` (``frames_done`` times
``save_every_ps``; 0 where the replica has not started). The last line gives the totals.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[1] / "src/starmd/assets/corpus/manifest.csv"


def replica_ns(state: Path) -> tuple[float, int]:
    """Simulated ns and frames of one replica's progress record (0, 0 if it does not exist)."""
    if not state.exists():
        return 0.0, 0
    record = json.loads(state.read_text())
    frames = int(record["frames_done"])
    return frames * float(record["save_every_ps"]) / 1000.0, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="corpus folder (e.g. corpus/md)")
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    with MANIFEST.open() as handle:
        proteins = list(csv.DictReader(handle))
    header = "| protein | split | class | residues | " + " | ".join(
        f"R{i} ns" for i in range(1, args.replicas + 1)
    )
    print(header + " |")
    print("|---" * (4 + args.replicas) + "|")
    total_ns, total_frames, started = 0.0, 0, 0
    for row in proteins:
        name = row["name"]
        cells = []
        for i in range(1, args.replicas + 1):
            ns, frames = replica_ns(args.out / name / "state" / f"{name}_R{i}.json")
            total_ns, total_frames = total_ns + ns, total_frames + frames
            cells.append(f"{ns:.2f}")
        started += any(float(c) > 0 for c in cells)
        fields = [name, row["split"], row["fold_class"], row["residues"], *cells]
        print("| " + " | ".join(fields) + " |")
    print(
        f"\n{total_ns:.2f} ns, {total_frames} frames, MD started for {started} of "
        f"{len(proteins)} proteins."
    )


if __name__ == "__main__":
    main()
