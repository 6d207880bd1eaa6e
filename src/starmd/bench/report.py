"""What ``starmd bench`` writes: the machine line and every section as a Markdown table."""

from __future__ import annotations

from typing import Any

SECTIONS = ("speed", "memory", "scaling", "quality", "train")
"""The sections of ``starmd bench``, in the order of ``bench.md``."""
STEADY_FROM = 11
"""The steady rate (``steady_frames_per_s``, ``steady_ratio``) counts frames from this one on:
the cache window (7 frames + sink) is full, the compiled loops are loaded."""


def markdown(results: dict[str, Any]) -> str:
    """All sections as Markdown tables, with the machine line first."""
    m = results["machine"]
    lines = [
        "# starmd bench",
        "",
        f"Machine: {m['cpu']} ({m.get('cpu_capability', '?')} kernels), {m['cores']} cores; "
        f"torch {m['torch']}"
        + (f", OpenMM {m['openmm']}" if "openmm" in m else "")
        + f"; device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f"; {results['settings']['threads']} thread(s).",
        f"Model: {results['model']}.",
        "",
    ]
    titles = {
        "speed": "Speed vs MD (same protein, same threads)",
        "memory": "Peak memory vs trajectory length (2 denoising steps per frame, --no-refine)",
        "scaling": "Cost vs protein size (synthetic multi-chain proteins, --no-refine)",
        "quality": "Quality vs denoising steps",
        "train": "Training throughput",
    }
    notes = {
        "speed": "ratio: simulated ns per wall-second (all replicas) over OpenMM's, over the "
        "whole generation loop; steady_ratio and steady_frames_per_s: from frame "
        f"{STEADY_FROM} on (the rate of a long rollout); the model load and the set-up before "
        "the loop are outside both (starmd_first_frame_s: from the process start to the first "
        "generated frame). Each row is the median of `repeats` interleaved runs in fresh "
        "processes; ratio_min and ratio_max: the slowest and fastest of them.",
    }
    for section in SECTIONS:
        if section not in results["sections"]:
            continue
        rows = results["sections"][section]
        lines.append(f"## {titles[section]}")
        lines.append("")
        if section in notes and not isinstance(rows, str):
            lines += [notes[section], ""]
        if isinstance(rows, str):
            lines += [f"Skipped: {rows}", ""]
            continue
        keys = [k for k in rows[0] if k not in ("out_dir",)] if rows else []
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for row in rows:
            lines.append("| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if 1e4 <= abs(value) < 1e9:  # ratios: 12760, not 1.276e+04
            return f"{value:.0f}"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)
