"""One generation run of ``starmd bench`` in a fresh Python process (so that its peak memory
and time to the first frame are its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from starmd.errors import StarmdError


def run_child(payload: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run :func:`child_main` in a fresh Python process; returns its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, "-c", "from starmd.bench.child import child_main; child_main()"],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StarmdError(f"benchmark run failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main() -> None:
    """Child process: one generation run, reporting its sidecar figures and peak memory."""
    import resource

    started = time.perf_counter()  # before torch and starmd's sampling code are imported
    import torch

    from starmd.sample.generate import GenerationSettings, generate

    payload = json.loads(sys.stdin.read())
    torch.set_num_threads(payload["threads"])
    settings = GenerationSettings(**payload["settings"])
    elapsed: dict[int, float] = {}  # frame -> seconds since the rollout started
    first_frame: list[float] = []  # seconds from the start of this process's imports

    def progress(info: dict) -> None:
        elapsed[info["frame"]] = info["elapsed_s"]
        if info["frame"] == 1:
            first_frame.append(time.perf_counter() - started)

    sidecar = generate(
        payload["structure"],
        payload["out_dir"],
        settings,
        model=payload["model"],
        device=payload["device"],
        overwrite=True,
        progress=progress,
    )
    steady_from = payload.get("steady_from")  # time only the frames from this one on
    steady = None
    if steady_from is not None and steady_from - 1 in elapsed and len(elapsed) > steady_from:
        last = max(elapsed)
        steady = (elapsed[last] - elapsed[steady_from - 1]) / (last - steady_from + 1)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    cuda_peak = torch.cuda.max_memory_allocated() if sidecar["device"].startswith("cuda") else None
    health = sidecar["health"]
    refinement = sidecar.get("refinement") or {}
    result = {
        "time_to_model_s": sidecar["time_to_model_s"],
        "rollout_s": sidecar["rollout_s"],
        "frames_per_s": sidecar["frames_per_s"],
        "ns_per_wall_s": sidecar["simulated_ns_per_wall_s"],
        "residues": sidecar["residues"],
        "peak_rss_mb": round(peak_rss / 2**20, 1),
        "cuda_peak_mb": None if cuda_peak is None else round(cuda_peak / 2**20, 1),
        "nan_frames": sum(h["nan_frames"] for h in health),
        "steady_s_per_frame": steady,
        "first_frame_s": round(first_frame[0], 3) if first_frame else None,
        "refine_ms_per_frame": refinement.get("ms_per_frame"),
        "polish_ms_per_frame": refinement.get("polish_ms_per_frame"),
    }
    print(json.dumps(result))
