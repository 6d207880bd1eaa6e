"""Training throughput (frames/s and tokens/s per device) of the denoiser configurations.

Runs forward + backward + optimizer step of the full training objective on windows of the bundled
MD (real data format), after warm-up steps, and reports the median step time.

    python benchmarks/train_throughput.py --presets tiny small --window 8 --crop 64 --batch 4
"""

from __future__ import annotations

import argparse
import json

from starmd.train.throughput import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = [
        measure(p, args.window, args.crop, args.batch, args.steps, args.device)
        for p in args.presets
    ]
    print("| preset | parameters | window x residues x batch | s / step | frames/s | tokens/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['parameters']:,} | {r['window']} x {r['residues']} x "
            f"{r['batch']} | {r['step_s']} | {r['frames_per_s']} | {r['tokens_per_s']} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
