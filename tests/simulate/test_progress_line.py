"""The corpus build's log line: what a replica reports and what it leaves out."""

from starmd.simulate.progress import progress_line
from starmd.simulate.replica import ReplicaProgress


def _event(done: int, total: int, ns_per_day: float) -> ReplicaProgress:
    return ReplicaProgress(
        name="2wqg",
        replica=1,
        frames_done=done,
        frames_total=total,
        save_every_ps=10.0,
        ns_per_day=ns_per_day,
        done=done >= total,
    )


def test_progress_line_gives_the_eta_from_the_measured_speed():
    line = progress_line(_event(5, 10, 24.0))
    assert line == "2wqg R1: 5/10 frames, 0.050/0.100 ns, 24.0 ns/day, ETA 0.05 h"


def test_progress_line_has_no_nan_eta_before_a_speed_is_measured():
    line = progress_line(_event(0, 10, 0.0))
    assert line is not None and line.endswith("ETA -") and "nan" not in line


def test_a_replica_past_this_builds_target_is_not_logged():
    assert progress_line(_event(60, 10, 40.0)) is None
    assert progress_line(_event(10, 10, 40.0)) is not None
