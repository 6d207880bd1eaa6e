"""The end-of-run summary of ``starmd generate``: what was made, how fast, how healthy, and
what of the input was left out, in a few lines read from the run's sidecar."""

from __future__ import annotations

from starmd.structure.provenance import describe_input
from starmd.units import format_ps

HEALTH_KINDS = (("nan_frames", "NaN"), ("break_frames", "CA-CA break"), ("clash_frames", "clash"))


def run_summary(sidecar: dict, out_dir: str) -> list[str]:
    """Lines summarising a finished run from its sidecar (:func:`starmd.sample.generate.generate`).

    Frames and simulated time per replica, speed (generated frames and simulated ns per
    wall-second of the rollout), health (flagged frames in all and per kind and replica; a
    frame with a break and a clash counts once in all and under each kind), what was stripped
    from the input and the files written.
    """
    name, dt_ps = sidecar["name"], sidecar["dt_ps"]
    written = sidecar["frames_written"]
    n_frames = max(written)
    lines = [
        f"{name}: {len(written)} replica(s) x {n_frames} frames at {format_ps(dt_ps)} "
        f"= {format_ps((n_frames - 1) * dt_ps)} simulated per replica (frame 0 is the input)",
        f"speed: {sidecar['frames_per_s']:.3g} frames/s, "
        f"{sidecar['simulated_ns_per_wall_s']:.3g} simulated ns per wall-second "
        f"(rollout {sidecar['rollout_s']:.1f} s, total {sidecar['wall_s']:.1f} s)",
        health_line(sidecar),
    ]
    validity = validity_line(sidecar)
    if validity:
        lines.append(validity)
    source = sidecar.get("input")
    if source:
        lines.append("input: " + describe_input(source["stripped"], source["alternate_locations"]))
    trajectories = sidecar["files"]["trajectories"]
    files = trajectories[0] if len(trajectories) == 1 else f"{trajectories[0]}..{trajectories[-1]}"
    lines.append(f"wrote {out_dir}/: {sidecar['files']['topology']}, {files}, {name}.json")
    return lines


def health_line(sidecar: dict) -> str:
    """``health: 54 of 297 generated frames flagged (R1: 17 CA-CA break, 49 clash; ...)``, or
    that none was flagged."""
    replicas = len(sidecar["frames_written"])
    generated = sum(max(0, n - 1) for n in sidecar["frames_written"])
    flagged = sidecar["flagged_count"]
    if not flagged:
        return f"health: no flagged frame among {generated} generated (NaN, CA-CA break, clash)"
    per_replica = []
    for r, health in enumerate(sidecar["health"]):
        kinds = [f"{health[key]} {label}" for key, label in HEALTH_KINDS if health[key]]
        if health.get("stopped_at") is not None:
            kinds.append(f"stopped at frame {health['stopped_at']}")
        if kinds:
            prefix = f"R{r + 1}: " if replicas > 1 else ""
            per_replica.append(prefix + ", ".join(kinds))
    # the screen runs on the frames the rollout continues from; the atom polish comes after it
    # and the validity line judges the written frames
    polished = (sidecar.get("refinement") or {}).get("polish_ms_per_frame")
    stage = " before the atom polish" if polished else ""
    return (
        f"health: {flagged} of {generated} generated frames flagged{stage} "
        f"({'; '.join(per_replica)}); listed in {sidecar['name']}.json"
    )


def validity_line(sidecar: dict) -> str | None:
    """``validity: 97% of written frames pass the all-atom check (...)`` from the refinement
    record: the written (polished) frames by the evaluation's headline check, next to the raw
    network output's rollout checks; None without refinement."""
    record = sidecar.get("refinement") or {}
    replicas = record.get("replicas") or []
    frames = sum(r["frames"] for r in replicas)
    if not frames:
        return None

    def pooled(tag: str, key: str) -> float | None:
        values = [(r.get(tag) or {}).get(key) for r in replicas]
        if any(v is None for v in values):
            return None
        return sum(v * r["frames"] for v, r in zip(values, replicas, strict=True)) / frames

    raw_clash = pooled("raw", "aa_clash_pct")
    raw = (
        f"raw network output: {raw_clash:.0f}% with a heavy-atom clash"
        if raw_clash is not None
        else ""
    )
    valid = pooled("written", "valid_pct")
    if valid is None:  # refined, not polished
        clash = pooled("refined", "aa_clash_pct")
        return f"validity: refined frames, {clash:.0f}% with a heavy-atom clash ({raw})"
    return (
        f"validity: {valid:.0f}% of written frames pass the all-atom check (CA+AA, as starmd "
        f"evaluate; {raw})"
    )
