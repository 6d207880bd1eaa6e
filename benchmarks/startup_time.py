"""Start-up cost of the command line and the package: wall time of ``starmd --version``,
``starmd --help`` and ``python -c "import starmd"`` (best and median of N runs, fresh processes).

    python benchmarks/startup_time.py --runs 7
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "starmd --version": [shutil.which("starmd") or "starmd", "--version"],
    "starmd --help": [shutil.which("starmd") or "starmd", "--help"],
    "import starmd": [sys.executable, "-c", "import starmd"],
    "import starmd; starmd.generate": [sys.executable, "-c", "import starmd; starmd.generate"],
}


def wall_times(command: list[str], runs: int) -> list[float]:
    """Seconds from start to exit of ``runs`` fresh processes."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("| what | best (s) | median (s) |\n|---|---|---|")
    for label, command in COMMANDS.items():
        times = wall_times(command, args.runs)
        print(f"| `{label}` | {min(times):.3f} | {statistics.median(times):.3f} |")


if __name__ == "__main__":
    main()
